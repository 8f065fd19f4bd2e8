"""Watches without a ROS graph: goal validation, the edge state machine, shared evaluation passes,
the max_watches bound, cancel, and the worker interleaving them with ingest and questions."""

import threading
import time
from types import SimpleNamespace

import pytest
from test_ros_worker import FRAME, FakeStream, Log, runtime

from livevlm_ros.engine.config import EngineConfig
from livevlm_ros.engine.errors import EmptyMemoryError
from livevlm_ros.engine.question import CONDITION_SUFFIX
from livevlm_ros.engine.results import ConditionResult, EvidenceFrame
from livevlm_ros.ros.questions import Question, question_from_request
from livevlm_ros.ros.watch_board import WatchBoard, WatchJob, WatchLimitError
from livevlm_ros.ros.watches import WatchError, WatchSpec, WatchTracker, evaluate_due, watch_from_goal
from livevlm_ros.ros.worker import InferenceWorker, QuestionJob

ENGINE = EngineConfig(max_question_chars=100)
STREAMS = ["front", "rear"]


def goal(**fields):
    base = dict(condition="Is a person in view?", stream="", period_s=0.0, threshold=0.5, consecutive=1,
                continuous=False, last_seconds=0.0, return_evidence_images=False)
    base.update(fields)
    return SimpleNamespace(**base)


def test_goal_validation_names_the_bad_field():
    spec = watch_from_goal(goal(condition="  Is it raining?  "), stream_names=STREAMS, engine=ENGINE, evidence=3)
    assert spec == WatchSpec("Is it raining?", "front", evidence=3)
    assert watch_from_goal(goal(consecutive=0), stream_names=STREAMS, engine=ENGINE).consecutive == 1
    cases = [
        (goal(condition="   "), "empty"),
        (goal(condition="x" * 90), "characters"),  # 90 + the suffix > 100: the engine's own limit
        (goal(threshold=1.5), "threshold"),
        (goal(threshold=-0.1), "threshold"),
        (goal(threshold=float("nan")), "threshold"),
        (goal(stream="side"), "unknown stream"),
        (goal(period_s=-1.0), "period_s"),
        (goal(last_seconds=float("inf")), "last_seconds"),
        (goal(consecutive=5000), "consecutive"),
    ]
    for bad, words in cases:
        with pytest.raises(WatchError, match=words):
            watch_from_goal(bad, stream_names=STREAMS, engine=ENGINE)
    # the limit is the engine's: the condition plus the suffix it is asked with
    ok = "x" * (100 - len(CONDITION_SUFFIX))
    assert watch_from_goal(goal(condition=ok), stream_names=STREAMS, engine=ENGINE).condition == ok


def test_tracker_edges_need_consecutive_evaluations():
    tracker = WatchTracker(WatchSpec("c", "front", threshold=0.5, consecutive=2))
    edges = []
    for k, p in enumerate([0.9, 0.1, 0.9, 0.9, 0.8, 0.2, 0.7, 0.1, 0.1]):
        edge = tracker.update(p, stamp=float(k), frames_prefilled=k + 1)
        edges.append(None if edge is None else (edge.state, edge.stamp))
    assert [e for e in edges if e] == [(True, 3.0), (False, 8.0)]
    assert tracker.first_rise.stamp == 3.0 and tracker.evaluations == 9 and not tracker.state


def test_tracker_is_due_once_per_clip_and_per_period():
    tracker = WatchTracker(WatchSpec("c", "front", period_s=2.0))
    assert not tracker.due(0, None) and tracker.due(4, 1.0)
    tracker.update(0.2, 1.0, 4)
    assert not tracker.due(4, 1.0)  # same clip
    assert not tracker.due(8, 2.5)  # a new clip, but within the period
    assert tracker.due(12, 3.0)
    every_clip = WatchTracker(WatchSpec("c", "front"))
    every_clip.update(0.2, 1.0, 4)
    assert every_clip.due(8, 1.5)
    assert WatchTracker(WatchSpec("c", "front", threshold=0.0)).update(0.0, 0.0, 1).state  # 0: always true


class ConditionEngine:
    """evaluate_condition answers p_yes from a list (cycled); counts calls and threads."""

    def __init__(self, p_values=(0.9,), fail=None):
        self.p_values, self.calls, self.threads, self.fail = list(p_values), [], set(), fail

    def evaluate_condition(self, condition, *, since=None, until=None, evidence=0):
        self.threads.add(threading.get_ident())
        if self.fail:
            raise self.fail
        p = self.p_values[len(self.calls) % len(self.p_values)]
        self.calls.append((condition, since, until, evidence))
        return ConditionResult(p_yes=p, yes_logit=0.0, no_logit=0.0, elapsed_s=0.0, frames_seen=4, span_start=0.0,
                               span_end=1.0, memory_tokens=10,
                               evidence=[EvidenceFrame(i, 0.25 * i, 0.1) for i in range(evidence)])


def test_watches_on_the_same_condition_and_window_share_one_evaluation():
    engine = ConditionEngine()
    same = [WatchTracker(WatchSpec("a", "front", evidence=e)) for e in (1, 3)]
    windowed = WatchTracker(WatchSpec("a", "front", last_seconds=2.0))
    other = WatchTracker(WatchSpec("b", "front"))
    results = []
    calls = evaluate_due(engine, same + [windowed, other], frames_prefilled=4, newest_stamp=5.0,
                         on_result=lambda w, r, e: results.append((w, e)))
    assert calls == 3 and len(results) == 4
    assert engine.calls == [("a", None, None, 3), ("a", 3.0, None, 0), ("b", None, None, 0)]
    assert [len(w.last_evidence) for w in same] == [1, 3]  # each gets what it asked for
    assert all(edge is not None and edge.state for _, edge in results)
    skipped = []
    empty = ConditionEngine(fail=EmptyMemoryError("no frame in the window"))
    tracker = WatchTracker(WatchSpec("a", "front"))
    assert evaluate_due(empty, [tracker], frames_prefilled=8, newest_stamp=6.0,
                        on_skip=lambda ws, exc: skipped.append(str(exc))) == 0
    assert skipped == ["no frame in the window"] and not tracker.due(8, 6.0) and tracker.due(12, 7.0)


def test_board_bounds_watches_and_ends_a_cancelled_one_at_once():
    board = WatchBoard(max_watches=2, logger=Log())
    cancel = threading.Event()
    first = WatchJob("a" * 32, WatchSpec("c", "front"), cancel_requested=cancel.is_set)
    board.add(first)
    board.add(WatchJob("b" * 32, WatchSpec("c", "rear")))
    with pytest.raises(WatchLimitError, match="max_watches=2"):
        board.add(WatchJob("c" * 32, WatchSpec("c", "front")))
    assert board.count() == 2 and board.count("front") == 1
    cancel.set()
    assert board.expire() == 1 and first.done() and first.result.cancelled
    assert board.count() == 1
    board.add(WatchJob("d" * 32, WatchSpec("c", "front")))  # room again
    board.stop_all("stopping")
    assert board.count() == 0


class WatchedStream(FakeStream):
    """A fake stream with clips of ``clip`` frames and evaluate_condition."""

    def __init__(self, p_values=(0.9,), clip=2, **kw):
        super().__init__(**kw)
        self.cond = ConditionEngine(p_values)
        self.clip = clip

    def evaluate_condition(self, condition, **kw):
        self._touch()
        self.events.append(("watch", condition))
        return self.cond.evaluate_condition(condition, **kw)

    def stats(self):
        st = super().stats()
        done = len(self.stamps) // self.clip * self.clip
        st.frames_ingested, st.frames_pending = done, len(self.stamps) - done
        return st


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_worker_evaluates_watches_at_clip_boundaries_and_fires_once():
    engine = WatchedStream(p_values=[0.1, 0.2, 0.9, 0.1], clip=2)
    rt = runtime(engine=engine)
    board = WatchBoard(4, Log())
    worker = InferenceWorker({rt.name: rt}, max_queued=4, logger=Log(), watches=board)
    feedback, edges = [], []
    once = WatchJob("1" * 32, WatchSpec("Is it on?", "front"), on_feedback=feedback.append,
                    on_edge=lambda job, edge: edges.append(edge))
    board.add(once)
    worker.start()
    try:
        for k in range(1, 13):  # stamps 0.5 ... 6.0 s (a zero stamp means "unset")
            rt.offer(0.5 * k, lambda: FRAME)
            worker.notify()
            _wait(lambda: rt.counts().queue_depth == 0)
        _wait(once.done)
    finally:
        assert worker.stop()
    outcome = once.result
    assert outcome.fired and outcome.evaluations == 3 and outcome.p_yes == pytest.approx(0.9)
    assert outcome.stamp == 3.0  # the third clip ended with the frame stamped 3.0 s
    assert [f.evaluations for f in feedback] == [1, 2, 3] and [f.state for f in feedback] == [False, False, True]
    assert [f.stamp for f in feedback] == [1.0, 2.0, 3.0]
    assert [(e.state, e.stamp) for e in edges] == [(True, 3.0)]
    watched_after = [i for i, ev in enumerate(engine.events) if ev[0] == "watch"]
    ingests = [i for i, ev in enumerate(engine.events) if ev[0] == "ingest"]
    assert all(engine.events[i - 1][0] == "ingest" for i in watched_after)  # right after a clip's last frame
    assert len(ingests) == 12 and engine.threads == {next(iter(engine.threads))}  # one thread: the worker's


def test_questions_come_before_watches_and_stop_ends_every_watch():
    engine = WatchedStream(p_values=[0.1], clip=1, token_delay_s=0.01)
    rt = runtime(engine=engine)
    board = WatchBoard(4, Log())
    worker = InferenceWorker({rt.name: rt}, max_queued=4, logger=Log(), watches=board)
    watch = WatchJob("2" * 32, WatchSpec("Is it on?", "front", continuous=True))
    board.add(watch)
    worker.start()
    try:
        rt.offer(0.5, lambda: FRAME)
        worker.notify()
        _wait(lambda: watch.tracker.evaluations >= 1)
        request = question_from_request(SimpleNamespace(question="what?", stream="front", last_seconds=0.0,
                                                        timeout_s=0.0, use_time_window=False, max_new_tokens=0),
                                        stream_names=["front"], engine=EngineConfig(), default_timeout_s=5.0)
        jobs = [QuestionJob(request) for _ in range(2)]
        rt.offer(1.0, lambda: FRAME)  # a clip becomes due while the questions wait
        for job in jobs:
            worker.submit(job)
        worker.notify()
        _wait(lambda: all(j.done() for j in jobs))
        _wait(lambda: watch.tracker.evaluations >= 2)
    finally:
        assert worker.stop()
    kinds = [kind for kind, _ in engine.events if kind in ("ask", "watch")]
    assert kinds[:4] == ["watch", "ask", "ask", "watch"]
    assert watch.done() and "shutting down" in watch.result.error and not watch.result.fired
    assert isinstance(jobs[0].question, Question)
