"""The colcon path of docs/INSTALL.md, built for real: a workspace with this checkout in src/
(and the livevlm_interfaces link next to it), ``python -m colcon build`` against the venv's
ROS 2 wheels, ``source install/local_setup.bash``; then ``ros2 launch livevlm_ros
livevlm.launch.py`` runs the node from install/ to *active*, and Ctrl-C ends it with exit 0.

Needs colcon (``pip install --no-deps -r requirements-colcon.txt``; .ci/run does it) and the
ROS 2 launch stack; skips without them. The build takes about 1.5 min on 2 cores.
"""

import importlib.util
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from launch_helpers import START_TIMEOUT_S, require_launch_stack

require_launch_stack()
# A mark, not a skip raised at import: launch_testing's pytest plugin imports every test module
# while pytest builds the directory's collectors, and a Skipped raised there skips them all.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("colcon_core") is None,
                                reason="colcon is not installed: pip install --no-deps -r requirements-colcon.txt "
                                "(.ci/run does)")

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def in_workspace(workspace: Path, command: str) -> list:
    """``bash -c`` running ``command`` with the workspace's install/ sourced over the venv."""
    return ["bash", "-c", f"source {workspace}/install/local_setup.bash && {command}"]


@pytest.fixture(scope="module")
def env():
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "COLCON_PYTHON_EXECUTABLE": sys.executable,
            "CMAKE_PREFIX_PATH": os.environ["AMENT_PREFIX_PATH"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, env):
    ws = tmp_path_factory.mktemp("colcon_ws")
    (ws / "src").mkdir()
    (ws / "src" / "livevlm_ros").symlink_to(ROOT)
    (ws / "src" / "livevlm_interfaces").symlink_to(Path("livevlm_ros") / "livevlm_interfaces")  # as INSTALL.md
    build = subprocess.run([sys.executable, "-m", "colcon", "build", "--cmake-args", "-DBUILD_TESTING=OFF"],
                           cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert "2 packages finished" in build.stdout, build.stdout
    return ws


def test_colcon_install_holds_both_packages_where_ros2_looks(workspace, env):
    prefix = subprocess.run(in_workspace(workspace, "ros2 pkg prefix livevlm_ros"), env=env, capture_output=True,
                            text=True, timeout=60)
    assert prefix.stdout.strip() == str(workspace / "install" / "livevlm_ros"), prefix.stderr
    lib = workspace / "install" / "livevlm_ros" / "lib" / "livevlm_ros"
    assert {p.name for p in lib.iterdir()} >= {"livevlm_node", "livevlm_ask", "livevlm_replay"}
    assert (workspace / "install" / "livevlm_ros" / "share" / "livevlm_ros" / "launch" / "livevlm.launch.py").is_file()
    where = "python -c 'import livevlm_interfaces; print(livevlm_interfaces.__file__)'"
    which = subprocess.run(in_workspace(workspace, where), env=env, capture_output=True, text=True, timeout=60)
    assert which.stdout.startswith(str(workspace / "install" / "livevlm_interfaces")), which.stdout + which.stderr


def test_ros2_launch_from_the_colcon_install_reaches_active_and_ctrl_c_exits_0(workspace, env, tmp_path):
    config = workspace / "install" / "livevlm_ros" / "share" / "livevlm_ros" / "config" / "livevlm_tiny_cpu.yaml"
    log = tmp_path / "launch.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            in_workspace(workspace, f"exec ros2 launch livevlm_ros livevlm.launch.py params_file:={config} "
                                    "namespace:=colcon image:=/colcon/camera/image_raw"),
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while "active: subscribed to /colcon/camera/image_raw" not in log.read_text(errors="replace"):
                assert proc.poll() is None, f"ros2 launch exited with {proc.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"not active after {START_TIMEOUT_S:g} s:\n{log.read_text()}"
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
            assert proc.wait(30.0) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    assert "process has finished cleanly" in text and "exit code" not in text, text
