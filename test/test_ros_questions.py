"""Ask request validation, time windows and stamp conversion (no ROS graph)."""

from types import SimpleNamespace

import pytest

from livevlm_ros.engine.config import MAX_NEW_TOKENS_LIMIT as MAX_NEW_TOKENS
from livevlm_ros.engine.config import EngineConfig
from livevlm_ros.engine.errors import InvalidQuestionError
from livevlm_ros.engine.question import AskRequest
from livevlm_ros.ros.questions import (
    Question,
    QuestionError,
    question_from_request,
    resolve_request,
    resolve_window,
    seconds_to_stamp,
)

STREAMS = ["front", "rear"]


def stamp(t):
    sec, nanosec = seconds_to_stamp(t)
    return SimpleNamespace(sec=sec, nanosec=nanosec)


def request(**fields):
    base = dict(question="What is on the road?", stream="", last_seconds=0.0, use_time_window=False,
                since=stamp(0.0), until=stamp(0.0), max_new_tokens=0, timeout_s=0.0)
    base.update(fields)
    return SimpleNamespace(**base)


ENGINE = EngineConfig(max_question_chars=100, max_new_tokens=64)


def validate(req):
    return question_from_request(req, stream_names=STREAMS, engine=ENGINE, default_timeout_s=30.0)


def question(text="q", last_seconds=0.0, since=None, until=None):
    return Question(AskRequest.build(text, ENGINE, since=since, until=until), "front", last_seconds=last_seconds)


def test_defaults_resolve_to_first_stream_and_node_defaults():
    q = validate(request(question="  What is on the road?  "))
    assert q == Question(AskRequest.build("What is on the road?", ENGINE), stream="front", timeout_s=30.0)
    assert q.text == "What is on the road?" and q.request.max_new_tokens == 64  # the engine's default


def test_request_fields_are_kept():
    q = validate(request(stream="rear", last_seconds=5.0, max_new_tokens=12, timeout_s=2.5))
    assert (q.stream, q.last_seconds, q.request.max_new_tokens, q.timeout_s) == ("rear", 5.0, 12, 2.5)


def test_the_engine_validates_the_question_itself():
    """One validation: the ROS layer refuses exactly what the engine refuses, with the engine's error type."""
    assert QuestionError is InvalidQuestionError
    for text in ("", "x" * 101):
        with pytest.raises(InvalidQuestionError) as ros_error:
            validate(request(question=text))
        with pytest.raises(InvalidQuestionError) as engine_error:
            AskRequest.build(text, ENGINE)
        assert str(ros_error.value) == str(engine_error.value)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(question=""), "empty"),
        (dict(question="   \n"), "empty"),
        (dict(question="x" * 101), "at most 100"),
        (dict(stream="side"), "unknown stream 'side'"),
        (dict(last_seconds=-1.0), "last_seconds"),
        (dict(last_seconds=float("nan")), "last_seconds"),
        (dict(timeout_s=-0.5), "timeout_s"),
        (dict(timeout_s=1e9), "timeout_s"),
        (dict(max_new_tokens=MAX_NEW_TOKENS + 1), "max_new_tokens"),
        (dict(use_time_window=True, since=stamp(20.0), until=stamp(10.0)), "inverted"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(fields, message):
    with pytest.raises(QuestionError, match=message):
        validate(request(**fields))


def test_time_window_fields_only_count_with_use_time_window():
    assert validate(request(since=stamp(5.0), until=stamp(9.0))).request.since is None
    q = validate(request(use_time_window=True, since=stamp(5.25), until=stamp(9.5))).request
    assert (q.since, q.until) == (pytest.approx(5.25), pytest.approx(9.5))
    open_end = validate(request(use_time_window=True, since=stamp(5.0))).request
    assert open_end.until is None


def test_last_seconds_counts_back_from_the_newest_frame():
    q = question(last_seconds=3.0)
    assert resolve_window(q, newest_stamp=1700000010.0) == (pytest.approx(1700000007.0), None)
    assert resolve_window(q, newest_stamp=None) == (None, None)
    assert resolve_request(q, 1700000010.0).since == pytest.approx(1700000007.0)


def test_last_seconds_and_absolute_window_intersect():
    q = question(last_seconds=3.0, since=1.0, until=9.0)
    assert resolve_window(q, newest_stamp=10.0) == (7.0, 9.0)
    q = question(last_seconds=30.0, since=4.0, until=9.0)
    assert resolve_window(q, newest_stamp=10.0) == (4.0, 9.0)
    with pytest.raises(QuestionError, match="inverted"):  # the last 3 s lie after the window's end
        resolve_request(question(last_seconds=3.0, since=1.0, until=5.0), newest_stamp=10.0)


@pytest.mark.parametrize("t", [1700000000.0, 1700000004.5, 0.25, 12.999999999])
def test_seconds_to_stamp_round_trip(t):
    sec, nanosec = seconds_to_stamp(t)
    assert 0 <= nanosec < 1_000_000_000
    assert sec + nanosec * 1e-9 == pytest.approx(t, abs=1e-6)


def test_seconds_to_stamp_none_is_zero():
    assert seconds_to_stamp(None) == (0, 0)


def test_real_request_type_if_built():
    srv = pytest.importorskip("livevlm_interfaces.srv", reason="livevlm_interfaces not built: run scripts/setup.sh")
    req = srv.Ask.Request(question="hi", stream="rear", last_seconds=2.0, max_new_tokens=5)
    assert validate(req).stream == "rear"
    action = pytest.importorskip("livevlm_interfaces.action")
    goal = action.Ask.Goal(question="hi", use_time_window=True)
    goal.since.sec, goal.until.sec = 10, 20
    assert (validate(goal).request.since, validate(goal).request.until) == (10.0, 20.0)
