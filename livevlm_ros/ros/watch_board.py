"""The node's running watches, evaluated by the inference worker between ingest and questions.

Concurrency (see :mod:`livevlm_ros.ros.worker`): the action handler :meth:`WatchBoard.add`\\ s a
:class:`WatchJob` and awaits its completion; only the worker thread evaluates (inside
:meth:`WatchBoard.run_pass`, called after an ingest round when no question waits); the node's
periodic sweep (:meth:`WatchBoard.expire`) finishes cancelled watches at once, even while the
worker is busy. Every job is finished exactly once (the first :meth:`Job.finish` wins), so a
watch cancelled during an evaluation is not reported after its cancel.

Pure Python (no rclpy): tested with a fake engine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from .watches import Edge, WatchSpec, WatchTracker, evaluate_due
from .worker import Clock, Job

__all__ = ["WatchLimitError", "WatchOutcome", "WatchFeedback", "WatchJob", "WatchBoard"]


class WatchLimitError(RuntimeError):
    """``max_watches`` watches are already running."""


@dataclass(frozen=True)
class WatchFeedback:
    """One evaluation of a watch (the action feedback): ``stamp`` (s), ``p_yes``, the ``state`` after it."""

    stamp: float
    p_yes: float
    state: bool
    evaluations: int


@dataclass
class WatchOutcome:
    """How a watch ended (maps onto the Watch action result).

    Attributes:
        fired: the state rose at least once. stamp: stream time (s) of the first rise (None: never).
        p_yes: of the evaluation that fired, else of the last one. evidence: that evaluation's evidence frames.
        evaluations: evaluations made. error: why it stopped early or was refused (empty: fired / cancelled).
        cancelled: the caller cancelled it.
    """

    fired: bool = False
    stamp: Optional[float] = None
    p_yes: float = 0.0
    evidence: list = field(default_factory=list)
    evaluations: int = 0
    error: str = ""
    cancelled: bool = False


class WatchJob(Job):
    """One running watch.

    Args:
        watch_id: the goal id (hex), reported in every event.
        spec: the validated watch.
        on_feedback: ``on_feedback(WatchFeedback)`` after each evaluation (worker thread).
        on_edge: ``on_edge(WatchJob, Edge)`` for every rising and falling edge (worker thread).
        cancel_requested: polled before each evaluation and by :meth:`WatchBoard.expire`.
    """

    def __init__(self, watch_id: str, spec: WatchSpec, *, on_feedback: Callable[[WatchFeedback], None] = lambda f: None,
                 on_edge: Callable[["WatchJob", Edge], None] = lambda job, edge: None,
                 cancel_requested: Callable[[], bool] = lambda: False, clock: Clock = time.monotonic) -> None:
        super().__init__(clock)
        self.watch_id = watch_id
        self.spec = spec
        self.tracker = WatchTracker(spec)
        self.on_feedback, self.on_edge, self.cancel_requested = on_feedback, on_edge, cancel_requested

    def outcome(self, *, error: str = "", cancelled: bool = False) -> WatchOutcome:
        """The result now: the first rise if it fired, else the newest evaluation."""
        t, rise = self.tracker, self.tracker.first_rise
        return WatchOutcome(fired=rise is not None, stamp=rise.stamp if rise else None,
                            p_yes=rise.p_yes if rise else t.last_p_yes,
                            evidence=list(rise.evidence if rise else t.last_evidence),
                            evaluations=t.evaluations, error=error, cancelled=cancelled)

    def end(self, *, error: str = "", cancelled: bool = False) -> bool:
        return self.finish(self.outcome(error=error, cancelled=cancelled))


class WatchBoard:
    """The running watches of every stream, bounded by ``max_watches``.

    Args:
        max_watches: most watches at once (all streams); more are refused with :class:`WatchLimitError`.
        logger: rclpy-style logger.
    """

    WARN_THROTTLE_S = 5.0

    def __init__(self, max_watches: int, logger: Any) -> None:
        self.max_watches = int(max_watches)
        self._log = logger
        self._lock = threading.Lock()
        self._jobs: Dict[str, WatchJob] = {}

    def add(self, job: WatchJob) -> None:
        """Start a watch (finished and removed when it fires, is cancelled, or the worker stops).

        Raises:
            WatchLimitError: ``max_watches`` already run.
        """
        with self._lock:
            live = [j for j in self._jobs.values() if not j.done()]
            if len(live) >= self.max_watches:
                raise WatchLimitError(
                    f"too many watches: {len(live)} already running (max_watches={self.max_watches}); "
                    "cancel one first")
            self._jobs[job.watch_id] = job
        job.add_done_callback(self._remove)

    def _remove(self, job: Job) -> None:
        with self._lock:
            if self._jobs.get(job.watch_id) is job:
                del self._jobs[job.watch_id]

    def jobs(self, stream: Optional[str] = None) -> List[WatchJob]:
        """The running watches (of one stream)."""
        with self._lock:
            return [j for j in self._jobs.values() if not j.done() and (stream is None or j.spec.stream == stream)]

    def count(self, stream: Optional[str] = None) -> int:
        return len(self.jobs(stream))

    def expire(self) -> int:
        """Finish the watches whose cancel was requested (at once, whatever the worker does); returns how many."""
        ended = 0
        for job in self.jobs():
            if job.cancel_requested() and job.end(cancelled=True):
                ended += 1
        return ended

    def stop_all(self, error: str) -> None:
        for job in self.jobs():
            job.end(error=error)

    def run_pass(self, streams: Mapping[str, Any], should_stop: Callable[[], bool]) -> bool:
        """Worker thread: evaluate the due watches of every stream at its clip boundary; True if any ran."""
        self.expire()
        worked = False
        for name, rt in streams.items():
            jobs = self.jobs(name)
            st = rt.stats
            if not jobs or st is None or st.frames_pending or should_stop():
                continue
            def skipped(_jobs, exc, name=name) -> None:  # e.g. no frame in a last_seconds window yet
                self._log.warning(f"stream {name}: watch evaluation skipped: {exc}",
                                  throttle_duration_sec=self.WARN_THROTTLE_S)

            try:
                calls = evaluate_due(rt.engine, jobs, frames_prefilled=st.frames_ingested,
                                     newest_stamp=rt.newest_ingested_stamp, tracker_of=lambda j: j.tracker,
                                     on_result=self._report, should_stop=should_stop, on_skip=skipped)
            except Exception as exc:  # a failing model call ends the stream's watches, with the reason
                self._log.error(f"stream {name}: watch evaluation failed: {exc!r}")
                for job in jobs:
                    job.end(error=f"internal error while evaluating: {exc!r}")
                calls = 1
            worked = worked or calls > 0
        return worked

    def _report(self, job: WatchJob, result: Any, edge: Optional[Edge]) -> None:
        if job.done():  # cancelled meanwhile: nothing more is reported
            return
        t = job.tracker
        try:
            job.on_feedback(WatchFeedback(t.last_stamp or 0.0, t.last_p_yes, t.state, t.evaluations))
            if edge is not None:
                job.on_edge(job, edge)
        except Exception as exc:  # a feedback failure must not stop the other watches
            self._log.warning(f"watch feedback failed: {exc!r}", throttle_duration_sec=self.WARN_THROTTLE_S)
        if edge is not None and edge.state and not job.spec.continuous:
            job.end()
