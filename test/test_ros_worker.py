"""InferenceWorker + StreamRuntime against a fake engine: threading contract, FIFO questions
with bound/timeout/cancel, flush-before-answer, resets, stamp epochs, counters. No ROS graph."""

import threading
import time

import numpy as np
import pytest

from livevlm_ros.engine.config import EngineConfig
from livevlm_ros.engine.errors import EmptyMemoryError, TimestampError
from livevlm_ros.engine.question import AskRequest
from livevlm_ros.engine.results import AskResult, MemoryStats
from livevlm_ros.io.image_codec import ImageDecodeError
from livevlm_ros.io.frame_sampler import FrameSampler, Verdict
from livevlm_ros.ros.parameters import QosSettings, StreamSettings
from livevlm_ros.ros.questions import Question
from ros_helpers import RecordingLog as Log
from livevlm_ros.ros.worker import (
    InferenceWorker,
    QueueFullError,
    QuestionJob,
    ResetJob,
    StreamCounts,
    StreamRuntime,
    WorkerStoppedError,
)

FRAME = np.zeros((4, 4, 3), np.uint8)


#: The node's default answer length in these tests: the fake answers its own ``tokens`` words then.
DEFAULT_TOKENS = 777
ENGINE = EngineConfig(max_new_tokens=DEFAULT_TOKENS)


class FakeStream:
    """Records what the worker does; answers ``tokens`` words, ``token_delay_s`` each."""

    def __init__(self, tokens=3, token_delay_s=0.0, ingest_delay_s=0.0):
        self.tokens, self.token_delay_s, self.ingest_delay_s = tokens, token_delay_s, ingest_delay_s
        self.stamps = []
        self.events = []
        self.threads = set()
        self.asked = []

    def _touch(self):
        self.threads.add(threading.get_ident())

    def ingest(self, frame, t):
        self._touch()
        if self.stamps and t < self.stamps[-1]:
            raise TimestampError(f"{t} < {self.stamps[-1]}")
        time.sleep(self.ingest_delay_s)
        self.stamps.append(t)
        self.events.append(("ingest", t))

    def answer(self, request, *, on_token=None, should_stop=None):
        """The engine's ``answer(AskRequest)``: the worker hands over the validated request."""
        self._touch()
        if not self.stamps:
            raise EmptyMemoryError("no frame yet")
        question, since, until = request.question, request.since, request.until
        self.asked.append(dict(question=question, since=since, until=until, frames=list(self.stamps)))
        self.events.append(("ask", question))
        answer, reason = "", "length"
        for i in range(request.max_new_tokens if request.max_new_tokens != DEFAULT_TOKENS else self.tokens):
            if should_stop is not None and should_stop():
                reason = "cancelled"
                break
            time.sleep(self.token_delay_s)
            answer += f"w{i} "
            if on_token:
                on_token(f"w{i} ")
        return AskResult(answer=answer, ttft_s=0.001, total_s=0.01, frames_seen=len(self.stamps),
                         span_start=self.stamps[0], span_end=self.stamps[-1], memory_tokens=10 * len(self.stamps),
                         context_tokens=1.0, pages_retrieved=2.0, pages_total=4.0, new_tokens=len(answer.split()),
                         stop_reason=reason)

    def reset(self):
        self._touch()
        self.stamps = []
        self.events.append(("reset", None))

    def stats(self):
        self._touch()
        return MemoryStats(tokens=10 * len(self.stamps), budget=100, prefix_tokens=0, long_term_tokens=0,
                           short_term_tokens=0, frames_ingested=len(self.stamps), frames_pending=0,
                           oldest_time=self.stamps[0] if self.stamps else None,
                           newest_time=self.stamps[-1] if self.stamps else None, max_position_id=0,
                           max_position_embeddings=512, device_kv_bytes=0, host_kv_bytes=0)


def runtime(name="front", engine=None, fps=0.0, policy="reset", depth=1):
    settings = StreamSettings(name=name, topic=f"{name}/image", transport="raw", qos=QosSettings())
    return StreamRuntime(settings, engine or FakeStream(), FrameSampler(fps, policy, require_stamps=True), depth)


@pytest.fixture
def make_worker():
    workers = []

    def make(*runtimes, max_queued=4):
        worker = InferenceWorker({rt.name: rt for rt in runtimes}, max_queued=max_queued, logger=Log(),
                                 idle_wait_s=0.05)
        worker.start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        assert worker.stop(timeout=5.0)


def ask(worker, text="q", stream="front", timeout_s=5.0, **kw):
    request = AskRequest.build(text, ENGINE, **{k: v for k, v in kw.items() if k in ("since", "until",
                                                                                      "max_new_tokens")})
    job = QuestionJob(Question(request, stream=stream, timeout_s=timeout_s, last_seconds=kw.get("last_seconds", 0.0)),
                      **{k: v for k, v in kw.items() if k in ("on_token", "cancel_requested")})
    worker.submit(job)
    return job


def feed(rt, worker, stamps):
    for t in stamps:
        rt.offer(t, lambda: FRAME)
        worker.notify()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_only_the_worker_thread_touches_the_engine(make_worker):
    rt = runtime()
    worker = make_worker(rt)
    feed(rt, worker, [1.0, 2.0, 3.0])
    job = ask(worker)
    assert job.wait(5.0) and job.result.success
    worker.submit(ResetJob(None))
    wait_for(lambda: ("reset", None) in rt.engine.events)
    assert rt.engine.threads and threading.get_ident() not in rt.engine.threads
    assert len(rt.engine.threads) == 1


def test_frames_received_before_a_question_are_ingested_before_it_is_answered(make_worker):
    engine = FakeStream(ingest_delay_s=0.02)
    rt = runtime(engine=engine, depth=8)
    worker = make_worker(rt)
    feed(rt, worker, [1.0 + 0.1 * k for k in range(8)])
    job = ask(worker)
    assert job.wait(5.0) and job.result.success
    assert engine.asked[0]["frames"][-1] == pytest.approx(1.7)  # the newest offered frame was in memory


def test_answer_fields_and_latency(make_worker):
    rt = runtime(depth=2)
    worker = make_worker(rt)
    feed(rt, worker, [10.0, 11.0])
    job = ask(worker, max_new_tokens=4)
    assert job.wait(5.0)
    a = job.result
    assert a.success and a.error == "" and a.answer == "w0 w1 w2 w3 " and a.new_tokens == 4
    assert a.result.frames_seen == 2 and (a.result.span_start, a.result.span_end) == (10.0, 11.0)
    assert a.total_latency_s >= a.queue_wait_s >= 0.0


def test_questions_are_answered_fifo_and_the_queue_is_bounded(make_worker):
    engine = FakeStream(tokens=5, token_delay_s=0.02)
    rt = runtime(engine=engine)
    worker = make_worker(rt, max_queued=2)
    feed(rt, worker, [1.0])
    first = ask(worker, "first")
    wait_for(lambda: worker.busy_with is first)
    queued = [ask(worker, "second"), ask(worker, "third")]
    with pytest.raises(QueueFullError, match="max_queued_questions=2"):
        ask(worker, "fourth")
    for job in [first] + queued:
        assert job.wait(5.0) and job.result.success
    assert [q["question"] for q in engine.asked] == ["first", "second", "third"]


def test_a_question_times_out_in_the_queue_without_waiting_for_the_one_ahead(make_worker):
    engine = FakeStream(tokens=100, token_delay_s=0.02)  # ~2 s answer
    rt = runtime(engine=engine)
    worker = make_worker(rt)
    feed(rt, worker, [1.0])
    long = ask(worker, "long")
    wait_for(lambda: worker.busy_with is long)
    short = ask(worker, "short", timeout_s=0.2)
    t0 = time.monotonic()
    while not short.done():
        worker.expire()  # the node calls this every 0.1 s
        time.sleep(0.02)
    assert time.monotonic() - t0 < 1.0
    assert not short.result.success and "timed out after 0.2 s waiting in the queue" in short.result.error
    assert long.wait(5.0) and long.result.success


def test_a_running_answer_stops_at_its_deadline_with_the_partial_answer(make_worker):
    rt = runtime(engine=FakeStream(tokens=1000, token_delay_s=0.01))
    worker = make_worker(rt)
    feed(rt, worker, [1.0])
    job = ask(worker, timeout_s=0.3)
    assert job.wait(5.0)
    a = job.result
    assert not a.success and "timed out after 0.3 s" in a.error and a.answer.startswith("w0 ")
    assert a.result.stop_reason == "cancelled" and not a.cancelled


def test_cancel_while_answering_returns_the_partial_answer(make_worker):
    rt = runtime(engine=FakeStream(tokens=1000, token_delay_s=0.005))
    worker = make_worker(rt)
    feed(rt, worker, [1.0])
    cancel = threading.Event()
    tokens = []

    def on_token(new, partial, n):
        tokens.append((new, partial, n))
        if n == 3:
            cancel.set()

    job = ask(worker, on_token=on_token, cancel_requested=cancel.is_set)
    assert job.wait(5.0)
    a = job.result
    assert a.cancelled and not a.success and a.error == "cancelled"
    assert a.answer == "w0 w1 w2 " and tokens[-1] == ("w2 ", "w0 w1 w2 ", 3)


def test_every_token_is_fed_back_even_when_it_adds_no_text(make_worker):
    """D9, the ROS side of the engine's contract: on_token runs once per generated token, with ""
    while a character is unfinished; each call becomes one feedback with the token count."""

    class UnfinishedCharacters(FakeStream):
        def answer(self, request, *, on_token=None, **kwargs):
            for piece in ("a", "", "", "\u20ac", ""):
                on_token(piece)
            return AskResult(answer="a\u20ac\ufffd", ttft_s=0.001, total_s=0.01, frames_seen=1, span_start=1.0,
                             span_end=1.0, memory_tokens=10, context_tokens=1.0, pages_retrieved=0.0,
                             pages_total=0.0, new_tokens=5, stop_reason="length")

    rt = runtime(engine=UnfinishedCharacters())
    worker = make_worker(rt)
    feed(rt, worker, [1.0])
    feedback = []
    job = ask(worker, on_token=lambda new, partial, n: feedback.append((new, partial, n)))
    assert job.wait(5.0) and job.result.success
    assert feedback == [("a", "a", 1), ("", "a", 2), ("", "a", 3), ("\u20ac", "a\u20ac", 4), ("", "a\u20ac", 5)]
    assert job.result.answer == "a\u20ac\ufffd" and job.result.new_tokens == 5


def test_cancel_while_queued(make_worker):
    rt = runtime(engine=FakeStream(tokens=50, token_delay_s=0.01))
    worker = make_worker(rt)
    feed(rt, worker, [1.0])
    first = ask(worker)
    wait_for(lambda: worker.busy_with is first)
    cancel = threading.Event()
    second = ask(worker, cancel_requested=cancel.is_set)
    cancel.set()
    worker.expire()
    assert second.done() and second.result.cancelled and "cancelled before" in second.result.error


def test_empty_memory_and_engine_errors_are_answers_not_crashes(make_worker):
    rt = runtime()
    worker = make_worker(rt)
    job = ask(worker)
    assert job.wait(5.0)
    assert not job.result.success and "stream front (topic front/image)" in job.result.error
    feed(rt, worker, [1.0])
    job = ask(worker)
    assert job.wait(5.0) and job.result.success  # the worker is still serving


def test_last_seconds_window_is_resolved_against_the_newest_ingested_frame(make_worker):
    rt = runtime()
    worker = make_worker(rt)
    feed(rt, worker, [100.0, 104.0])
    job = ask(worker, last_seconds=3.0)
    assert job.wait(5.0)
    assert rt.engine.asked[0]["since"] == pytest.approx(101.0) and rt.engine.asked[0]["until"] is None


def test_reset_job_clears_one_stream_and_pending_frames(make_worker):
    a, b = runtime("front", depth=4), runtime("rear", depth=4)
    worker = make_worker(a, b)
    feed(a, worker, [1.0, 2.0])
    feed(b, worker, [1.0, 2.0])
    wait_for(lambda: a.ingested == 2 and b.ingested == 2)
    job = ResetJob("front")
    worker.submit(job)
    assert job.wait(5.0) and job.result == ""
    assert a.engine.stamps == [] and b.engine.stamps == [1.0, 2.0]
    # the sampler restarted: an earlier stamp is a fresh start, not a jump back
    feed(a, worker, [0.5])
    wait_for(lambda: a.engine.stamps == [0.5])


def test_reset_starts_the_stream_counters_again_from_zero(make_worker):
    """D5: StreamStatus counts since configure or the stream's last ~/reset."""
    a, b = runtime("front", depth=4), runtime("rear", depth=4)
    worker = make_worker(a, b)
    a.offer(0.0, lambda: FRAME)  # rejected: header stamp zero
    feed(a, worker, [1.0, 2.0, 3.0])
    feed(b, worker, [1.0, 2.0])
    wait_for(lambda: a.counts().ingested == 3 and b.counts().ingested == 2)
    assert a.counts().received == 4 and a.counts().rejected == 1 and a.rate.rate_hz() > 0
    job = ResetJob("front")
    worker.submit(job)
    assert job.wait(5.0) and job.result == ""
    assert a.counts() == StreamCounts(received=0, sampled=0, ingested=0, dropped=0, rejected=0, queue_depth=0)
    assert a.rate.rate_hz() == 0.0
    assert b.counts().received == 2 and b.counts().ingested == 2  # the other stream keeps counting
    feed(a, worker, [0.5])
    wait_for(lambda: a.counts().ingested == 1)
    assert a.counts() == StreamCounts(received=1, sampled=1, ingested=1, dropped=0, rejected=0, queue_depth=0)


def test_stamps_going_back_reset_the_memory_under_policy_reset(make_worker):
    rt = runtime(depth=8)
    worker = make_worker(rt)
    feed(rt, worker, [10.0, 11.0, 12.0])
    wait_for(lambda: rt.ingested == 3)
    offer = rt.offer(10.5, lambda: FRAME)  # the bag loops
    assert offer.verdict is Verdict.KEEP and offer.new_epoch and "went back" in offer.reason
    worker.notify()
    wait_for(lambda: rt.engine.stamps == [10.5])
    assert rt.rejected == 0 and ("reset", None) in rt.engine.events


def test_stamps_going_back_are_rejected_under_policy_reject(make_worker):
    rt = runtime(policy="reject")
    worker = make_worker(rt)
    feed(rt, worker, [10.0, 11.0])
    offer = rt.offer(10.5, lambda: FRAME)
    assert offer.verdict is Verdict.REJECT and rt.rejected == 1


def test_bad_images_are_rejected_in_the_callback_and_never_reach_the_engine(make_worker):
    rt = runtime()
    worker = make_worker(rt)

    def corrupt():
        raise ImageDecodeError("corrupt JPEG")

    offer = rt.offer(1.0, corrupt)
    assert offer.verdict is Verdict.REJECT and "corrupt JPEG" in offer.reason
    # the failed frame did not advance the sampler: the next good one with the same stamp is kept
    assert rt.offer(1.0, lambda: FRAME).verdict is Verdict.KEEP
    worker.notify()
    wait_for(lambda: rt.ingested == 1)
    assert rt.rejected == 1 and rt.received == 2 and rt.sampled == 1


def test_overload_drops_old_frames_and_counters_add_up(make_worker):
    engine = FakeStream(ingest_delay_s=0.03)  # ~33 frames/s at most
    rt = runtime(engine=engine)
    worker = make_worker(rt)
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < 0.6:  # 200 Hz camera
        rt.offer(1.0 + 0.005 * k, lambda: FRAME)
        worker.notify()
        k += 1
        c = rt.counts()  # every snapshot adds up, even with a frame being ingested right now
        assert c.sampled == c.ingested + c.dropped + c.queue_depth
        time.sleep(0.005)
    wait_for(lambda: rt.counts().queue_depth == 0)
    c = rt.counts()
    assert c.dropped > 0
    assert c.received == k and c.sampled == k and c.rejected == 0
    assert c.sampled == c.ingested + c.dropped
    # the newest frame was ingested: latest wins
    assert engine.stamps[-1] == pytest.approx(1.0 + 0.005 * (k - 1))


def test_two_streams_are_ingested_round_robin(make_worker):
    a, b = runtime("front", depth=4), runtime("rear", depth=4)
    b.engine.events = a.engine.events  # one shared record of the worker's engine calls
    for k in range(4):
        a.offer(1.0 + k, lambda: FRAME)
        b.offer(1.0 + k, lambda: FRAME)
    make_worker(a, b)
    wait_for(lambda: a.ingested == 4 and b.ingested == 4)
    # one frame of each stream per round: stamps 1, 1, 2, 2, ... (never all of one stream first)
    assert [t for _kind, t in a.engine.events] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]


def test_stop_fails_queued_jobs_and_refuses_new_ones():
    rt = runtime(engine=FakeStream(tokens=10_000, token_delay_s=0.001))
    worker = InferenceWorker({"front": rt}, max_queued=4, logger=Log(), idle_wait_s=0.05)
    worker.start()
    feed(rt, worker, [1.0])
    running = ask(worker)
    wait_for(lambda: worker.busy_with is running)
    queued = ask(worker)
    assert worker.stop(timeout=5.0)
    assert running.done() and "shutting down" in running.result.error
    assert queued.done() and "shutting down" in queued.result.error
    with pytest.raises(WorkerStoppedError):
        ask(worker)


def test_done_callbacks_run_once_even_when_added_late():
    job = ResetJob(None)
    seen = []
    job.add_done_callback(lambda j: seen.append(("early", j.result)))
    assert job.finish("") and not job.finish("again")
    job.add_done_callback(lambda j: seen.append(("late", j.result)))
    assert seen == [("early", ""), ("late", "")]
