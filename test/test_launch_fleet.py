"""One GPU box, several robots (docs/INSTALL.md), on loopback under launch_pytest: the edge node
from launch/livevlm.launch.py with config/livevlm_fleet.yaml (a stream per robot, compressed
transport, reliable QoS; the model swapped for the tiny CPU one), in namespace ``edge`` with
``autostart:=false``, and two robots, each its own process in its own namespace
(test/fleet_robot.py), publishing JPEG frames and asking the one node about their own stream.

* ``autostart:=false`` leaves the node *unconfigured* until a lifecycle service call brings it up;
* each robot's answer comes from its own stream: the robots' header stamps are 1000 s apart, and
  each checks that its answer's span lies within its own frames;
* Ctrl-C in a terminal sends SIGINT to the node twice (terminal, then ``ros2 launch``): exit 0.

One node start for the module; a failed start fails within 60 s with the node's output.
"""

import os
from pathlib import Path
import signal
import sys
import time

import pytest
import yaml

from launch_helpers import change_state, include_livevlm_launch, lifecycle_state, require_launch_stack

require_launch_stack()

import launch_pytest  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import ExecuteProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EDGE = "/edge/livevlm"
ROBOTS = {"robot1": 0.0, "robot2": -1000.0}  # name -> header stamp offset (s)
#: The shipped fleet config with the model swapped for the tiny CPU one (and a small memory).
TINY = {"model": "tiny-llava-onevision", "device": "cpu", "dtype": "float32", "clip_frames": 2,
        "budget_tokens": 256, "max_new_tokens": 8, "status_period_s": 0.5}


@pytest.fixture(scope="module")
def fleet_params(tmp_path_factory):
    document = yaml.safe_load((ROOT / "config" / "livevlm_fleet.yaml").read_text())
    document["/**"]["ros__parameters"].update(TINY)
    path = tmp_path_factory.mktemp("fleet") / "livevlm_fleet_tiny.yaml"
    path.write_text(yaml.safe_dump(document))
    return document["/**"]["ros__parameters"], path


@launch_pytest.fixture(scope="module")
def launch_description(launch_watch, fleet_params):
    _, params_file = fleet_params
    edge = include_livevlm_launch(params_file=str(params_file), namespace="edge", autostart="false")
    robots = [
        ExecuteProcess(cmd=[sys.executable, str(ROOT / "test" / "fleet_robot.py"), "--stream", name,
                            "--edge-node", EDGE, "--stamp-offset", str(offset), "--timeout", "60",
                            "--ros-args", "-r", f"__ns:=/{name}"],
                       name=name, output="screen", additional_env={"PYTHONUNBUFFERED": "1"})
        for name, offset in ROBOTS.items()
    ]
    return LaunchDescription([launch_pytest.actions.ReadyToTest(), *launch_watch.actions(), edge, *robots])


@pytest.mark.launch(fixture=launch_description)
def test_autostart_false_waits_unconfigured_until_a_lifecycle_call_brings_it_up(launch_client, launch_watch):
    from lifecycle_msgs.msg import Transition

    from livevlm_interfaces.srv import Ask

    state = launch_watch.wait_for(lambda: lifecycle_state(launch_client, EDGE), f"{EDGE}'s lifecycle services",
                           may_exit=tuple(ROBOTS))
    assert state == "unconfigured"
    time.sleep(1.0)
    assert lifecycle_state(launch_client, EDGE) == "unconfigured"  # it waits for a lifecycle manager
    assert not launch_client.client(Ask, f"{EDGE}/ask").service_is_ready()
    assert change_state(launch_client, EDGE, Transition.TRANSITION_CONFIGURE)
    assert lifecycle_state(launch_client, EDGE) == "inactive"
    assert change_state(launch_client, EDGE, Transition.TRANSITION_ACTIVATE)
    assert lifecycle_state(launch_client, EDGE) == "active"


@pytest.mark.launch(fixture=launch_description)
def test_two_robots_each_get_an_answer_from_their_own_stream(launch_watch, fleet_params):
    import json

    params, _ = fleet_params
    assert params["qos"]["reliability"] == "reliable"
    assert all(params[f"streams.{name}.transport"] == "compressed" for name in ROBOTS)

    def robots_done():
        return all(launch_watch.exit_code(name) is not None for name in ROBOTS)

    launch_watch.wait_for(robots_done, "both robots to ask and get their answers", timeout=60.0,
                          may_exit=tuple(ROBOTS))
    results = {}
    for name in ROBOTS:
        lines = [line for line in launch_watch.output(name).splitlines() if line.startswith("RESULT ")]
        assert lines, launch_watch.output(name)
        results[name] = json.loads(lines[-1][len("RESULT "):])
        assert launch_watch.exit_code(name) == 0, launch_watch.output()
        assert results[name]["success"] and results[name]["own_stream"], results[name]
    spans = sorted(r["span"] for r in results.values())
    assert spans[0][1] < spans[1][0]  # disjoint: two memories, one per robot


@pytest.mark.launch(fixture=launch_description)
def test_ctrl_c_twice_ends_the_node_with_exit_code_0(launch_watch):
    (name,) = launch_watch.process_names("livevlm_node")
    pid = launch_watch.pids[name]
    os.kill(pid, signal.SIGINT)  # from the terminal ...
    time.sleep(0.05)
    os.kill(pid, signal.SIGINT)  # ... and forwarded by ros2 launch
    launch_watch.wait_for(lambda: launch_watch.exit_code("livevlm_node") is not None, "the node to exit",
                          timeout=30.0, may_exit=(*ROBOTS, "livevlm_node"))
    assert launch_watch.exit_code("livevlm_node") == 0, launch_watch.output("livevlm_node")
