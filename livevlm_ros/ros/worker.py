"""The single thread that owns the model: frame ingest round-robin and FIFO questions.

Concurrency contract (the node relies on it):

* Only the worker thread calls the engine (``LiveVLMStream.ingest/ask/reset/stats`` and the
  model they share). Image callbacks, service/action handlers and timers never do.
* Image callbacks call :meth:`StreamRuntime.offer`: sample by header stamp, decode, put into a
  latest-wins slot, return. They hold only the stream's own short lock (never taken by the
  engine), so a busy model never blocks them.
* Service/action handlers :meth:`InferenceWorker.submit` a job and wait for its completion
  callback. Questions queue FIFO behind at most ``max_queued`` others (more are refused at
  once) and are finished with a timeout error when their deadline passes while they wait
  (:meth:`InferenceWorker.expire`, called periodically) or while they are answered
  (``should_stop`` is polled per token).
* Before a question about stream S is answered, every frame pending in S's slot is ingested,
  so frames received before the question are part of the answer.
* Timers read counters (plain ints, each written by one thread) and the latest
  :class:`MemoryStats` snapshot the worker stores after each engine call.
* With a :class:`~livevlm_ros.ros.memory_store.MemoryStore`, the worker takes the periodic memory
  snapshots itself (after an ingest, at a clip boundary: a device-to-host copy) and the store's
  writer thread writes them; a ``~/reset`` also deletes the stream's checkpoint.
* :meth:`InferenceWorker.stop` finishes every question at once, queued or being answered (with an
  error), so no caller waits for the thread to reach its next token.
* Watches (:mod:`livevlm_ros.ros.watch_board`) are evaluated by this thread too: after an
  ingest round, at a clip boundary, only when no question waits, at most once per clip each.
* After each clip and answer the worker stores a :meth:`LiveVLMStream.timeline` snapshot
  (:attr:`StreamRuntime.timeline`) and trims the stream's thumbnail ring; the node's memory view
  is drawn from that snapshot in a timer thread, never from the engine.

Pure Python: the engine streams are injected (anything with ``ingest/ask/reset/stats``), so
this module is tested with a fake engine and no ROS graph.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional

import numpy as np

from livevlm_ros.engine.errors import (
    EmptyMemoryError,
    InvalidFrameError,
    InvalidQuestionError,
    TimestampError,
)
from livevlm_ros.engine.results import AskResult, MemoryStats
from livevlm_ros.io.frame_sampler import FrameSampler, Verdict
from livevlm_ros.io.image_codec import ImageDecodeError
from livevlm_ros.io.thumbnails import Thumbnail, ThumbnailRing, encode_thumbnail

from .latest_frame_slot import LatestFrameSlot
from .parameters import StreamSettings
from .questions import Question, resolve_request
from .status import RateMeter

__all__ = [
    "FrameItem",
    "Offer",
    "StreamCounts",
    "StreamRuntime",
    "Answer",
    "Job",
    "QuestionJob",
    "ResetJob",
    "QueueFullError",
    "WorkerStoppedError",
    "InferenceWorker",
]

Clock = Callable[[], float]


# ============================================================================ frames
@dataclass
class FrameItem:
    """A sampled, decoded frame waiting for the worker.

    Attributes:
        frame: RGB uint8 (H, W, 3).
        stamp_s: header stamp (s).
        epoch: the sampler's timeline number (a new one means: reset the memory first).
        received_at: monotonic time (s) the callback got it (for in-node latency).
        thumbnail: its JPEG thumbnail (encoded in the callback, off the worker), when the stream keeps them.
    """

    frame: np.ndarray
    stamp_s: float
    epoch: int
    received_at: float
    thumbnail: Optional[bytes] = None


@dataclass(frozen=True)
class Offer:
    """What :meth:`StreamRuntime.offer` did with a message.

    Attributes:
        verdict: keep (queued), skip (rate) or reject (bad stamp or image).
        reason: why it was rejected, or that a new timeline started; empty otherwise.
        dropped: True when queuing it overwrote an older pending frame.
    """

    verdict: Verdict
    reason: str = ""
    dropped: bool = False
    new_epoch: bool = False


@dataclass(frozen=True)
class StreamCounts:
    """A consistent snapshot of one stream's frame counters (taken under the stream's lock).

    Attributes:
        received: messages that arrived.
        sampled: frames kept by the stamp sampler and decoded (handed towards the engine).
        ingested: frames the engine took into memory.
        dropped: sampled frames overwritten in the latest-wins slot (or cleared by a reset).
        rejected: bad stamps or images, and frames the engine refused.
        queue_depth: sampled frames not yet ingested: waiting, or being ingested right now.

    Invariant: ``sampled == ingested + dropped + queue_depth + rejected_by_engine``, where the
    last term (frames the engine refused after decoding) is 0 unless the engine reports errors.
    """

    received: int
    sampled: int
    ingested: int
    dropped: int
    rejected: int
    queue_depth: int


class StreamRuntime:
    """Everything the node keeps for one camera stream.

    The engine stream is touched only by the worker. Counters change under :attr:`lock`, which
    every holder keeps for O(1) work only (never while decoding or calling the engine), so
    :meth:`counts` is a consistent snapshot and nobody waits on the model.

    Args:
        settings: the stream's name, topic, transport, QoS.
        engine: a ``LiveVLMStream`` (or a fake with ``ingest/ask/reset/stats``).
        sampler: the stream's :class:`FrameSampler`.
        queue_depth: depth of the latest-wins slot.
        clock: monotonic clock (s).
        thumbnails: the stream's ring of evidence thumbnails (None: keep none).
        track_memory: after each clip and answer, keep a :meth:`LiveVLMStream.timeline` snapshot in
            :attr:`timeline` (for the memory view; the engine must have ``timeline()``).
    """

    def __init__(self, settings: StreamSettings, engine: Any, sampler: FrameSampler, queue_depth: int = 1,
                 clock: Clock = time.monotonic, *, thumbnails: Optional[ThumbnailRing] = None,
                 track_memory: bool = False) -> None:
        self.settings = settings
        self.name = settings.name
        self.topic = settings.topic  # the node replaces it with the resolved (remapped) name
        self.engine = engine
        self.sampler = sampler
        self.slot: LatestFrameSlot[FrameItem] = LatestFrameSlot(queue_depth)
        self.lock = threading.Lock()
        self.clock = clock
        self.received = 0
        self.sampled = 0
        self.rejected_input = 0
        self.ingested = 0
        self.rejected_ingest = 0
        self.in_flight = 0  # taken from the slot by the worker, not yet counted as ingested/rejected
        self.engine_epoch = sampler.epoch
        self.newest_ingested_stamp: Optional[float] = None
        self.stats: Optional[MemoryStats] = None
        self.rate = RateMeter(clock=clock)
        self.thumbnails = thumbnails
        self.track_memory = track_memory or thumbnails is not None
        self.frame_id = ""  # header frame_id of the stream's images (set by the node's decoder)
        self.timeline: Any = None  # the newest Timeline snapshot (replaced whole: safe to read from any thread)
        self.last_evidence_times: List[float] = []

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    @property
    def rejected(self) -> int:
        return self.rejected_input + self.rejected_ingest

    def counts(self) -> StreamCounts:
        with self.lock:
            return StreamCounts(self.received, self.sampled, self.ingested, self.slot.dropped, self.rejected,
                                len(self.slot) + self.in_flight)

    # ---------------------------------------------------------------- callback side
    def offer(self, stamp_s: float, decode: Callable[[], np.ndarray]) -> Offer:
        """Sample a message stamped ``stamp_s``; if kept, ``decode()`` it and queue it.

        Called from the stream's image callback; never waits on the engine. ``decode`` raises
        ``ImageDecodeError`` (or ``ValueError``) for a bad image, which rejects the frame and
        leaves the sampler as it was (the next good frame is not delayed).
        """
        with self.lock:
            self.received += 1
            decision = self.sampler.evaluate(stamp_s)
            if decision.verdict is Verdict.REJECT:
                self.rejected_input += 1
        if decision.verdict is Verdict.SKIP:
            return Offer(Verdict.SKIP)
        if decision.verdict is Verdict.REJECT:
            return Offer(Verdict.REJECT, decision.reason)
        try:
            frame = decode()  # the CPU work, outside the lock
            thumbnail = None if self.thumbnails is None else encode_thumbnail(
                frame, self.thumbnails.side, self.thumbnails.quality)
        except (ImageDecodeError, ValueError) as exc:
            with self.lock:
                self.rejected_input += 1
            return Offer(Verdict.REJECT, str(exc))
        with self.lock:
            # Evaluated again: a reset may have restarted the sampler while this frame was decoded.
            decision = self.sampler.evaluate(stamp_s)
            if not decision.keep:
                return Offer(decision.verdict, decision.reason)
            self.sampler.commit(decision)
            self.sampled += 1
            evicted = self.slot.put(FrameItem(frame, stamp_s, decision.epoch, self.clock(), thumbnail))
        return Offer(Verdict.KEEP, decision.reason, dropped=evicted is not None,
                     new_epoch=decision.starts_new_epoch)

    def reject_unreadable(self) -> None:
        """Count a message whose header could not even be read."""
        with self.lock:
            self.received += 1
            self.rejected_input += 1

    # ---------------------------------------------------------------- worker side
    def take(self, every: bool = False) -> List[FrameItem]:
        """The oldest pending frame (or every one), counted in flight until :meth:`done`."""
        with self.lock:
            items = self.slot.take_all() if every else [item for item in (self.slot.take(),) if item is not None]
            self.in_flight += len(items)
            return items

    def done(self, item: FrameItem, ingested: bool) -> None:
        """Count a taken frame as ingested (or refused by the engine)."""
        with self.lock:
            self.in_flight -= 1
            if ingested:
                self.ingested += 1
                self.newest_ingested_stamp = item.stamp_s
            else:
                self.rejected_ingest += 1
        if ingested:
            self.rate.tick()

    def restart(self) -> None:
        """A ``~/reset`` of this stream, before the engine's: forget pending frames, restart the
        sampler (a new epoch) and zero the counters, which count since configure or the last
        reset (``StreamStatus``). Called by the worker thread, so no frame is in flight."""
        with self.lock:
            self.sampler.reset()
            self.slot.reset()
            self.engine_epoch = self.sampler.epoch
            self.newest_ingested_stamp = None
            self.received = self.sampled = self.rejected_input = self.ingested = self.rejected_ingest = 0
        self.rate.reset()

    def refresh_stats(self) -> None:
        self.stats = self.engine.stats()

    def next_frame_index(self) -> int:
        """The engine's index of the next frame ingested (frames since its last reset); needs fresh stats."""
        st = self.stats
        return 0 if st is None else st.frames_ingested + st.frames_pending

    def forget_memory(self) -> None:
        """After the engine's memory was reset: fresh stats, no thumbnails, an empty timeline."""
        if self.thumbnails is not None:
            self.thumbnails.clear()
        self.last_evidence_times = []
        self.refresh_stats()
        self.snapshot_memory()

    def snapshot_memory(self) -> None:
        """Worker thread, after a clip or an answer: keep the memory's timeline for the memory view and
        forget the thumbnails of frames whose tokens are all gone (a CPU copy of the token stamps)."""
        if not self.track_memory:
            return
        timeline = self.engine.timeline()
        if self.thumbnails is not None:
            self.thumbnails.retain_timeline(timeline.token_times, self.stats.frames_ingested if self.stats else 0)
        self.timeline = timeline


# ============================================================================ jobs
@dataclass
class Answer:
    """The outcome of one question (maps onto the Ask response / action result).

    Attributes:
        success: True when ``result`` holds a complete answer.
        error: why not successful; empty otherwise.
        result: the engine's :class:`AskResult` (also for an answer cut short by a cancel or timeout);
            None when the question never reached the engine.
        partial: the text fed back so far, for a question that ended without a result.
        total_latency_s: request arrival to answer done (s), queue wait included.
        queue_wait_s: request arrival to the worker starting it (s).
        cancelled: the caller cancelled it.
    """

    success: bool
    error: str = ""
    result: Optional[AskResult] = None
    partial: str = ""
    total_latency_s: float = 0.0
    queue_wait_s: float = 0.0
    cancelled: bool = False

    @property
    def answer(self) -> str:
        """The answer text (partial when cancelled or timed out)."""
        return self.result.answer if self.result is not None else self.partial

    @property
    def new_tokens(self) -> int:
        return self.result.new_tokens if self.result is not None else 0


class Job:
    """A unit of work for the worker, finished exactly once (first :meth:`finish` wins)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.created_at = clock()
        self.result: Any = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._callbacks: List[Callable[["Job"], None]] = []

    def finish(self, result: Any) -> bool:
        """Set the result and run the done callbacks; False if it was already finished."""
        with self._lock:
            if self._done.is_set():
                return False
            self.result = result
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)
        return True

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    def add_done_callback(self, callback: Callable[["Job"], None]) -> None:
        """Call ``callback(job)`` when finished (at once, in this thread, if it already is)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)


class QuestionJob(Job):
    """A question to answer.

    Args:
        question: the validated question (its ``timeout_s`` sets the deadline).
        on_token: ``on_token(new_text, partial_answer, tokens_generated)`` per decoded token,
            called from the worker thread.
        cancel_requested: polled while waiting and per token; True cancels.
    """

    def __init__(self, question: Question, *, on_token: Optional[Callable[[str, str, int], None]] = None,
                 cancel_requested: Callable[[], bool] = lambda: False, clock: Clock = time.monotonic) -> None:
        super().__init__(clock)
        self.question = question
        self.deadline = self.created_at + question.timeout_s
        self.on_token = on_token
        self.cancel_requested = cancel_requested
        self.partial = ""
        self.tokens = 0

    def fail(self, error: str, *, cancelled: bool = False, result: Optional[AskResult] = None,
             queue_wait_s: float = 0.0) -> bool:
        now = self.clock()
        return self.finish(Answer(False, error=error, result=result, partial=self.partial, cancelled=cancelled,
                                  total_latency_s=now - self.created_at, queue_wait_s=queue_wait_s))


class ResetJob(Job):
    """Forget the memory of one stream (``stream``) or of every stream (``None``).

    Its result is an error message, empty on success.
    """

    def __init__(self, stream: Optional[str], clock: Clock = time.monotonic) -> None:
        super().__init__(clock)
        self.stream = stream


class QueueFullError(RuntimeError):
    """``max_queued`` questions are already waiting."""


class WorkerStoppedError(RuntimeError):
    """The worker is not running (node inactive or shutting down)."""


# ============================================================================ worker
class InferenceWorker:
    """Owns the engine streams; ingests frames round-robin and serves jobs FIFO.

    Args:
        streams: ``{name: StreamRuntime}``; the first is the default stream.
        max_queued: questions that may wait behind the one being answered.
        logger: rclpy-style logger (``info/warning/error`` accepting ``throttle_duration_sec``).
        clock: monotonic clock (s).
        idle_wait_s: longest sleep when there is nothing to do (s).
        store: where the memory is checkpointed (:class:`~livevlm_ros.ros.memory_store.MemoryStore`), or None.
        watches: the standing conditions (a :class:`~livevlm_ros.ros.watch_board.WatchBoard`, or None):
            after each ingest round with no question waiting, ``watches.run_pass(streams, stop)``
            evaluates the due ones (questions first; watches are due at most once per clip, so they
            never starve ingest); :meth:`stop` ends them.
    """

    WARN_THROTTLE_S = 5.0

    def __init__(self, streams: Mapping[str, StreamRuntime], *, max_queued: int, logger: Any,
                 clock: Clock = time.monotonic, idle_wait_s: float = 0.5, store: Any = None,
                 watches: Any = None) -> None:
        self.streams: Dict[str, StreamRuntime] = dict(streams)
        self.max_queued = int(max_queued)
        self._log = logger
        self._clock = clock
        self._idle_wait_s = idle_wait_s
        self.store = store
        self._jobs: Deque[Job] = deque()
        self._cond = threading.Condition()
        self._wake = False
        self._running = False
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._rr = 0
        self.busy_with: Optional[Job] = None
        self.watches = watches

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._running = True
        self._thread = threading.Thread(target=self._run, name="livevlm_worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread; fail queued jobs and the question being answered at once (its generation
        stops at the next token, its late result is dropped).

        Returns False if the thread did not end within ``timeout`` s.
        """
        with self._cond:
            self._running = False
            self._stopping = True
            pending = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        running = self.busy_with
        if isinstance(running, QuestionJob):
            pending.append(running)
        for job in pending:
            self._refuse(job, "the node is shutting down or deactivating")
        if self.watches is not None:
            self.watches.stop_all("the node is shutting down or deactivating")
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._running

    # ---------------------------------------------------------------- producers
    def notify(self) -> None:
        """New frames are pending (called by image callbacks; O(1), never waits on the engine)."""
        with self._cond:
            self._wake = True
            self._cond.notify()

    def submit(self, job: Job) -> None:
        """Queue a job (FIFO).

        Raises:
            WorkerStoppedError: not running.
            QueueFullError: ``max_queued`` questions are already waiting (questions only).
        """
        with self._cond:
            if not self._running:
                raise WorkerStoppedError("the node is not active")
            if isinstance(job, QuestionJob):
                waiting = sum(isinstance(j, QuestionJob) for j in self._jobs)
                if waiting >= self.max_queued:
                    raise QueueFullError(
                        f"busy: {waiting} question(s) already waiting (max_queued_questions={self.max_queued}); "
                        "try again later")
            self._jobs.append(job)
            self._wake = True
            self._cond.notify()

    def _question_waiting(self) -> bool:
        """A question waits (watch passes stop for it), or the worker is stopping."""
        return self._stopping or self.queued_questions() > 0

    def queued_questions(self) -> int:
        with self._cond:
            return sum(isinstance(j, QuestionJob) for j in self._jobs)

    def expire(self) -> int:
        """Finish waiting questions that were cancelled or ran past their deadline; returns how many."""
        now = self._clock()
        expired = []
        with self._cond:
            keep: Deque[Job] = deque()
            for job in self._jobs:
                if isinstance(job, QuestionJob) and (job.cancel_requested() or now > job.deadline or job.done()):
                    expired.append(job)
                else:
                    keep.append(job)
            self._jobs = keep
        for job in expired:
            self._finish_unstarted(job, now)
        return len(expired)

    # ---------------------------------------------------------------- the thread
    def _run(self) -> None:
        for rt in self.streams.values():
            rt.refresh_stats()
            rt.snapshot_memory()  # a memory kept from before (deactivate / a restored checkpoint) shows at once
        while True:
            with self._cond:
                if self._stopping:
                    break
                job = self._jobs.popleft() if self._jobs else None
            try:
                worked = False
                if job is not None:
                    self._serve(job)
                    worked = True
                worked = self._ingest_round() or worked
                if self.watches is not None and not self.queued_questions():
                    worked = self.watches.run_pass(self.streams, self._question_waiting) or worked
            except Exception as exc:  # never let the worker die silently
                self._log.error(f"worker: unexpected error: {exc!r}")
                worked = True
                if job is not None and not job.done():
                    self._refuse(job, f"internal error: {exc!r}")
            if not worked:
                with self._cond:
                    if not self._wake and not self._jobs and not self._stopping:
                        self._cond.wait(self._idle_wait_s)
                    self._wake = False

    def _ingest_round(self) -> bool:
        """Ingest at most one pending frame of each stream, starting after last round's first."""
        names = list(self.streams)
        worked = False
        for k in range(len(names)):
            rt = self.streams[names[(self._rr + k) % len(names)]]
            for item in rt.take():
                self._ingest(rt, item)
                worked = True
        self._rr = (self._rr + 1) % max(1, len(names))
        return worked

    def _ingest(self, rt: StreamRuntime, item: FrameItem) -> None:
        if item.epoch != rt.engine_epoch:
            rt.engine.reset()
            rt.forget_memory()
            rt.engine_epoch = item.epoch
            self._log.info(f"stream {rt.name}: header stamps jumped back to {item.stamp_s:.3f} s: memory cleared "
                           "(timestamp_jump_policy reset)")
        ok = False
        if rt.stats is None:
            rt.refresh_stats()
        index = rt.next_frame_index()
        frames_before = rt.stats.frames_ingested if rt.stats is not None else 0
        try:
            rt.engine.ingest(item.frame, item.stamp_s)
            ok = True
            if rt.thumbnails is not None and item.thumbnail is not None:
                rt.thumbnails.put(Thumbnail(index, item.stamp_s, item.thumbnail))
        except (InvalidFrameError, TimestampError) as exc:
            self._log.warning(f"stream {rt.name}: frame stamped {item.stamp_s:.3f} s refused by the engine: {exc}",
                              throttle_duration_sec=self.WARN_THROTTLE_S)
        except Exception as exc:  # e.g. CUDA out of memory while prefilling a clip
            self._log.error(f"stream {rt.name}: ingest failed: {exc!r}", throttle_duration_sec=self.WARN_THROTTLE_S)
        finally:
            rt.done(item, ok)
        rt.refresh_stats()
        if rt.stats is not None and rt.stats.frames_ingested != frames_before:  # a clip was prefilled
            rt.snapshot_memory()
        if ok and self.store is not None:
            try:
                self.store.after_ingest(rt, item.stamp_s)
            except Exception as exc:  # a failed snapshot must not stop the ingest
                self._log.error(f"stream {rt.name}: memory checkpoint failed: {exc!r}",
                                throttle_duration_sec=self.WARN_THROTTLE_S)

    def _serve(self, job: Job) -> None:
        self.busy_with = job
        try:
            if isinstance(job, QuestionJob):
                self._answer(job)
            elif isinstance(job, ResetJob):
                self._reset(job)
        finally:
            self.busy_with = None

    def _reset(self, job: ResetJob) -> None:
        names = list(self.streams) if job.stream is None else [job.stream]
        for name in names:
            rt = self.streams[name]
            rt.restart()
            rt.engine.reset()
            rt.forget_memory()
            if self.store is not None and not self.store.clear(name):
                job.finish(f"stream {name}: memory cleared, but its checkpoint could not be deleted in time")
                return
        job.finish("")

    def _finish_unstarted(self, job: QuestionJob, now: float) -> None:
        if job.cancel_requested():
            job.fail("cancelled before it was answered", cancelled=True, queue_wait_s=now - job.created_at)
        else:
            job.fail(f"timed out after {job.question.timeout_s:g} s waiting in the queue "
                     "(raise timeout_s / ask_timeout_s, or ask less often)", queue_wait_s=now - job.created_at)

    def _answer(self, job: QuestionJob) -> None:
        started = self._clock()
        if job.done():
            return
        if job.cancel_requested() or started > job.deadline:
            self._finish_unstarted(job, started)
            return
        q = job.question
        rt = self.streams[q.stream]
        for item in rt.take(every=True):  # frames received before the question are part of it
            self._ingest(rt, item)
        def on_token(piece: str) -> None:
            job.partial += piece
            job.tokens += 1
            if job.on_token is not None:
                try:
                    job.on_token(piece, job.partial, job.tokens)
                except Exception as exc:  # a feedback failure must not lose the answer
                    self._log.warning(f"token feedback failed: {exc!r}", throttle_duration_sec=self.WARN_THROTTLE_S)

        def should_stop() -> bool:
            return self._stopping or job.cancel_requested() or self._clock() > job.deadline

        wait = started - job.created_at
        try:
            request = resolve_request(q, rt.newest_ingested_stamp)
            result: AskResult = rt.engine.answer(request, on_token=on_token, should_stop=should_stop)
        except InvalidQuestionError as exc:
            job.fail(f"invalid question: {exc}", queue_wait_s=wait)
            return
        except EmptyMemoryError as exc:
            job.fail(f"nothing to answer from on stream {rt.name} (topic {rt.topic}): {exc}",
                     queue_wait_s=wait)
            return
        except Exception as exc:
            self._log.error(f"stream {rt.name}: answering failed: {exc!r}")
            job.fail(f"internal error while answering: {exc!r}", queue_wait_s=wait)
            return
        finally:
            rt.refresh_stats()
        rt.last_evidence_times = [e.time for e in result.evidence]
        rt.snapshot_memory()
        if result.stop_reason == "cancelled":
            if job.cancel_requested():
                job.fail("cancelled", cancelled=True, result=result, queue_wait_s=wait)
            elif self._stopping:
                job.fail("the node is shutting down or deactivating", result=result, queue_wait_s=wait)
            else:
                job.fail(f"timed out after {q.timeout_s:g} s (partial answer)", result=result, queue_wait_s=wait)
            return
        job.finish(Answer(True, result=result, total_latency_s=self._clock() - job.created_at, queue_wait_s=wait))

    def _refuse(self, job: Job, error: str) -> None:
        if isinstance(job, QuestionJob):
            job.fail(error)
        else:
            job.finish(error)
