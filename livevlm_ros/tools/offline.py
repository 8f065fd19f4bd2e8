"""``livevlm_offline``: run the LiveVLM pipeline over a recording and answer questions at set times.

Usage::

    livevlm_offline SOURCE [--topic T] [--fps F] [--model M] [--device D] [--dtype T]
                    [--memory {full,sliding,topk,vsb,rekv}] [--retrieval {none,par,par-pe}]
                    [--budget TOKENS] [--max-new-tokens N] [--ask "T:QUESTION" ...] [--json]
                    [--watch "T0:CONDITION" ...] [--evidence N] [--evidence-dir DIR]
                    [--memory-plot OUT.png] [--memory-plot-dir DIR]
                    [--save-memory PATH] [... every other EngineConfig field as --field-name ...]
    livevlm_offline --load-memory PATH [same model / engine options] --ask "T:QUESTION" ...

``--save-memory`` / ``--load-memory``: ingest a recording once, question it many times
(:mod:`livevlm_ros.tools.offline_memory`; a bad or mismatched memory file exits 1).

``SOURCE`` is a video file, a rosbag2 directory / .mcap / .db3 / ROS 1 .bag (``--topic`` picks
the image topic when there are several), or a folder of JPEG/PNG images.

Times: ask times and every time printed are *seconds since the first frame* of the source;
the engine is fed those relative times too. For a bag, add ``time_offset_s`` (in ``--json``
output) to get header-stamp time back.

A question ``--ask "T:Q"`` is asked once the stream reaches ``T``: every sampled frame stamped
``<= T`` has been ingested (``ask`` prefills pending frames itself). Questions are asked in
time order; those after the end of the stream are asked at the end (``"after_end": true``; the
text output shows the time they were answered at, ``asked_at``, and the time asked for).

Frames are sampled at ``--fps`` by the node's sampler (one per 1/fps slot of stream time), so a
bag run here keeps the frames the node keeps when the bag is replayed into it. Frames whose
time goes backwards are dropped, warned about and counted (``frames_out_of_order``).

A watch ``--watch "T0:CONDITION"`` is a standing yes/no condition from ``T0`` on, evaluated like
the node's ``~/watch`` at clip boundaries (:mod:`livevlm_ros.tools.offline_watch`); each rising
and falling edge is printed as it happens. ``--evidence N`` (default 4) evidence frames come with
every answer: the frames the first answer token put the most attention mass on
(``evidence``: ``frame``, ``time``, ``mass``, and with ``--evidence-dir`` the path of the frame's
JPEG ``thumbnail``). ``--memory-plot`` / ``--memory-plot-dir`` write the memory view
(:mod:`livevlm_ros.tools.offline_evidence`).

``--json`` prints exactly one JSON object on stdout::

    {"answers": [{"time", "question", "asked_at", "after_end", "answer", "error", "ttft_s", "total_s",
                  "frames_seen", "span_start", "span_end", "memory_tokens", "context_tokens",
                  "pages_retrieved", "pages_total", "new_tokens", "stop_reason",
                  "evidence": [{"frame", "time", "mass", "thumbnail"}], "memory_plot"}, ...],
     "watches": [{"start", "condition", "threshold", "consecutive", "period_s", "fired", "error",
                  "evaluations": [{"time", "p_yes", "state"}],
                  "edges": [{"time", "state", "p_yes", "evidence"}]}, ...],
     "memory_plot": path or null,
     "memory": {MemoryStats fields: "tokens", "budget", "frames_ingested", "max_position_id",
                "max_position_embeddings", "coverage" (10 shares of long-term memory per tenth of
                the stream time, oldest first), ...},
     "model": name, "random_weights": bool, "device", "dtype",
     "source": {"path", "kind", "topic", "fps", "frames_ingested", "frames_skipped",
                "frames_out_of_order", "duration_s", "time_offset_s"},
     "config": {EngineConfig fields}}

An engine error on one question (e.g. no frame yet, a question too long for the context) is
reported in that answer's ``"error"`` (its other result fields ``null``) and the run goes on.
Exit status: 0 every question answered, 1 the model, the source or a memory file could not be
opened or written, 2 bad arguments, 3 one or more questions failed (their errors are in the output).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from tqdm import tqdm

from livevlm_ros.engine import (
    FIELD_CHOICES,
    AskResult,
    EngineConfig,
    InvalidFrameError,
    LiveVLMError,
    LiveVLMStream,
    TimestampError,
    load_video_llm,
)
from livevlm_ros.engine.config import field_descriptions
from livevlm_ros.io.sources import FrameSource, SourceError, open_source

from . import offline_memory
from .offline_evidence import MemoryRecorder
from .offline_watch import OfflineWatches, WatchError, format_edge, parse_timed, parse_watch

DEFAULT_MODEL = "tiny-llava-onevision"
DEFAULT_DEVICE = "cpu"
DEFAULT_DTYPE = "float32"
DEFAULT_FPS = 1.0
#: Exit status when one or more questions failed (the rest of the output is complete).
EXIT_QUESTIONS_FAILED = 3
#: Frames going back in time warned about one by one; later ones are only counted.
OUT_OF_ORDER_WARNINGS = 5

#: EngineConfig fields whose option name is not ``--field-name``: field -> (flags...)
_OPTION_FLAGS = {"budget_tokens": ("--budget", "--budget-tokens")}


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One ``--ask``: ``question`` asked at ``time`` seconds after the first frame."""

    time: float
    question: str


def parse_ask(text: str) -> Ask:
    """``"T:QUESTION"`` -> :class:`Ask`; ``T`` is a non-negative number of seconds.

    Raises:
        argparse.ArgumentTypeError: bad syntax (argparse turns it into a usage error).
    """
    return Ask(*parse_timed(text, "T:QUESTION"))


# --------------------------------------------------------------------------------------------
# Options generated from EngineConfig
# --------------------------------------------------------------------------------------------


def _scalar_type(annotation: Any) -> Optional[type]:
    """``int``/``float``/``str``/``bool`` for a field annotation (``Optional[X]`` -> X), else None."""
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if annotation in (int, float, str, bool) else None


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per EngineConfig field (``--clip-frames`` ...), defaulting to the dataclass."""
    group = parser.add_argument_group("engine configuration (EngineConfig fields)")
    hints = typing.get_type_hints(EngineConfig)
    docs = field_descriptions()
    for field in dataclasses.fields(EngineConfig):
        kind = _scalar_type(hints[field.name])
        if kind is None:  # a structured field: not settable from the command line
            continue
        flags = _OPTION_FLAGS.get(field.name, ("--" + field.name.replace("_", "-"),))
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        help_text = f"{docs.get(field.name, field.name)} (default: {default})".replace("%", "%%")
        options: Dict[str, Any] = dict(dest=field.name, default=argparse.SUPPRESS, help=help_text)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update(type=kind, metavar=field.name.upper())
        if field.name in FIELD_CHOICES:
            options.update(choices=FIELD_CHOICES[field.name], metavar=None)
        group.add_argument(*flags, **options)


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The EngineConfig with every field given on the command line (ConfigError if invalid)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig) if hasattr(args, f.name)}
    return EngineConfig(**given)


def _attach_option_values(argv: Sequence[str]) -> List[str]:
    """``--ask -3:what?`` -> ``--ask=-3:what?``: argparse takes a value that starts with ``-``
    (and is no plain negative number) for an option and answers "expected one argument"; attached,
    the value reaches :func:`parse_ask`, whose message says what is wrong with it."""
    args, out, k = list(argv), [], 0
    while k < len(args):
        if args[k] == "--ask" and k + 1 < len(args) and re.match(r"-[0-9.]", args[k + 1]):
            out.append(f"--ask={args[k + 1]}")
            k += 2
        else:
            out.append(args[k])
            k += 1
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (``sys.argv[1:]`` by default) parsed by :func:`build_parser`."""
    return build_parser().parse_args(_attach_option_values(sys.argv[1:] if argv is None else argv))


def _non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livevlm_offline",
        description="Run LiveVLM over a video file, a ROS bag or an image folder and answer questions "
        "at given stream times. Times are seconds since the first frame.",
    )
    parser.add_argument(
        "source", metavar="SOURCE", nargs="?",
        help="video file, rosbag2 directory/.mcap/.db3, ROS 1 .bag, or image folder (none with --load-memory)"
    )
    parser.add_argument(
        "--topic",
        help="image topic of a bag (sensor_msgs/Image or CompressedImage); default: the bag's only image topic",
    )
    parser.add_argument(
        "--fps",
        type=_non_negative_float,
        default=DEFAULT_FPS,
        help="frames per second of stream time fed to the engine; 0: every frame (default: %(default)s)",
    )
    parser.add_argument(
        "--folder-fps",
        type=_non_negative_float,
        default=1.0,
        help="frame rate assumed for an image folder: timestamps = index / folder-fps (default: %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=_non_negative_float,
        default=None,
        help="stop after this many seconds of stream time (default: the whole source)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="tiny-llava-onevision / tiny-smolvlm (random weights, for tests), a hub id or a local directory "
        "(default: %(default)s)",
    )
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--dtype", default=DEFAULT_DTYPE, help="float32, float16 or bfloat16 (default: %(default)s)")
    parser.add_argument(
        "--ask",
        dest="asks",
        action="append",
        type=parse_ask,
        default=[],
        metavar="T:QUESTION",
        help="ask QUESTION once the stream reaches T seconds (repeatable)",
    )
    parser.add_argument(
        "--watch", dest="watches", action="append", type=parse_watch, default=[], metavar="T0:CONDITION",
        help="watch the yes/no CONDITION from T0 seconds on; every change is reported (repeatable; a "
        "random-weight model fires at random)")
    parser.add_argument("--watch-threshold", type=float, default=0.5,
                        help="p_yes that counts as true, in [0, 1] (default: %(default)s)")
    parser.add_argument("--watch-consecutive", type=int, default=1,
                        help="evaluations in a row needed to change state (default: %(default)s)")
    parser.add_argument("--watch-period", type=_non_negative_float, default=0.0,
                        help="stream seconds between evaluations; 0: after every clip (default: %(default)s)")
    parser.add_argument("--evidence", type=int, default=4, metavar="N",
                        help="evidence frames reported per answer and watch edge, 0-64 (default: %(default)s)")
    parser.add_argument("--evidence-dir", metavar="DIR", help="write each answer's evidence thumbnails here (JPEG)")
    parser.add_argument("--memory-plot", metavar="OUT.png", help="write the memory view at the end of the run")
    parser.add_argument("--memory-plot-dir", metavar="DIR", help="write the memory view after each question")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    offline_memory.add_options(parser)
    _add_config_options(parser)
    return parser


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (JSON has no NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_RESULT_FIELDS = [f.name for f in dataclasses.fields(AskResult)]


def ask_one(stream: LiveVLMStream, ask: Ask, asked_at: Optional[float], after_end: bool = False,
            evidence: int = 0) -> Dict[str, Any]:
    """Ask one question; returns its answer entry (``"error"`` set on an engine error).

    ``asked_at``: stream time of the newest ingested frame when asked; ``after_end``: the stream
    ended before ``ask.time``; ``evidence``: evidence frames to report."""
    entry: Dict[str, Any] = {"time": ask.time, "question": ask.question, "asked_at": asked_at,
                             "after_end": after_end}
    try:
        result = stream.ask(ask.question, evidence=evidence)
    except LiveVLMError as err:
        entry.update({name: None for name in _RESULT_FIELDS}, error=f"{type(err).__name__}: {err}")
        return entry
    entry.update(result.to_dict(), error=None)
    return entry


class OfflineRun:
    """Feeds frames to a stream, asking each question once the stream reaches its time.

    Times are relative to the first frame seen (``time_offset_s``, source seconds).

    Attributes:
        answers: answer entries (see :func:`ask_one`) in the order asked.
        frames_ingested / frames_skipped: frames given to the engine / dropped (bad data or
            rejected by the engine).
        frames_out_of_order: frames the source dropped because their time went backwards.
        time_offset_s: timestamp of the first frame (``None`` before any).
        last_time: relative time of the newest ingested frame (``None`` before any).
    """

    def __init__(self, stream, asks: Sequence[Ask], on_answer=lambda entry: None, warn=lambda message: None, *,
                 evidence: int = 0, watches: Optional[OfflineWatches] = None,
                 recorder: Optional[MemoryRecorder] = None) -> None:
        self.stream = stream
        self.evidence, self.watches, self.recorder = evidence, watches, recorder
        self.memory_plot: Optional[str] = None
        self.pending = sorted(asks, key=lambda a: a.time)  # stable: equal times keep their order
        self.on_answer, self.warn = on_answer, warn
        self.answers: List[Dict[str, Any]] = []
        self.frames_ingested = self.frames_skipped = self.frames_out_of_order = 0
        self.time_offset_s: Optional[float] = None
        self.last_time: Optional[float] = None

    def relative(self, timestamp: float) -> float:
        """Seconds since the first frame (the first call sets the offset)."""
        if self.time_offset_s is None:
            self.time_offset_s = timestamp
        return timestamp - self.time_offset_s

    def ask_until(self, time_s: float, after_end: bool = False) -> None:
        """Ask every pending question stamped before ``time_s`` (relative seconds)."""
        while self.pending and self.pending[0].time < time_s:
            entry = ask_one(self.stream, self.pending.pop(0), self.last_time, after_end, self.evidence)
            if self.recorder is not None and not entry["error"]:
                self.recorder.after_answer(self.stream, entry)
            self.answers.append(entry)
            self.on_answer(entry)

    def ingest(self, timestamp: float, rgb) -> None:
        """Ask the questions due before this frame, then ingest it (skipped if rejected)."""
        relative = self.relative(timestamp)
        self.ask_until(relative)
        try:
            self.stream.ingest(rgb, relative)
        except (InvalidFrameError, TimestampError) as err:
            self.skip(timestamp, err)
            return
        self.frames_ingested += 1
        self.last_time = relative
        self._after_frame(self.frames_ingested - 1, relative, rgb)

    def _after_frame(self, index: int, relative: float, rgb) -> None:
        if self.recorder is not None and rgb is not None:
            self.recorder.after_frame(self.stream, index, relative, rgb)
        if self.watches is not None:
            self.watches.after_frame(self.stream, relative, self.warn)

    def skip(self, timestamp: float, error: Exception) -> None:
        """Count a dropped frame and warn about it."""
        self.frames_skipped += 1
        self.warn(f"frame at {self.relative(timestamp):.3f} s skipped: {error}")

    def out_of_order(self, timestamp: float, reason: str) -> None:
        """Count a frame the source dropped for going back in time; warn about the first few."""
        self.frames_out_of_order += 1
        if self.frames_out_of_order <= OUT_OF_ORDER_WARNINGS:
            more = " (further ones are counted, not shown)" if self.frames_out_of_order == OUT_OF_ORDER_WARNINGS else ""
            self.warn(f"frame at {self.relative(timestamp):.3f} s dropped: its {reason}{more}")

    @property
    def failed(self) -> List[Dict[str, Any]]:
        """The answer entries whose question failed."""
        return [entry for entry in self.answers if entry["error"]]

    def finish(self) -> None:
        """Prefill the frames still buffered, then ask the questions left (after the end)."""
        if self.stream.flush() and self.last_time is not None:  # the last, partial clip
            if self.recorder is not None and self.recorder.ring is not None:
                self.recorder.ring.retain_timeline(self.stream.timeline().token_times, self.frames_ingested)
            if self.watches is not None:
                self.watches.after_frame(self.stream, self.last_time, self.warn)
        self.ask_until(math.inf, after_end=True)
        if self.recorder is not None and self.frames_ingested:
            self.memory_plot = self.recorder.finish(self.stream)


def run_stream(
    stream,
    source: FrameSource,
    asks: Sequence[Ask],
    *,
    duration_s: Optional[float] = None,
    progress: bool = True,
    on_answer=lambda entry: None,
    warn=lambda message: None,
    evidence: int = 0,
    watches: Optional[OfflineWatches] = None,
    recorder: Optional[MemoryRecorder] = None,
) -> OfflineRun:
    """Ingest ``source`` into ``stream`` (up to ``duration_s`` seconds after its first frame) and
    answer ``asks`` at their times; returns the finished :class:`OfflineRun`.

    A tqdm bar on stderr shows progress (``progress=False``: none). Frames that fail to decode,
    that the engine rejects or whose time goes backwards are skipped, counted and passed to
    ``warn``; if the source
    becomes unreadable (:class:`SourceError`), ``warn`` is told and the questions left are
    answered from the frames read so far.
    """
    run = OfflineRun(stream, asks, on_answer, warn, evidence=evidence, watches=watches, recorder=recorder)
    # a memory restored by --load-memory: its newest frame and time offset
    run.last_time, run.time_offset_s = getattr(source, "last_time", None), getattr(source, "time_offset_s", None)
    total = source.expected_frames
    if duration_s is not None and source.fps and total is not None:
        total = min(total, int(duration_s * source.fps) + 1)
    with tqdm(total=total, file=sys.stderr, disable=not progress, unit="frame", dynamic_ncols=True) as bar:
        try:
            for timestamp, rgb in source.frames(on_bad_frame=run.skip, on_rejected=run.out_of_order):
                if duration_s is not None and run.relative(timestamp) > duration_s:
                    break
                run.ingest(timestamp, rgb)
                bar.update(1)
        except SourceError as err:  # unreadable rest of a file: answer from what was read
            warn(f"source stopped early: {err}")
    run.finish()
    return run


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def random_weights_banner(model_name: str) -> str:
    return (
        f"NOTE: model {model_name!r} has RANDOM WEIGHTS (a built-in test model): its answers are "
        "NOT about the images. Use a real checkpoint (--model <hub id or directory>) for real answers."
    )


def printable(text: str) -> str:
    """``text`` with control characters escaped (random-weight models emit ``\\r`` and worse)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_answer(entry: Dict[str, Any]) -> str:
    """Human-readable lines for one answer entry, stamped with the stream time it was answered at
    (an ask after the end of the source is answered at the last frame, and says so)."""
    if entry.get("after_end"):
        at = "  end" if entry["asked_at"] is None else f"{entry['asked_at']:8.2f} s"
        lines = [f"[{at}] Q: {printable(entry['question'])}   "
                 f"(asked for {entry['time']:.2f} s, after the end of the source)"]
    else:
        lines = [f"[{entry['time']:8.2f} s] Q: {printable(entry['question'])}"]
    if entry["error"]:
        lines.append(f"             ERROR: {entry['error']}")
        return "\n".join(lines)
    lines.append(f"             A: {printable(entry['answer'])}")
    lines.append(
        f"             ttft {entry['ttft_s']:.3f} s, total {entry['total_s']:.3f} s, "
        f"{entry['frames_seen']} frames, memory {entry['memory_tokens']} tokens, "
        f"pages {entry['pages_retrieved']:.1f}/{entry['pages_total']:.1f}"
    )
    return "\n".join(lines)


def format_memory(memory: Dict[str, Any]) -> str:
    budget = "unbounded" if memory.get("budget") is None else f"budget {memory['budget']}"
    return (
        f"memory: {memory['tokens']} tokens ({budget}), {memory['frames_ingested']} frames ingested, "
        f"max position {memory['max_position_id']}/{memory['max_position_embeddings']}"
    )


def json_report(
    args: argparse.Namespace, config: EngineConfig, model, source: FrameSource, run: OfflineRun, memory: Dict[str, Any]
) -> Dict[str, Any]:
    """The ``--json`` object (see the module docstring); non-finite floats become ``null``."""
    return _finite(
        {
            "answers": run.answers,
            "watches": run.watches.reports if run.watches is not None else [],
            "memory_plot": run.memory_plot,
            "memory": memory,
            "model": model.name,
            "random_weights": bool(model.is_tiny),
            "device": str(model.device),
            "dtype": str(model.dtype).replace("torch.", ""),
            "source": {
                "path": args.source,
                "kind": type(source).__name__,
                "topic": getattr(source, "topic", None),
                "fps": source.fps,
                "frames_ingested": run.frames_ingested,
                "frames_skipped": run.frames_skipped,
                "frames_out_of_order": run.frames_out_of_order,
                "duration_s": source.duration_s,
                "time_offset_s": run.time_offset_s,
            },
            "config": dataclasses.asdict(config),
        }
    )


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _error(message: str) -> int:
    print(f"livevlm_offline: error: {message}", file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``livevlm_offline``; returns the exit status."""
    args = parse_args(argv)
    offline_memory.check_arguments(build_parser(), args)
    try:
        config = config_from_args(args)
    except LiveVLMError as err:
        build_parser().error(str(err))
    human = not args.json

    def emit(text: str) -> None:  # human text on stdout; in --json mode stdout is the JSON only
        tqdm.write(text, file=sys.stdout if human else sys.stderr)

    if not 0 <= args.evidence <= 64:
        build_parser().error(f"--evidence must be in [0, 64], got {args.evidence}")
    try:
        watches = OfflineWatches(args.watches, config, threshold=args.watch_threshold,
                                 consecutive=args.watch_consecutive, period_s=args.watch_period,
                                 evidence=args.evidence,
                                 on_edge=(lambda report, edge: emit(format_edge(report, edge))) if human
                                 else (lambda report, edge: None)) if args.watches else None
    except WatchError as err:
        build_parser().error(f"--watch: {err}")
    try:
        recorder = MemoryRecorder(evidence_dir=args.evidence_dir, plot_dir=args.memory_plot_dir,
                                  plot_path=args.memory_plot)
    except OSError as err:
        return _error(f"cannot create an output folder: {err}")
    source = None
    if args.source:
        try:
            source = open_source(args.source, topic=args.topic, fps=args.fps or None, folder_fps=args.folder_fps)
        except (SourceError, OSError) as err:
            return _error(str(err))
    try:
        model = load_video_llm(args.model, device=args.device, dtype=args.dtype)
    except LiveVLMError as err:
        return _error(f"could not load model {args.model!r}: {err}")
    if model.is_tiny:
        emit(random_weights_banner(model.name))
    try:
        stream = LiveVLMStream(model, config)
    except LiveVLMError as err:
        return _error(f"could not start a stream: {err}")
    if args.load_memory:
        try:
            source = offline_memory.load_memory(stream, args.load_memory)
        except offline_memory.MemoryFileError as err:
            return _error(str(err))
    run = run_stream(
        stream,
        source,
        args.asks,
        duration_s=args.duration,
        progress=not args.no_progress,
        on_answer=(lambda entry: emit(format_answer(entry))) if human else (lambda entry: None),
        warn=lambda message: tqdm.write(f"livevlm_offline: warning: {message}", file=sys.stderr),
        evidence=args.evidence,
        watches=watches,
        recorder=recorder if recorder.active else None,
    )
    if args.save_memory:
        try:
            offline_memory.save_memory(stream, args.save_memory, source, run.time_offset_s)
        except offline_memory.MemoryFileError as err:
            return _error(str(err))
    memory = stream.stats().to_dict()
    status = EXIT_QUESTIONS_FAILED if run.failed else 0
    if run.failed:
        print(f"livevlm_offline: error: {len(run.failed)} of {len(run.answers)} question(s) failed: "
              + "; ".join(f"[{e['time']:.2f} s] {e['error']}" for e in run.failed), file=sys.stderr)
    if not human:
        print(json.dumps(json_report(args, config, model, source, run, memory)), flush=True)
        return status
    emit(format_memory(memory))
    for report in run.watches.reports if run.watches is not None else []:
        fired = "fired" if report["fired"] else "never fired"
        emit(f"watch {report['condition']!r} from {report['start']:.2f} s: {len(report['evaluations'])} "
             f"evaluation(s), {len(report['edges'])} edge(s), {fired}")
    if run.memory_plot:
        emit(f"memory plot: {run.memory_plot}")
    if run.frames_skipped:
        emit(f"{run.frames_skipped} frame(s) skipped (see warnings above)")
    if run.frames_out_of_order:
        emit(f"{run.frames_out_of_order} frame(s) dropped: their time went backwards (see warnings above)")
    if model.is_tiny:
        emit(random_weights_banner(model.name))
    return status


if __name__ == "__main__":
    sys.exit(main())
