"""launch/livevlm.launch.py under launch_pytest (in the style of ros2/demos lifecycle_py's
test_lifecycle.py and the launch_pytest examples), one launch for the module:

* the launch file, found through the package's share directory, brings the node to *active*
  with the tiny CPU config, a namespace and an image remap;
* a question over the Ask action gets an answer, with one feedback message per token;
* stopping the launch (SIGINT to the node, as ``ros2 launch`` does) ends the node with exit code 0.

A failed start fails within ``START_TIMEOUT_S`` (60 s) with the node's own output
(:class:`launch_helpers.LaunchWatch`); test_launch_failures.py checks that it does.
Needs the ROS 2 launch stack: see launch_helpers.py for where it comes from.
"""

import time

import pytest

from launch_helpers import include_livevlm_launch, lifecycle_state, require_launch_stack
from ros_helpers import CameraPublisher

require_launch_stack()

import launch_pytest  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402

NAMESPACE = "launch_test"
NODE = f"/{NAMESPACE}/livevlm"
TOPIC = f"/{NAMESPACE}/camera/image_raw"
MEASURED = {}


@launch_pytest.fixture(scope="module")
def launch_description(launch_watch):
    include = include_livevlm_launch(
        params_file=PathJoinSubstitution([FindPackageShare("livevlm_ros"), "config", "livevlm_tiny_cpu.yaml"]),
        namespace=NAMESPACE, image=TOPIC, log_level="info")
    # ReadyToTest first: the tests start at once and LaunchWatch reports a launch that failed
    # (a ReadyToTest after a failing include would never be reached, and the test would hang).
    return LaunchDescription([launch_pytest.actions.ReadyToTest(), *launch_watch.actions(), include])


@pytest.mark.launch(fixture=launch_description)
def test_the_launch_file_brings_the_node_to_active_with_namespace_and_remap(launch_client, launch_watch):
    from livevlm_interfaces.msg import MemoryStatus

    t0 = time.monotonic()
    launch_watch.wait_for(lambda: lifecycle_state(launch_client, NODE) == "active", f"{NODE} to become active")
    MEASURED["launch_to_active_s"] = time.monotonic() - t0
    status = launch_client.subscribe(MemoryStatus, f"{NODE}/memory_status")
    msg = launch_watch.wait_for(lambda: status[-1] if status else None, "a MemoryStatus message", timeout=10.0)
    assert [s.topic for s in msg.streams] == [TOPIC]  # image:=TOPIC remapped the default stream
    assert msg.model == "tiny-llava-onevision" and msg.model_is_random_weights
    assert "livevlm_node" in " ".join(launch_watch.process_names())


@pytest.mark.launch(fixture=launch_description)
def test_a_question_over_the_ask_action_gets_an_answer(launch_client, launch_watch):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient

    from livevlm_interfaces.action import Ask
    from livevlm_interfaces.msg import MemoryStatus
    from livevlm_ros.io.synthetic_scene import SyntheticScene

    scene = SyntheticScene(width=320, height=240, fps=10.0, duration_s=20.0)
    camera = CameraPublisher(launch_client, TOPIC, "raw", lambda t: scene.render(t % 20.0), 10.0)
    status = launch_client.subscribe(MemoryStatus, f"{NODE}/memory_status")
    action = ActionClient(launch_client.node, Ask, f"{NODE}/ask_streaming")
    launch_watch.wait_for(lambda: camera.publisher.get_subscription_count() > 0, "the node's image subscription",
                          20.0)
    camera.start()
    feedback = []
    try:
        launch_watch.wait_for(lambda: status and status[-1].streams[0].frames_ingested >= 4, "4 ingested frames",
                              30.0)
        launch_watch.wait_for(action.server_is_ready, "the Ask action server", 10.0)
        sent = action.send_goal_async(Ask.Goal(question="What is in view?", max_new_tokens=12),
                                      feedback_callback=lambda m: feedback.append(m.feedback))
        handle = launch_watch.wait_for(lambda: sent.done() and sent.result(), "the goal to be accepted", 10.0)
        assert handle.accepted
        done = handle.get_result_async()
        res = launch_watch.wait_for(lambda: done.done() and done.result(), "the answer", 30.0)
    finally:
        camera.stop()
    assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.error
    answer = res.result
    assert answer.success and answer.error == ""
    assert answer.frames_seen >= 4 and answer.memory_tokens > 0 and answer.total_latency_s > 0
    # one feedback per generated token, ending with the whole answer
    launch_watch.wait_for(lambda: feedback and feedback[-1].partial_answer == answer.answer, "the last feedback", 5.0)
    assert [f.tokens_generated for f in feedback] == list(range(1, len(feedback) + 1))
    assert "".join(f.new_text for f in feedback) == answer.answer


@pytest.mark.launch(fixture=launch_description, shutdown=True)
def test_stopping_the_launch_ends_the_node_with_exit_code_0(launch_watch):
    assert launch_watch.exit_code("livevlm_node") == 0, launch_watch.output()
    assert "Traceback" not in launch_watch.output()
    print(f"\nmeasured: {MEASURED}")
