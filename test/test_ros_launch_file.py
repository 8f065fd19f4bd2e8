"""launch/livevlm.launch.py wiring, checked without launch/launch_ros (not on PyPI): the file is
run against small stand-ins of the launch classes that record their arguments. The real launch
run is test_launch.py (launch_pytest, in a ROS 2 install)."""

import importlib.util
import os
from pathlib import Path
import sys
import types

import pytest

from livevlm_ros.ros.parameters import parameters_from_yaml, settings_from_parameters

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "livevlm.launch.py"


class Recorded:
    """Stand-in for a launch entity: remembers its positional and keyword arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(Recorded):
    def __repr__(self):
        return f"LC({self.args[0]})"


@pytest.fixture
def launch_module(monkeypatch):
    stubs = {
        "launch": {"LaunchDescription": type("LaunchDescription", (Recorded,), {})},
        "launch.actions": {name: type(name, (Recorded,), {}) for name in
                           ("DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable")},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"LifecycleNode": type("LifecycleNode", (Recorded,), {})},
        "launch_ros.parameter_descriptions": {"ParameterValue": type("ParameterValue", (Recorded,), {})},
    }
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("livevlm_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_arguments_node_and_remaps(launch_module):
    ld = launch_module.generate_launch_description()
    entities = ld.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert set(declared) >= {"params_file", "namespace", "image", "compressed_image", "use_sim_time", "log_level"}
    for name, kwargs in declared.items():
        assert kwargs.get("description"), name
    assert declared["use_sim_time"]["default_value"] == "false"

    (node,) = [e for e in entities if type(e).__name__ == "LifecycleNode"]
    assert node.kwargs["package"] == "livevlm_ros" and node.kwargs["executable"] == "livevlm_node"
    remaps = {src: repr(dst) for src, dst in node.kwargs["remappings"]}
    assert remaps == {"image": "LC(image)", "compressed_image": "LC(compressed_image)"}
    params_file, overrides = node.kwargs["parameters"]
    assert repr(params_file) == "LC(params_file)"
    assert set(overrides) == {"use_sim_time", "autostart"}
    assert overrides["use_sim_time"].kwargs["value_type"] is bool
    assert "--log-level" in node.kwargs["ros_arguments"]


def test_default_params_file_is_a_valid_config(launch_module):
    ld = launch_module.generate_launch_description()
    (params,) = [e for e in ld.args[0] if e.args[:1] == ("params_file",)]
    path = Path(params.kwargs["default_value"])
    assert path.name == "livevlm.yaml" and path.is_file()
    settings_from_parameters(parameters_from_yaml(path), strict=True)


def test_fastdds_profile_is_set_unless_the_user_set_one(launch_module, monkeypatch):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    (action,) = launch_module._fastdds_profile(None)
    name, value = action.args
    assert name == "FASTDDS_DEFAULT_PROFILES_FILE" and Path(value).name == "fastdds_large_images.xml"
    assert Path(value).is_file()
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/mine.xml")
    assert launch_module._fastdds_profile(None) == []
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == "/mine.xml"
