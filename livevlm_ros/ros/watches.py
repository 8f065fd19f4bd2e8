"""Standing yes/no conditions ("watches") over a stream's memory (pure: no rclpy, no torch).

A watch asks one yes/no ``condition`` again and again as the stream goes on. Each evaluation is
the engine's :meth:`~livevlm_ros.engine.stream.LiveVLMStream.evaluate_condition`: one read-only
question prefill, ``p_yes`` = P("yes") against P("no") for the first answer token. This module
holds what is the same for the node's ``~/watch`` action and ``livevlm_offline --watch``:

* :class:`WatchSpec`: a validated goal (the condition itself is validated by the engine's
  :func:`~livevlm_ros.engine.question.condition_request`, the one place);
* :class:`WatchTracker`: when a watch is due, and its state machine (threshold, consecutive
  evaluations, rising and falling edges);
* :func:`evaluate_due`: one evaluation pass over a stream: every due watch, watches asking the
  same condition over the same window sharing one evaluation.

Scheduling: evaluations happen only at *clip boundaries* (no frame pending in the engine), so an
evaluation never prefills a partial clip and never changes how the stream is cut into clips:
``period_s = 0`` evaluates after every clip; ``period_s > 0`` evaluates at the first clip
boundary at least ``period_s`` of stream time after the previous evaluation.

State: a watch starts *false*; it turns true after ``consecutive`` evaluations in a row with
``p_yes >= threshold`` (a rising edge) and false again after ``consecutive`` in a row below it
(a falling edge). With a random-weight model p_yes is noise, so the watch fires at random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from livevlm_ros.engine.config import EngineConfig
from livevlm_ros.engine.errors import EmptyMemoryError, InvalidQuestionError
from livevlm_ros.engine.question import condition_request

__all__ = ["WatchError", "WatchSpec", "Edge", "WatchTracker", "watch_from_goal", "evaluate_due", "MAX_PERIOD_S"]

#: Longest ``period_s`` a goal may ask for (s of stream time).
MAX_PERIOD_S = 86400.0
#: Most ``consecutive`` evaluations a goal may ask for.
MAX_CONSECUTIVE = 1000

#: A refused watch goal (the engine's question error: one error type for bad input).
WatchError = InvalidQuestionError


@dataclass(frozen=True)
class WatchSpec:
    """A validated watch.

    Attributes:
        condition: the yes/no condition, stripped.
        stream: stream name (resolved: never empty).
        period_s: stream time (s) between evaluations; 0: after every clip.
        threshold: ``p_yes >= threshold`` counts as true, in [0, 1].
        consecutive: evaluations in a row needed to change state (>= 1).
        continuous: keep watching after the first fire (report every edge) instead of finishing.
        last_seconds: > 0: each evaluation sees only the last N s of stream time.
        evidence: evidence frames reported per evaluation (0: none).
    """

    condition: str
    stream: str
    period_s: float = 0.0
    threshold: float = 0.5
    consecutive: int = 1
    continuous: bool = False
    last_seconds: float = 0.0
    evidence: int = 0


def _finite_in(name: str, value: Any, low: float, high: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise WatchError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value}")
    return value


def watch_from_goal(goal: Any, *, stream_names: Sequence[str], engine: EngineConfig, evidence: int = 0) -> WatchSpec:
    """Validate a ``Watch`` goal (any object with its fields) into a :class:`WatchSpec`.

    ``stream`` empty means the first stream; ``consecutive`` 0 means 1.

    Raises:
        WatchError: naming the offending field (unknown stream, empty or over-long condition,
            threshold outside [0, 1], negative period or window).
    """
    stream = goal.stream or (stream_names[0] if stream_names else "")
    if stream not in stream_names:
        raise WatchError(f"unknown stream {goal.stream!r}; this node has streams {list(stream_names)}")
    request = condition_request(goal.condition or "", engine, evidence=evidence)  # the engine's own check
    consecutive = int(goal.consecutive) or 1
    if consecutive > MAX_CONSECUTIVE:
        raise WatchError(f"consecutive must be in [1, {MAX_CONSECUTIVE}], got {consecutive}")
    return WatchSpec(
        condition=(goal.condition or "").strip(), stream=stream,
        period_s=_finite_in("period_s", goal.period_s, 0.0, MAX_PERIOD_S),
        threshold=_finite_in("threshold", goal.threshold, 0.0, 1.0),
        consecutive=consecutive, continuous=bool(goal.continuous),
        last_seconds=_finite_in("last_seconds", goal.last_seconds, 0.0, math.inf),
        evidence=request.evidence)


@dataclass(frozen=True)
class Edge:
    """A change of a watch's state.

    Attributes:
        state: the new state (True: rising edge).
        stamp: stream time (s) of the newest frame the deciding evaluation saw.
        p_yes: that evaluation's p_yes.
        evidence: its evidence frames (:class:`~livevlm_ros.engine.results.EvidenceFrame`).
    """

    state: bool
    stamp: float
    p_yes: float
    evidence: list = field(default_factory=list)


class WatchTracker:
    """When a watch is due, and its state (see the module docstring).

    Attributes:
        state: the current state. evaluations: evaluations so far.
        last_stamp: stream time (s) of the newest evaluation (None: none yet).
        first_rise: the first rising edge (None: never fired). last_p_yes / last_evidence: of the newest evaluation.
    """

    def __init__(self, spec: WatchSpec, start_s: Optional[float] = None) -> None:
        self.spec = spec
        self.start_s = start_s
        self.state = False
        self.evaluations = 0
        self.first_rise: Optional[Edge] = None
        self.last_p_yes = 0.0
        self.last_evidence: list = []
        self._streak = 0
        self._last_frames = -1
        self.last_stamp: Optional[float] = None

    def due(self, frames_prefilled: int, newest_stamp: Optional[float]) -> bool:
        """True when an evaluation is due at a clip boundary with ``frames_prefilled`` frames in the
        engine and the newest frame stamped ``newest_stamp`` (s)."""
        if newest_stamp is None or frames_prefilled <= 0 or frames_prefilled == self._last_frames:
            return False
        if self.start_s is not None and newest_stamp < self.start_s:
            return False
        if self.last_stamp is None or self.spec.period_s <= 0.0:
            return True
        return newest_stamp - self.last_stamp >= self.spec.period_s - 1e-9

    def window(self, newest_stamp: float) -> Tuple[Optional[float], Optional[float]]:
        """``(since, until)`` of the next evaluation (``last_seconds`` back from the newest frame)."""
        if self.spec.last_seconds > 0.0:
            return newest_stamp - self.spec.last_seconds, None
        return None, None

    def skip(self, frames_prefilled: int, stamp: float) -> None:
        """This clip boundary could not be evaluated (e.g. no frame in the window): wait for the next one."""
        self._last_frames = frames_prefilled

    def update(self, p_yes: float, stamp: float, frames_prefilled: int, evidence: Sequence = ()) -> Optional[Edge]:
        """Record one evaluation; the :class:`Edge` when the state changed, else None."""
        self.evaluations += 1
        self._last_frames, self.last_stamp = frames_prefilled, stamp
        self.last_p_yes, self.last_evidence = float(p_yes), list(evidence)
        value = p_yes >= self.spec.threshold
        if value == self.state:
            self._streak = 0
            return None
        self._streak += 1
        if self._streak < self.spec.consecutive:
            return None
        self.state, self._streak = value, 0
        edge = Edge(value, float(stamp), float(p_yes), list(evidence))
        if value and self.first_rise is None:
            self.first_rise = edge
        return edge


def evaluate_due(engine: Any, trackers: Sequence[Any], *, frames_prefilled: int, newest_stamp: Optional[float],
                 tracker_of: Callable[[Any], WatchTracker] = lambda w: w,
                 on_result: Callable[[Any, Any, Optional[Edge]], None] = lambda watch, result, edge: None,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_skip: Callable[[Sequence[Any], Exception], None] = lambda watches, error: None) -> int:
    """One evaluation pass over a stream at a clip boundary; returns the engine evaluations made.

    Every due watch in ``trackers`` (each mapped to its :class:`WatchTracker` by ``tracker_of``)
    is evaluated; watches asking the same condition over the same window share one
    ``engine.evaluate_condition`` call (with the largest evidence count among them). For each
    watch, ``on_result(watch, ConditionResult, edge)`` is called after its tracker was updated
    (``edge``: the :class:`Edge` of that update, or None).
    ``should_stop`` is polled between evaluations (a question arrived: questions come first).
    A condition the engine cannot evaluate now (``InvalidQuestionError`` / ``EmptyMemoryError``,
    e.g. no frame in its window) is skipped until the next clip: ``on_skip(watches, error)``.

    Raises:
        any other error of ``evaluate_condition`` (the caller reports it against the stream's watches).
    """
    if newest_stamp is None:
        return 0
    groups: Dict[Tuple[str, Optional[float], Optional[float]], List[Any]] = {}
    for watch in trackers:
        tracker = tracker_of(watch)
        if tracker.due(frames_prefilled, newest_stamp):
            key = (tracker.spec.condition, *tracker.window(newest_stamp))
            groups.setdefault(key, []).append(watch)
    calls = 0
    for (condition, since, until), members in groups.items():
        if should_stop():
            break
        evidence = max(tracker_of(w).spec.evidence for w in members)
        try:
            result = engine.evaluate_condition(condition, since=since, until=until, evidence=evidence)
        except (InvalidQuestionError, EmptyMemoryError) as exc:
            for watch in members:
                tracker_of(watch).skip(frames_prefilled, newest_stamp)
            on_skip(members, exc)
            continue
        calls += 1
        for watch in members:
            tracker = tracker_of(watch)
            edge = tracker.update(result.p_yes, newest_stamp, frames_prefilled, result.evidence[: tracker.spec.evidence])
            on_result(watch, result, edge)
    return calls
