"""launch/livevlm.launch.py under launch_pytest: the node starts from the launch file with the
tiny CPU config, and answers a question about frames published to the remapped topic.

launch, launch_ros and launch_pytest are not on PyPI: this module runs in a ROS 2 install
(colcon workspace, ``colcon test``) and skips elsewhere. test_ros_launch_file.py checks the
launch file's wiring without them. (launch_pytest breaks on pytest >= 8.4, ros2/launch#947.)
"""

from pathlib import Path
import time

import pytest

launch_pytest = pytest.importorskip("launch_pytest", reason="launch_pytest is not on PyPI; runs in a ROS 2 install")

from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from ros_helpers import CameraPublisher, RosClient, require_ros  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "/launch_test/camera/image_raw"


@launch_pytest.fixture
def launch_description():
    require_ros()
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(ROOT / "launch" / "livevlm.launch.py")),
        launch_arguments={
            "params_file": str(ROOT / "config" / "livevlm_tiny_cpu.yaml"),
            "namespace": "launch_test",
            "image": TOPIC,
            "log_level": "info",
        }.items(),
    )
    return LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=launch_description)
def test_launched_node_answers():
    from livevlm_interfaces.srv import Ask

    from livevlm_ros.io.synthetic_scene import SyntheticScene

    client = RosClient("livevlm_launch_test_client")
    try:
        scene = SyntheticScene(width=320, height=240)
        camera = CameraPublisher(client, TOPIC, "raw", lambda t: scene.render(t % 20.0), 10.0)
        camera.wait_for_subscriber(90.0).start()
        deadline = time.monotonic() + 60.0
        while True:
            r = client.call(Ask, "/launch_test/livevlm/ask", Ask.Request(question="What is there?"), 60.0)
            if r.success or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        camera.stop()
        assert r.success, r.error
        assert isinstance(r.answer, str) and r.frames_seen > 0
    finally:
        client.close()
