"""Every parameter of the livevlm node, and their validation into a :class:`NodeSettings`.

One table of :class:`ParamSpec` describes each parameter (type, default, unit, range, allowed
values, whether it may change at runtime). The node declares parameters from it (with
``rcl_interfaces/ParameterDescriptor``\\ s) and hands the values back to
:func:`settings_from_parameters`, the single validation path, which the unit tests and the
YAML checks call directly without a ROS graph. The ``EngineConfig`` fields are generated from
the dataclass (type, default and the description from its docstring) and validated by
constructing an ``EngineConfig``.

Parameter names (node ``livevlm``)::

    model, device, dtype, autostart                       read-only
    sample_fps, stamp_jitter_tolerance_s, timestamp_jump_policy, max_pixels, frame_queue_depth
    ask_timeout_s, max_queued_questions, status_period_s, stale_frame_warn_s, drop_warn_ratio
    memory_dir, checkpoint_period_s                       persistent memory (read-only)
    max_watches, evidence_frames, max_evidence_images, thumbnail_ring_bytes, memory_view
    qos.reliability, qos.depth                            image subscription QoS, all streams
    streams                                               names of the camera streams
    streams.<name>.topic / .transport / .qos.reliability / .qos.depth
    clip_frames, memory, retrieval, budget_tokens, ...    one per EngineConfig field

This module imports neither rclpy nor torch at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from livevlm_ros.engine.config import FIELD_CHOICES, EngineConfig, field_descriptions
from livevlm_ros.engine.errors import ConfigError
from livevlm_ros.io.frame_sampler import DEFAULT_TOLERANCE_S
from livevlm_ros.io.image_codec import DEFAULT_MAX_PIXELS

__all__ = [
    "NODE_NAME",
    "DEFAULT_MODEL",
    "TRANSPORTS",
    "RELIABILITIES",
    "ParamSpec",
    "QosSettings",
    "StreamSettings",
    "NodeSettings",
    "SettingsError",
    "base_parameter_specs",
    "stream_parameter_specs",
    "engine_parameter_specs",
    "all_parameter_specs",
    "settings_from_parameters",
    "default_topic",
    "parameters_from_yaml",
    "to_descriptor",
    "DYNAMIC_PARAMETERS",
]

NODE_NAME = "livevlm"
DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
DEVICE_PATTERN = re.compile(r"^(cpu|cuda|cuda:\d+)$")
STREAM_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DTYPES = ("float32", "float16", "bfloat16")
TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable", "best_available")
JUMP_POLICIES = ("reset", "reject")
#: Parameters set by rclpy itself or by ROS tooling: never "unknown".
ROS_BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")

_STRING, _INTEGER, _DOUBLE, _BOOL, _STRING_ARRAY = "string", "integer", "double", "bool", "string_array"
_NONE = object()  # "no sentinel": the parameter is not an Optional engine field


class SettingsError(ValueError):
    """One or more parameters are invalid; the message lists every problem, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid parameters:\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        name: full parameter name (dots for nesting).
        kind: ``string``, ``integer``, ``double``, ``bool`` or ``string_array``.
        default: value when not set.
        description: what it does, with its unit.
        read_only: True where a change at runtime makes no sense (set at startup only).
        minimum / maximum: inclusive numeric range (None: unbounded on that side).
        choices: allowed string values (empty: any).
        none_value: for an ``Optional`` EngineConfig field, the value that means ``None``.
    """

    name: str
    kind: str
    default: Any
    description: str
    read_only: bool = True
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Tuple[str, ...] = ()
    none_value: Any = _NONE

    @property
    def constraints(self) -> str:
        """Human-readable constraints (``ParameterDescriptor.additional_constraints``)."""
        parts = []
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.minimum is not None or self.maximum is not None:
            lo = "-inf" if self.minimum is None else f"{self.minimum:g}"
            hi = "inf" if self.maximum is None else f"{self.maximum:g}"
            parts.append(f"range [{lo}, {hi}]")
        if self.none_value is not _NONE:
            parts.append(f"{self.none_value!r} means unset (None)")
        return "; ".join(parts)


@dataclass(frozen=True)
class QosSettings:
    """QoS of one image subscription (keep-last history, volatile durability).

    Attributes:
        reliability: ``best_effort`` (REP-2003 sensor subscriber; matches reliable and
            best-effort publishers), ``reliable`` or ``best_available`` (matches the publisher).
        depth: history depth of the subscription (messages). 5 as ``qos_profile_sensor_data``:
            the callback drains it at once (a skipped frame costs reading its stamp), so it adds no
            staleness; with depth 1 a multi-threaded executor loses frames before they are sampled.
            Freshness comes from the latest-wins slot after sampling (``frame_queue_depth``).
    """

    reliability: str = "best_effort"
    depth: int = 5


@dataclass(frozen=True)
class StreamSettings:
    """One camera stream: a topic, its transport and QoS; one LiveVLMStream in the engine."""

    name: str
    topic: str
    transport: str
    qos: QosSettings


@dataclass(frozen=True)
class NodeSettings:
    """Validated settings of the node (see the module docstring and each ParamSpec for units)."""

    model: str = DEFAULT_MODEL
    device: str = "cuda"
    dtype: str = "float16"
    autostart: bool = True
    sample_fps: float = 2.0
    stamp_jitter_tolerance_s: float = DEFAULT_TOLERANCE_S
    timestamp_jump_policy: str = "reset"
    max_pixels: int = DEFAULT_MAX_PIXELS
    frame_queue_depth: int = 1
    ask_timeout_s: float = 30.0
    max_queued_questions: int = 8
    status_period_s: float = 1.0
    stale_frame_warn_s: float = 5.0
    drop_warn_ratio: float = 0.5
    memory_dir: str = ""
    checkpoint_period_s: float = 60.0
    max_watches: int = 8
    evidence_frames: int = 4
    max_evidence_images: int = 4
    thumbnail_ring_bytes: int = 2_000_000
    memory_view: bool = True
    streams: Tuple[StreamSettings, ...] = ()
    engine: EngineConfig = field(default_factory=EngineConfig)

    def stream(self, name: str) -> StreamSettings:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def stream_names(self) -> List[str]:
        return [s.name for s in self.streams]


_DEFAULTS = NodeSettings()


def base_parameter_specs() -> List[ParamSpec]:
    """The node's own parameters (everything except per-stream and EngineConfig ones)."""
    d = _DEFAULTS
    return [
        ParamSpec("model", _STRING, d.model,
                  "Video LLM to load: a Hugging Face hub id (e.g. llava-hf/llava-onevision-qwen2-0.5b-ov-hf, "
                  "HuggingFaceTB/SmolVLM2-256M-Video-Instruct), a local checkpoint directory, or a built-in "
                  "test model (tiny-llava-onevision, tiny-smolvlm: random weights, answers are noise)"),
        ParamSpec("device", _STRING, d.device, "Torch device for the model: cpu, cuda or cuda:N"),
        ParamSpec("dtype", _STRING, d.dtype, "Model weights/activations dtype (float16/bfloat16 on GPU, "
                  "float32 on CPU)", choices=DTYPES),
        ParamSpec("autostart", _BOOL, d.autostart,
                  "Configure and activate right after start (no lifecycle manager needed); a failed "
                  "configure then exits the process with a non-zero status"),
        ParamSpec("sample_fps", _DOUBLE, d.sample_fps,
                  "Frames per second of header-stamp time kept from each camera, one per 1/sample_fps slot "
                  "(the sampler of livevlm_offline --fps too); 0: every frame",
                  read_only=False, minimum=0.0, maximum=240.0),
        ParamSpec("stamp_jitter_tolerance_s", _DOUBLE, d.stamp_jitter_tolerance_s,
                  "Seconds of header-stamp jitter tolerated by the sampler (capped at half the interval); "
                  "a stamp going back by less is skipped, not a timeline jump",
                  read_only=False, minimum=0.0, maximum=1.0),
        ParamSpec("timestamp_jump_policy", _STRING, d.timestamp_jump_policy,
                  "When header stamps go backwards (looping bag, driver restart): reset = clear that "
                  "stream's memory and start again; reject = drop such frames until stamps pass the last kept one",
                  read_only=False, choices=JUMP_POLICIES),
        ParamSpec("max_pixels", _INTEGER, d.max_pixels,
                  "Largest accepted image (width * height pixels); larger images are rejected with a warning",
                  minimum=1, maximum=2**31 - 1),
        ParamSpec("frame_queue_depth", _INTEGER, d.frame_queue_depth,
                  "Sampled frames waiting per stream for the model (latest wins: older ones are dropped "
                  "and counted); 1 keeps only the newest", minimum=1, maximum=64),
        ParamSpec("ask_timeout_s", _DOUBLE, d.ask_timeout_s,
                  "Default limit (s) on queue wait + answering of a question (a request's timeout_s overrides it)",
                  read_only=False, minimum=0.01, maximum=3600.0),
        ParamSpec("max_queued_questions", _INTEGER, d.max_queued_questions,
                  "Questions waiting behind the one being answered; more are refused at once",
                  read_only=False, minimum=0, maximum=1000),
        ParamSpec("status_period_s", _DOUBLE, d.status_period_s,
                  "Period (s) of ~/memory_status and /diagnostics", minimum=0.05, maximum=60.0),
        ParamSpec("stale_frame_warn_s", _DOUBLE, d.stale_frame_warn_s,
                  "Diagnostics WARN when the newest ingested frame is older than this (s, node clock - header stamp)",
                  read_only=False, minimum=0.01, maximum=86400.0),
        ParamSpec("drop_warn_ratio", _DOUBLE, d.drop_warn_ratio,
                  "Diagnostics WARN when more than this share of the sampled frames was dropped in the last "
                  "status period (the model ingests slower than sample_fps)",
                  read_only=False, minimum=0.0, maximum=1.0),
        ParamSpec("memory_dir", _STRING, d.memory_dir,
                  "Directory for each stream's memory checkpoint (<memory_dir>/<stream>.safetensors): saved "
                  "every checkpoint_period_s of stream time, on deactivate, shutdown and SIGINT/SIGTERM, and "
                  "restored on configure when it matches the model and engine configuration; empty: off "
                  "(give each node its own directory)"),
        ParamSpec("checkpoint_period_s", _DOUBLE, d.checkpoint_period_s,
                  "Seconds of stream time (header stamps) between periodic memory checkpoints to memory_dir; "
                  "0: only on deactivate, shutdown and signals", minimum=0.0, maximum=86400.0),
        ParamSpec("max_watches", _INTEGER, d.max_watches,
                  "Watch goals (~/watch) running at once, all streams together; more are refused with a reason",
                  minimum=0, maximum=256),
        ParamSpec("evidence_frames", _INTEGER, d.evidence_frames,
                  "Evidence frames reported with every answer and watch (evidence_stamps: the frames with the most "
                  "attention mass of the first answer token); 0: none", minimum=0, maximum=64),
        ParamSpec("max_evidence_images", _INTEGER, d.max_evidence_images,
                  "Most JPEG thumbnails (sensor_msgs/CompressedImage) returned with return_evidence_images",
                  minimum=0, maximum=64),
        ParamSpec("thumbnail_ring_bytes", _INTEGER, d.thumbnail_ring_bytes,
                  "Bytes of JPEG thumbnails kept per stream for evidence images and the memory view (frames "
                  "still in memory only, oldest dropped first); 0: keep none", minimum=0, maximum=2**31 - 1),
        ParamSpec("memory_view", _BOOL, d.memory_view,
                  "Publish ~/memory_view (sensor_msgs/Image rgb8, every status_period_s while subscribed): "
                  "a timeline of each stream's memory"),
        ParamSpec("qos.reliability", _STRING, QosSettings().reliability,
                  "Reliability of the image subscriptions (REP-2003: best_effort for sensor data; "
                  "best_available matches the publisher); a stream's own value overrides it",
                  choices=RELIABILITIES),
        ParamSpec("qos.depth", _INTEGER, QosSettings().depth,
                  "History depth (messages) of the image subscriptions (drained at once; freshness comes from "
                  "frame_queue_depth); a stream's own value overrides it",
                  minimum=1, maximum=100),
        ParamSpec("streams", _STRING_ARRAY, ["camera"],
                  "Names of the camera streams; the first is the default for questions. Each has "
                  "streams.<name>.topic/.transport/.qos.*; all share one loaded model"),
    ]


def default_topic(name: str, transport: str, first: bool) -> str:
    """Topic of a stream whose ``streams.<name>.topic`` is empty (relative: remappable).

    The first stream uses ``image`` (raw) or ``compressed_image`` (compressed), so a single
    camera is wired with a remap (``image:=/camera/image_raw``); the others ``<name>/image``...
    """
    base = "image" if transport == "raw" else "compressed_image"
    return base if first else f"{name}/{base}"


def stream_parameter_specs(name: str) -> List[ParamSpec]:
    """The parameters of stream ``name`` (``streams.<name>.*``)."""
    p = f"streams.{name}."
    return [
        ParamSpec(p + "topic", _STRING, "",
                  "Image topic of this stream; empty: 'image' / 'compressed_image' for the first stream, "
                  "'<name>/image' / '<name>/compressed_image' for the others (relative names: remappable)"),
        ParamSpec(p + "transport", _STRING, "raw",
                  "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage (JPEG/PNG)", choices=TRANSPORTS),
        ParamSpec(p + "qos.reliability", _STRING, "",
                  "Reliability of this stream's subscription; empty: qos.reliability", choices=("",) + RELIABILITIES),
        ParamSpec(p + "qos.depth", _INTEGER, 0, "History depth of this stream's subscription; 0: qos.depth",
                  minimum=0, maximum=100),
    ]


def engine_parameter_specs() -> List[ParamSpec]:
    """One parameter per ``EngineConfig`` field, generated from the dataclass.

    ``Optional[int]`` fields use 0 for ``None`` and ``Optional[str]`` fields the empty string.
    """
    hints = typing.get_type_hints(EngineConfig)
    docs = field_descriptions()
    kinds = {int: _INTEGER, float: _DOUBLE, str: _STRING, bool: _BOOL}
    specs = []
    for f in dataclasses.fields(EngineConfig):
        annotation, none_value = hints[f.name], _NONE
        if typing.get_origin(annotation) is Union:
            (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
            none_value = {int: 0, str: "", float: 0.0}[annotation]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if default is None:
            default = none_value
        specs.append(ParamSpec(
            f.name, kinds[annotation], default,
            f"EngineConfig.{f.name}: " + docs.get(f.name, f.name),
            choices=tuple(FIELD_CHOICES.get(f.name, ())), none_value=none_value,
        ))
    return specs


def all_parameter_specs(stream_names: Iterable[str]) -> List[ParamSpec]:
    """Every parameter for the given stream names; names are unique across the table."""
    specs = base_parameter_specs() + engine_parameter_specs()
    for name in stream_names:
        specs += stream_parameter_specs(name)
    seen: Dict[str, ParamSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise RuntimeError(f"parameter {spec.name!r} declared twice (EngineConfig field clashes with a node one?)")
        seen[spec.name] = spec
    return specs


#: Parameters that may change while the node runs (applied by the node without a restart).
DYNAMIC_PARAMETERS = frozenset(s.name for s in base_parameter_specs() if not s.read_only)


# ------------------------------------------------------------------------------ validation
def _coerce(spec: ParamSpec, value: Any) -> Any:
    """``value`` as the spec's Python type; raises ValueError with a clear message."""
    kind = spec.kind
    if kind == _BOOL:
        if isinstance(value, bool):
            return value
    elif kind == _INTEGER:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == _DOUBLE:
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # YAML "2" for 2.0 is fine
            if not math.isfinite(float(value)):
                raise ValueError(f"{spec.name} must be finite, got {value!r}")
            return float(value)
    elif kind == _STRING:
        if isinstance(value, str):
            return value
    elif kind == _STRING_ARRAY:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
    what = {_BOOL: "a bool", _INTEGER: "an integer", _DOUBLE: "a number", _STRING: "a string",
            _STRING_ARRAY: "a list of strings"}[kind]
    raise ValueError(f"{spec.name} must be {what}, got {value!r} ({type(value).__name__})")


def _check(spec: ParamSpec, value: Any) -> None:
    if spec.choices and value not in spec.choices:
        raise ValueError(f"{spec.name} must be one of {list(spec.choices)}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"{spec.name} must be >= {spec.minimum:g}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError(f"{spec.name} must be <= {spec.maximum:g}, got {value!r}")


def _values_for(specs: Sequence[ParamSpec], values: Mapping[str, Any], problems: List[str]) -> Dict[str, Any]:
    """Validated value (or default) of each spec; problems are appended, bad values -> default."""
    out = {}
    for spec in specs:
        value = values.get(spec.name, spec.default)
        try:
            value = _coerce(spec, value)
            _check(spec, value)
        except ValueError as exc:
            problems.append(str(exc))
            value = spec.default
        out[spec.name] = value
    return out


def settings_from_parameters(values: Mapping[str, Any], *, strict: bool = False) -> NodeSettings:
    """Validate parameter ``values`` (missing ones take their defaults) into :class:`NodeSettings`.

    Args:
        values: ``{parameter name: value}`` as rclpy or a flattened YAML file gives them.
        strict: also report names that are not parameters of the node (a misspelled name in a
            parameter file or a ``-p`` override), with the closest known name. The node always
            validates strictly on configure; the runtime ``ros2 param set`` path cannot meet
            unknown names (rclpy refuses undeclared parameters).

    Raises:
        SettingsError: listing every invalid value.
    """
    problems: List[str] = []
    base = _values_for(base_parameter_specs(), values, problems)
    if not DEVICE_PATTERN.match(base["device"]):
        problems.append(f"device must be cpu, cuda or cuda:N, got {base['device']!r}")
    if base["memory_dir"] != base["memory_dir"].strip() or "\0" in base["memory_dir"]:
        problems.append(f"memory_dir must be a directory path without surrounding spaces, got {base['memory_dir']!r}")
    if not base["model"].strip():
        problems.append("model must not be empty (a hub id, a local directory or tiny-llava-onevision)")

    names = base["streams"]
    if not names:
        problems.append("streams must name at least one camera stream")
    for name in names:
        if not STREAM_NAME_PATTERN.match(name):
            problems.append(f"stream name {name!r} must start with a letter and hold only letters, digits and _")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"stream names must be unique, repeated: {duplicates}")

    streams = []
    for index, name in enumerate(dict.fromkeys(names)):
        p = f"streams.{name}."
        s = _values_for(stream_parameter_specs(name), values, problems)
        transport = s[p + "transport"]
        topic = s[p + "topic"].strip() or default_topic(name, transport, first=index == 0)
        qos = QosSettings(reliability=s[p + "qos.reliability"] or base["qos.reliability"],
                          depth=s[p + "qos.depth"] or base["qos.depth"])
        streams.append(StreamSettings(name=name, topic=topic, transport=transport, qos=qos))

    engine_specs = engine_parameter_specs()
    engine_values = _values_for(engine_specs, values, problems)
    kwargs = {}
    for spec in engine_specs:
        value = engine_values[spec.name]
        kwargs[spec.name] = None if spec.none_value is not _NONE and value == spec.none_value else value
    engine = _DEFAULTS.engine
    try:
        engine = EngineConfig(**kwargs)
    except ConfigError as exc:
        problems.append(f"engine configuration: {exc}")

    if strict:
        known = {s.name for s in all_parameter_specs(dict.fromkeys(names))}
        for key in values:
            if key not in known and key not in ROS_BUILTIN_PARAMETERS and not key.startswith("qos_overrides."):
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else " (not a parameter of this node)"
                problems.append(f"unknown parameter {key!r}{hint}")
    if problems:
        raise SettingsError(problems)

    simple = {f.name: base[f.name] for f in dataclasses.fields(NodeSettings) if f.name in base}
    simple.pop("streams")
    return NodeSettings(**simple, streams=tuple(streams), engine=engine)


# ------------------------------------------------------------------------------ YAML files
def _flatten(prefix: str, tree: Mapping[str, Any], out: Dict[str, Any]) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(name + ".", value, out)
        else:
            out[name] = value


def parameters_from_yaml(path: Union[str, Path], node_name: str = NODE_NAME) -> Dict[str, Any]:
    """Flattened ``ros__parameters`` for ``node_name`` from a ROS 2 parameter file.

    Sections apply in file order: ``/**`` (every node) and any key whose last path element is
    ``node_name`` (``livevlm``, ``/livevlm``, ``/ns/livevlm``), later ones overriding earlier ones.
    """
    import yaml

    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    out: Dict[str, Any] = {}
    for key, section in document.items():
        key = str(key)
        if key == "/**" or key.rstrip("/").split("/")[-1] == node_name:
            params = (section or {}).get("ros__parameters")
            if not isinstance(params, Mapping):
                raise SettingsError([f"{path}: section {key!r} has no ros__parameters mapping"])
            _flatten("", params, out)
    return out


# ------------------------------------------------------------------------------ rclpy side
def to_descriptor(spec: ParamSpec):
    """The ``rcl_interfaces/ParameterDescriptor`` of a spec (imports rcl_interfaces lazily)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    types = {
        _STRING: ParameterType.PARAMETER_STRING,
        _INTEGER: ParameterType.PARAMETER_INTEGER,
        _DOUBLE: ParameterType.PARAMETER_DOUBLE,
        _BOOL: ParameterType.PARAMETER_BOOL,
        _STRING_ARRAY: ParameterType.PARAMETER_STRING_ARRAY,
    }
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=types[spec.kind],
        description=spec.description,
        additional_constraints=spec.constraints,
        read_only=spec.read_only,
        # A YAML "2" for a double parameter would otherwise be refused by rclpy with a type
        # error; settings_from_parameters accepts integers for doubles and checks the range.
        dynamic_typing=spec.kind == _DOUBLE,
    )
    if spec.minimum is not None and spec.maximum is not None:
        if spec.kind == _INTEGER:
            descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=0)]
        elif spec.kind == _DOUBLE:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
    return descriptor
