"""Ask requests -> validated questions (pure: no rclpy, no torch).

``livevlm_interfaces/srv/Ask`` requests and ``action/Ask`` goals have the same fields; both
become a :class:`Question` through :func:`question_from_request`. The question itself (text,
time window, answer length) is validated once, by the engine's
:class:`~livevlm_ros.engine.question.AskRequest`; this module adds only what is ROS's: the stream
name, ``last_seconds``, ``timeout_s`` and stamps. Bad input raises the engine's
:class:`~livevlm_ros.engine.errors.InvalidQuestionError` (here also called :data:`QuestionError`),
whose message is sent back to the caller (``success=false``).

Times are *stream seconds*: header stamps as float seconds (``sec + nanosec * 1e-9``), the
same numbers the engine was given at ingest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from livevlm_ros.engine.config import EngineConfig
from livevlm_ros.engine.errors import InvalidQuestionError
from livevlm_ros.engine.question import AskRequest
from livevlm_ros.io.sources import stamp_to_seconds

__all__ = [
    "MAX_TIMEOUT_S",
    "QuestionError",
    "Question",
    "question_from_request",
    "resolve_request",
    "seconds_to_stamp",
]

#: Largest ``timeout_s`` a request may ask for (s).
MAX_TIMEOUT_S = 3600.0

#: The one error type of a refused question (the engine's).
QuestionError = InvalidQuestionError


@dataclass(frozen=True)
class Question:
    """A validated question about one stream.

    Attributes:
        request: the engine's validated request (text, absolute window, answer length, evidence).
        stream: stream name (resolved: never empty).
        last_seconds: > 0: only memory from the last N s of stream time (resolved when answered).
        timeout_s: limit on queue wait + answering (s).
    """

    request: AskRequest
    stream: str
    last_seconds: float = 0.0
    timeout_s: float = 30.0

    @property
    def text(self) -> str:
        return self.request.question


def _finite_non_negative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise QuestionError(f"{name} must be a finite number >= 0, got {value}")
    return value


def question_from_request(
    request: Any,
    *,
    stream_names: Sequence[str],
    engine: EngineConfig,
    default_timeout_s: float,
    evidence: int = 0,
) -> Question:
    """Validate an ``Ask`` request or goal (any object with its fields).

    Rules: the question, its window and its length follow the engine (``engine``'s
    ``max_question_chars`` and ``max_new_tokens``); ``stream`` empty means the first stream;
    ``last_seconds`` and ``timeout_s`` are >= 0 (0: none / the default); with ``use_time_window``
    a zero ``since`` or ``until`` leaves that side open; ``max_new_tokens`` 0 means the default.

    Raises:
        QuestionError: naming the offending field.
    """
    stream = request.stream or (stream_names[0] if stream_names else "")
    if stream not in stream_names:
        raise QuestionError(f"unknown stream {request.stream!r}; this node has streams {list(stream_names)}")
    last_seconds = _finite_non_negative("last_seconds", request.last_seconds)
    timeout_s = _finite_non_negative("timeout_s", request.timeout_s)
    if timeout_s > MAX_TIMEOUT_S:
        raise QuestionError(f"timeout_s must be <= {MAX_TIMEOUT_S:g} s, got {timeout_s:g}")
    since = until = None
    if request.use_time_window:
        since = stamp_to_seconds(request.since) or None
        until = stamp_to_seconds(request.until) or None
    ask = AskRequest.build(request.question or "", engine, max_new_tokens=int(request.max_new_tokens) or None,
                           since=since, until=until, evidence=evidence)
    return Question(request=ask, stream=stream, last_seconds=last_seconds, timeout_s=timeout_s or default_timeout_s)


def resolve_window(question: Question, newest_stamp: Optional[float]) -> Tuple[Optional[float], Optional[float]]:
    """``(since, until)`` in stream seconds for the engine.

    ``last_seconds`` counts back from ``newest_stamp`` (the newest frame ingested into the
    stream); combined with an absolute window, the later ``since`` wins.
    """
    since, until = question.request.since, question.request.until
    if question.last_seconds > 0.0 and newest_stamp is not None:
        recent = newest_stamp - question.last_seconds
        since = recent if since is None else max(since, recent)
    return since, until


def resolve_request(question: Question, newest_stamp: Optional[float]) -> AskRequest:
    """The engine request to answer now: the question's window narrowed by ``last_seconds``."""
    if question.last_seconds <= 0.0:
        return question.request
    return question.request.within(*resolve_window(question, newest_stamp))


def seconds_to_stamp(t: Optional[float]) -> Tuple[int, int]:
    """Stream seconds -> ``(sec, nanosec)`` of a ``builtin_interfaces/Time`` (``None`` -> ``(0, 0)``)."""
    if t is None or not math.isfinite(t) or t <= 0.0:
        return 0, 0
    sec = math.floor(t)
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return int(sec), nanosec
