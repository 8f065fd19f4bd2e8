"""Validation of Ask requests and their time windows (pure: no rclpy, no torch).

``livevlm_interfaces/srv/Ask`` requests and ``action/Ask`` goals have the same fields; both
become a :class:`Question` through :func:`question_from_request`, which refuses bad input with
a :class:`QuestionError` whose message is sent back to the caller (``success=false``).

Times are *stream seconds*: header stamps as float seconds (``sec + nanosec * 1e-9``), the
same numbers the engine was given at ingest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from livevlm_ros.io.sources import stamp_to_seconds

__all__ = [
    "MAX_NEW_TOKENS",
    "MAX_TIMEOUT_S",
    "QuestionError",
    "Question",
    "question_from_request",
    "resolve_window",
    "seconds_to_stamp",
]

#: Largest ``max_new_tokens`` a request may ask for (EngineConfig's own limit).
MAX_NEW_TOKENS = 4096
#: Largest ``timeout_s`` a request may ask for (s).
MAX_TIMEOUT_S = 3600.0


class QuestionError(ValueError):
    """The request cannot be answered as given; the message says why."""


@dataclass(frozen=True)
class Question:
    """A validated question about one stream.

    Attributes:
        text: the question, stripped.
        stream: stream name (resolved: never empty).
        last_seconds: > 0: only memory from the last N s of stream time (resolved when answered).
        since / until: absolute stream-time bounds (s), ``None`` when open.
        max_new_tokens: answer length limit, ``None`` for the node's default.
        timeout_s: limit on queue wait + answering (s).
    """

    text: str
    stream: str
    last_seconds: float = 0.0
    since: Optional[float] = None
    until: Optional[float] = None
    max_new_tokens: Optional[int] = None
    timeout_s: float = 30.0


def _finite_non_negative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise QuestionError(f"{name} must be a finite number >= 0, got {value}")
    return value


def question_from_request(
    request: Any,
    *,
    stream_names: Sequence[str],
    max_question_chars: int,
    default_timeout_s: float,
) -> Question:
    """Validate an ``Ask`` request or goal (any object with its fields).

    Rules: the question must not be empty nor longer than ``max_question_chars``; ``stream``
    empty means the first stream; ``last_seconds`` and ``timeout_s`` are >= 0 (0: none /
    the default); with ``use_time_window`` a zero ``since`` or ``until`` leaves that side open
    and ``since <= until``; ``max_new_tokens`` 0 means the node's default.

    Raises:
        QuestionError: naming the offending field.
    """
    text = (request.question or "").strip()
    if not text:
        raise QuestionError("question is empty")
    if len(text) > max_question_chars:
        raise QuestionError(
            f"question is {len(text)} characters long; the limit is {max_question_chars} (parameter max_question_chars)"
        )
    stream = request.stream or (stream_names[0] if stream_names else "")
    if stream not in stream_names:
        raise QuestionError(f"unknown stream {request.stream!r}; this node has streams {list(stream_names)}")
    last_seconds = _finite_non_negative("last_seconds", request.last_seconds)
    since = until = None
    if request.use_time_window:
        since = stamp_to_seconds(request.since) or None
        until = stamp_to_seconds(request.until) or None
        if since is not None and until is not None and since > until:
            raise QuestionError(f"time window is inverted: since {since:.3f} s > until {until:.3f} s")
    max_new = int(request.max_new_tokens)
    if max_new > MAX_NEW_TOKENS:
        raise QuestionError(f"max_new_tokens must be <= {MAX_NEW_TOKENS}, got {max_new}")
    timeout_s = _finite_non_negative("timeout_s", request.timeout_s)
    if timeout_s > MAX_TIMEOUT_S:
        raise QuestionError(f"timeout_s must be <= {MAX_TIMEOUT_S:g} s, got {timeout_s:g}")
    return Question(
        text=text,
        stream=stream,
        last_seconds=last_seconds,
        since=since,
        until=until,
        max_new_tokens=max_new or None,
        timeout_s=timeout_s or default_timeout_s,
    )


def resolve_window(question: Question, newest_stamp: Optional[float]) -> Tuple[Optional[float], Optional[float]]:
    """``(since, until)`` in stream seconds for the engine.

    ``last_seconds`` counts back from ``newest_stamp`` (the newest frame ingested into the
    stream); combined with an absolute window, the later ``since`` wins.
    """
    since, until = question.since, question.until
    if question.last_seconds > 0.0 and newest_stamp is not None:
        recent = newest_stamp - question.last_seconds
        since = recent if since is None else max(since, recent)
    return since, until


def seconds_to_stamp(t: Optional[float]) -> Tuple[int, int]:
    """Stream seconds -> ``(sec, nanosec)`` of a ``builtin_interfaces/Time`` (``None`` -> ``(0, 0)``)."""
    if t is None or not math.isfinite(t) or t <= 0.0:
        return 0, 0
    sec = math.floor(t)
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return int(sec), nanosec
