"""Starts that fail, and the ROS 2 command line on the pip venv (an ament prefix, see
scripts/ament_prefix.py):

* a launch test whose node fails to start fails within 60 s with the node's own error (and one
  whose launch file raises, with launch's error), instead of hanging until pytest's timeout;
* ``ros2 launch ... params_file:=/no/such.yaml`` fails at once, saying so, and starts nothing;
* ``ros2 pkg prefix`` / ``ros2 pkg executables`` / ``ros2 run livevlm_ros livevlm_node`` work.

Needs the ROS 2 launch stack: see launch_helpers.py.
"""

import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time

import pytest

from launch_helpers import START_TIMEOUT_S, include_livevlm_launch, lifecycle_state, require_launch_stack

require_launch_stack()

import launch_pytest  # noqa: E402
from launch import LaunchDescription  # noqa: E402

ROS2 = str(Path(sys.executable).parent / "ros2")
NODE = "/launch_fail/livevlm"
#: A parameter file with a misspelled name: the node fails configure and exits 1.
MISSPELLED = ("/**:\n  ros__parameters:\n    model: tiny-llava-onevision\n    device: cpu\n    dtype: float32\n"
              "    sample_fsp: 2.0\n")


def share(*parts):
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("livevlm_ros"), *parts)


def ros2(*args, timeout=60.0):
    return subprocess.run([ROS2, *args], capture_output=True, text=True, timeout=timeout)


@launch_pytest.fixture
def failing_launch(launch_watch, tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(MISSPELLED)
    launch_watch.reset()  # a fresh record per launch (the fixture is function-scoped)
    include = include_livevlm_launch(params_file=str(params_file), namespace="launch_fail")
    return LaunchDescription([launch_pytest.actions.ReadyToTest(), *launch_watch.actions(), include])


@pytest.mark.launch(fixture=failing_launch)
def test_a_failed_start_fails_the_test_within_60_s_with_the_nodes_error(launch_watch, launch_service, ros_client):
    launch_watch.launch_service = launch_service
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failure:
        launch_watch.wait_for(lambda: lifecycle_state(ros_client, NODE) == "active", f"{NODE} to become active")
    elapsed = time.monotonic() - t0
    assert elapsed < START_TIMEOUT_S, f"took {elapsed:.1f} s"
    message = str(failure.value)
    assert re.search(r"livevlm_node-\d+ with exit code 1", message), message
    assert "unknown parameter 'sample_fsp' (did you mean 'sample_fps'?)" in message, message  # the node's own error


def test_a_launch_that_raises_is_reported_by_the_watch(launch_watch, tmp_path):
    """A launch file that raises ends the launch (rc 1) before any process: LaunchWatch says so
    (this is what made the old test wait for a ReadyToTest that never came)."""
    from launch import LaunchService

    launch_watch.reset()
    service = LaunchService()
    service.include_launch_description(LaunchDescription([
        *launch_watch.actions(), include_livevlm_launch(params_file=str(tmp_path / "missing.yaml"))]))
    assert service.run() == 1
    problem = launch_watch.problem()
    assert problem.startswith("the launch failed") and "missing.yaml: no such file" in problem, problem
    assert launch_watch.process_names() == []


def test_ros2_launch_with_a_missing_params_file_fails_at_once_and_starts_nothing():
    t0 = time.monotonic()
    run = ros2("launch", "livevlm_ros", "livevlm.launch.py", "params_file:=/no/such.yaml", timeout=30.0)
    elapsed = time.monotonic() - t0
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "params_file:=/no/such.yaml: no such file" in out and "livevlm_tiny_cpu.yaml" in out, out
    assert "process started" not in out  # the node was never started with the defaults
    assert elapsed < 20.0


def test_ros2_pkg_finds_the_package_and_its_executables_in_the_venv():
    prefix = ros2("pkg", "prefix", "livevlm_ros")
    assert prefix.returncode == 0, prefix.stderr
    assert Path(prefix.stdout.strip()).resolve() == Path(os.environ["AMENT_PREFIX_PATH"].split(":")[0]).resolve()
    executables = ros2("pkg", "executables", "livevlm_ros")
    assert executables.returncode == 0, executables.stderr
    found = {line.split()[1] for line in executables.stdout.splitlines()}
    assert found >= {"livevlm_node", "livevlm_ask", "livevlm_replay", "livevlm_offline", "livevlm_demo",
                     "livevlm_bench"}
    assert share("launch").is_dir() and not share("launch").is_symlink()  # ros2launch's os.walk enters it


def test_ros2_run_starts_the_node_and_ctrl_c_stops_it_with_exit_code_0(tmp_path):
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [ROS2, "run", "livevlm_ros", "livevlm_node", "--ros-args", "--params-file",
             str(share("config", "livevlm_tiny_cpu.yaml")), "-r", "__ns:=/ros2_run"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while "active: subscribed to /ros2_run/image" not in log.read_text(errors="replace"):
                assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            # Ctrl-C in the terminal: ros2 run waits while the node (same process group) stops
            os.killpg(proc.pid, signal.SIGINT)
            try:
                code = proc.wait(30.0)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGUSR1)  # the node dumps its threads' stacks (faulthandler)
                time.sleep(2.0)
                pytest.fail(f"still running 30 s after Ctrl-C; log with the node's thread stacks:\n{log.read_text()}")
            assert code == 0, log.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
