"""Node parameters -> NodeSettings: defaults, validation, generated EngineConfig parameters,
and every shipped config/*.yaml through the same validation the node uses on configure."""

import dataclasses
from pathlib import Path

import pytest

from livevlm_ros.engine import EngineConfig
from livevlm_ros.ros.parameters import (
    DYNAMIC_PARAMETERS,
    NodeSettings,
    QosSettings,
    SettingsError,
    all_parameter_specs,
    base_parameter_specs,
    default_topic,
    engine_parameter_specs,
    parameters_from_yaml,
    settings_from_parameters,
    stream_parameter_specs,
    to_descriptor,
)

CONFIG = Path(__file__).resolve().parents[1] / "config"
YAMLS = sorted(CONFIG.glob("*.yaml"))


def test_defaults_are_valid_and_match_the_dataclass():
    settings = settings_from_parameters({})
    assert settings == dataclasses.replace(NodeSettings(), streams=settings.streams)
    (camera,) = settings.streams
    assert (camera.name, camera.topic, camera.transport) == ("camera", "image", "raw")
    assert camera.qos == QosSettings("best_effort", 5)  # REP-2003 sensor subscriber, sensor-data depth


def test_every_engine_config_field_is_a_parameter_with_its_default():
    specs = {s.name: s for s in engine_parameter_specs()}
    fields = dataclasses.fields(EngineConfig)
    assert set(specs) == {f.name for f in fields}
    for f in fields:
        expected = f.default if f.default is not None else specs[f.name].none_value
        assert specs[f.name].default == expected, f.name
        assert specs[f.name].description.startswith(f"EngineConfig.{f.name}: ")
        assert len(specs[f.name].description) > len(f"EngineConfig.{f.name}: ") + 5  # from the docstring
    assert specs["memory"].choices and specs["retrieval"].choices


def test_engine_values_reach_engine_config_and_sentinels_mean_none():
    s = settings_from_parameters({"clip_frames": 4, "memory": "sliding", "budget_tokens": 300,
                                  "observation_tokens": 0, "system_prompt": "", "saliency_share": 1})
    assert s.engine == EngineConfig(clip_frames=4, memory="sliding", budget_tokens=300, saliency_share=1.0)
    s = settings_from_parameters({"observation_tokens": 5, "system_prompt": "Be brief."})
    assert (s.engine.observation_tokens, s.engine.system_prompt) == (5, "Be brief.")


def test_invalid_engine_config_becomes_a_clear_settings_error():
    with pytest.raises(SettingsError, match="engine configuration: retrieval_ratio must be in"):
        settings_from_parameters({"retrieval_ratio": 0.0})


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as info:
        settings_from_parameters({
            "sample_fps": -1.0, "device": "gpu", "dtype": "int8", "memory": "lru",
            "streams": ["a", "a", "9lives"], "streams.a.transport": "h264", "qos.depth": 0,
            "max_queued_questions": "many",
        })
    text = str(info.value)
    for needle in ("sample_fps must be >= 0", "device must be cpu, cuda or cuda:N", "dtype must be one of",
                   "memory must be one of", "unique", "'9lives'", "streams.a.transport must be one of",
                   "qos.depth must be >= 1", "max_queued_questions must be an integer"):
        assert needle in text, needle
    assert text.count("streams.a.transport") == 1


def test_integer_given_for_a_double_is_accepted_but_not_the_reverse():
    assert settings_from_parameters({"sample_fps": 2}).sample_fps == 2.0
    with pytest.raises(SettingsError, match="frame_queue_depth must be an integer"):
        settings_from_parameters({"frame_queue_depth": 2.0})


def test_streams_topics_transport_and_qos_override():
    s = settings_from_parameters({
        "streams": ["front", "rear"], "qos.reliability": "reliable", "qos.depth": 2,
        "streams.front.topic": "/cam/front/image_raw",
        "streams.rear.transport": "compressed", "streams.rear.qos.reliability": "best_effort",
    })
    front, rear = s.streams
    assert (front.topic, front.transport, front.qos) == ("/cam/front/image_raw", "raw", QosSettings("reliable", 2))
    assert (rear.topic, rear.transport, rear.qos) == ("rear/compressed_image", "compressed",
                                                      QosSettings("best_effort", 2))
    assert s.stream_names == ["front", "rear"] and s.stream("rear") is rear


def test_default_topics():
    assert default_topic("camera", "raw", first=True) == "image"
    assert default_topic("camera", "compressed", first=True) == "compressed_image"
    assert default_topic("rear", "raw", first=False) == "rear/image"


def test_empty_stream_list_and_empty_model_are_refused():
    with pytest.raises(SettingsError, match="at least one"):
        settings_from_parameters({"streams": []})
    with pytest.raises(SettingsError, match="model must not be empty"):
        settings_from_parameters({"model": " "})


def test_strict_mode_reports_unknown_names_but_not_ros_builtins():
    values = {"use_sim_time": True, "qos_overrides./image.subscription.depth": 3, "sampel_fps": 3.0}
    settings_from_parameters(values)  # the node ignores undeclared overrides
    with pytest.raises(SettingsError, match="unknown parameter 'sampel_fps'"):
        settings_from_parameters(values, strict=True)


def test_parameter_names_are_unique_and_descriptors_carry_ranges():
    specs = all_parameter_specs(["front", "rear"])
    assert len({s.name for s in specs}) == len(specs)
    by_name = {s.name: s for s in specs}
    fps = to_descriptor(by_name["sample_fps"])
    assert not fps.read_only and fps.floating_point_range[0].to_value == pytest.approx(240.0)
    assert fps.dynamic_typing  # a YAML "2" for 2.0 must not crash the node
    depth = to_descriptor(by_name["qos.depth"])
    assert depth.read_only and depth.integer_range[0].from_value == 1
    assert "one of: raw, compressed" in to_descriptor(by_name["streams.rear.transport"]).additional_constraints
    for spec in specs:
        assert spec.description, spec.name
    assert DYNAMIC_PARAMETERS == {"sample_fps", "stamp_jitter_tolerance_s", "timestamp_jump_policy",
                                  "ask_timeout_s", "max_queued_questions", "stale_frame_warn_s", "drop_warn_ratio"}
    assert {s.name for s in base_parameter_specs() if s.read_only} >= {"model", "device", "dtype", "streams"}
    assert [s.name for s in stream_parameter_specs("x")] == [
        "streams.x.topic", "streams.x.transport", "streams.x.qos.reliability", "streams.x.qos.depth"]


def test_parameters_from_yaml_sections(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    sample_fps: 1.0\n    qos: {depth: 3}\n"
        "other_node:\n  ros__parameters:\n    sample_fps: 9.0\n"
        "/robot/livevlm:\n  ros__parameters:\n    sample_fps: 5.0\n    streams.camera.topic: /x\n")
    assert parameters_from_yaml(path) == {"sample_fps": 5.0, "qos.depth": 3, "streams.camera.topic": "/x"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("livevlm:\n  sample_fps: 1.0\n")
    with pytest.raises(SettingsError, match="ros__parameters"):
        parameters_from_yaml(bad)


def test_shipped_configs_exist():
    names = {p.name for p in YAMLS}
    assert {"livevlm.yaml", "livevlm_7b.yaml", "livevlm_smolvlm2.yaml", "livevlm_tiny_cpu.yaml"} <= names


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_shipped_config_is_valid(path):
    settings = settings_from_parameters(parameters_from_yaml(path), strict=True)
    assert settings.streams


def test_default_config_lists_every_parameter_with_the_node_default():
    values = parameters_from_yaml(CONFIG / "livevlm.yaml")
    specs = all_parameter_specs(values["streams"])
    missing = [s.name for s in specs if s.name not in values and ".qos." not in s.name]
    assert missing == []
    for spec in specs:
        if spec.name in values:
            assert values[spec.name] == spec.default, spec.name


def test_tiny_cpu_config_is_the_test_model_on_cpu():
    s = settings_from_parameters(parameters_from_yaml(CONFIG / "livevlm_tiny_cpu.yaml"))
    assert (s.model, s.device, s.dtype) == ("tiny-llava-onevision", "cpu", "float32")
