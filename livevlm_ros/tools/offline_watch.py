"""``livevlm_offline --watch "T0:CONDITION"``: standing yes/no conditions over a recording.

Each watch starts at ``T0`` (seconds since the first frame) and is evaluated like the node's
``~/watch`` (the same :class:`~livevlm_ros.ros.watches.WatchTracker` and
:func:`~livevlm_ros.ros.watches.evaluate_due`): at clip boundaries, every ``--watch-period``
seconds of stream time (0: after every clip), continuously; every rising and falling edge is
reported. A random-weight model's p_yes is noise: its watches fire at random.
"""

from __future__ import annotations

import argparse
import math
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Sequence

from livevlm_ros.engine import EngineConfig, LiveVLMError
from livevlm_ros.ros.watches import WatchError, WatchTracker, evaluate_due, watch_from_goal

__all__ = ["parse_timed", "parse_watch", "OfflineWatches", "format_edge", "WatchError"]

_STREAM = "offline"


def parse_timed(text: str, what: str) -> tuple:
    """``"T:TEXT"`` -> ``(T, TEXT)`` with ``T`` >= 0 seconds since the first frame (``--ask``, ``--watch``).

    Raises:
        argparse.ArgumentTypeError: bad syntax, naming ``what`` (e.g. ``"T:QUESTION"``).
    """
    head, sep, body = text.partition(":")
    try:
        time_s = float(head)
    except ValueError:
        time_s = math.nan
    if not sep or not body.strip() or not math.isfinite(time_s) or time_s < 0:
        label = what.split(":")[0]
        raise argparse.ArgumentTypeError(
            f"expected {what!r} with {label} >= 0 seconds since the first frame, got {text!r}")
    return time_s, body.strip()


def parse_watch(text: str) -> tuple:
    """``"T0:CONDITION"`` -> ``(T0, condition)`` (argparse type)."""
    return parse_timed(text, "T0:CONDITION")


def _evidence(frames: Sequence) -> List[Dict[str, Any]]:
    return [{"frame": e.frame, "time": e.time, "mass": e.mass} for e in frames]


class OfflineWatches:
    """The ``--watch`` conditions of one run.

    Args:
        watches: ``(start_s, condition)`` pairs.
        config: the stream's engine configuration (conditions are validated against it).
        threshold / consecutive / period_s: as the Watch goal's fields (same for every watch).
        evidence: evidence frames per evaluation.
        on_edge: ``on_edge(report, edge_entry)`` for every edge as it happens.

    Raises:
        WatchError: a condition or value the node would refuse too.
    """

    def __init__(self, watches: Sequence[tuple], config: EngineConfig, *, threshold: float = 0.5,
                 consecutive: int = 1, period_s: float = 0.0, evidence: int = 0,
                 on_edge: Callable[[Dict[str, Any], Dict[str, Any]], None] = lambda report, edge: None) -> None:
        self.on_edge = on_edge
        self.trackers: List[WatchTracker] = []
        self.reports: List[Dict[str, Any]] = []
        for start, condition in watches:
            goal = SimpleNamespace(condition=condition, stream=_STREAM, period_s=period_s, threshold=threshold,
                                   consecutive=consecutive, continuous=True, last_seconds=0.0)
            spec = watch_from_goal(goal, stream_names=[_STREAM], engine=config, evidence=evidence)
            self.trackers.append(WatchTracker(spec, start_s=start))
            self.reports.append({"start": start, "condition": spec.condition, "threshold": spec.threshold,
                                 "consecutive": spec.consecutive, "period_s": spec.period_s, "fired": False,
                                 "evaluations": [], "edges": [], "error": None})

    def after_frame(self, stream, newest_s: float, warn: Callable[[str], None] = lambda m: None) -> None:
        """Call after each ingested frame: evaluates the due watches when a clip was just prefilled."""
        if not self.trackers or stream.pending_frames:
            return
        frames = stream.stats().frames_ingested
        report_of = {id(t): r for t, r in zip(self.trackers, self.reports)}

        def record(tracker: WatchTracker, result, edge) -> None:
            report = report_of[id(tracker)]
            report["evaluations"].append({"time": newest_s, "p_yes": result.p_yes, "state": tracker.state})
            if edge is not None:
                entry = {"time": edge.stamp, "state": edge.state, "p_yes": edge.p_yes,
                         "evidence": _evidence(edge.evidence)}
                report["edges"].append(entry)
                report["fired"] = report["fired"] or edge.state
                self.on_edge(report, entry)

        try:
            evaluate_due(stream, self.trackers, frames_prefilled=frames, newest_stamp=newest_s, on_result=record,
                         on_skip=lambda ws, exc: warn(f"watch skipped at {newest_s:.2f} s: {exc}"))
        except LiveVLMError as err:  # reported per watch; the run goes on
            for report in self.reports:
                report["error"] = f"{type(err).__name__}: {err}"
            warn(f"watch evaluation failed at {newest_s:.2f} s: {err}")


def format_edge(report: Dict[str, Any], edge: Dict[str, Any]) -> str:
    """One text line for a watch edge."""
    what = "became TRUE " if edge["state"] else "became false"
    return f"[{edge['time']:8.2f} s] WATCH {what}: {report['condition']!r} (p_yes {edge['p_yes']:.3f})"
