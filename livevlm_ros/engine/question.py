"""A question to the engine, validated once (pure Python: no torch, no rclpy).

:class:`AskRequest` is the one place where a question, its time window, its answer length and
its sampling values are checked. The engine builds one for every ``ask``; the ROS layer builds
the same object from a service request or action goal, so both refuse bad input with the same
:class:`~livevlm_ros.engine.errors.InvalidQuestionError` and the same words.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from .config import MAX_NEW_TOKENS_LIMIT, EngineConfig
from .errors import InvalidQuestionError

__all__ = ["AskRequest", "MAX_EVIDENCE_FRAMES", "CONDITION_SUFFIX", "condition_request"]

#: Most evidence frames one answer may report.
MAX_EVIDENCE_FRAMES = 64

#: Appended to a yes/no condition so that the first answer token is "yes" or "no".
CONDITION_SUFFIX = " Answer yes or no."


def _finite_or_none(name: str, value) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidQuestionError(f"{name} must be a finite time in seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class AskRequest:
    """One validated question.

    Attributes:
        question: the question text, stripped (non-empty, at most ``max_question_chars``).
        max_new_tokens: answer length limit (tokens), in [1, 4096].
        since / until: optional stream-time window (s); ``None`` ends are open; ``since <= until``.
        do_sample: sample instead of greedy decoding.
        temperature / top_p: sampling values (``temperature > 0``, ``0 < top_p <= 1``).
        seed: sampling seed (``None``: a fresh one).
        evidence: how many evidence frames to report (0: none; costs one small attention row per layer).
    """

    question: str
    max_new_tokens: int
    since: Optional[float] = None
    until: Optional[float] = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: Optional[int] = None
    evidence: int = 0

    @classmethod
    def build(cls, question, config: EngineConfig, *, max_new_tokens: Optional[int] = None,
              since=None, until=None, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
              seed: Optional[int] = None, evidence: int = 0) -> "AskRequest":
        """Validate a question against ``config`` (its length limit and default answer length).

        Raises:
            InvalidQuestionError: naming what is wrong.
        """
        if not isinstance(question, str) or not question.strip():
            raise InvalidQuestionError("the question is empty")
        text = question.strip()
        if len(text) > config.max_question_chars:
            raise InvalidQuestionError(
                f"the question has {len(text)} characters; at most {config.max_question_chars} are accepted "
                "(max_question_chars)"
            )
        since, until = _finite_or_none("since", since), _finite_or_none("until", until)
        if since is not None and until is not None and since > until:
            raise InvalidQuestionError(f"time window is inverted: since {since:.3f} s > until {until:.3f} s")
        max_new = config.max_new_tokens if max_new_tokens is None else max_new_tokens
        if isinstance(max_new, bool) or not isinstance(max_new, int) or not 1 <= max_new <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidQuestionError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS_LIMIT}], got {max_new!r}")
        if do_sample and (not temperature > 0 or not 0 < top_p <= 1):
            raise InvalidQuestionError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        if isinstance(evidence, bool) or not isinstance(evidence, int) or not 0 <= evidence <= MAX_EVIDENCE_FRAMES:
            raise InvalidQuestionError(f"evidence must be an integer in [0, {MAX_EVIDENCE_FRAMES}], got {evidence!r}")
        return cls(text, int(max_new), since, until, bool(do_sample), float(temperature), float(top_p), seed,
                   int(evidence))

    def within(self, since: Optional[float], until: Optional[float]) -> "AskRequest":
        """This request with its time window replaced (validated: finite, ``since <= until``)."""
        since, until = _finite_or_none("since", since), _finite_or_none("until", until)
        if since is not None and until is not None and since > until:
            raise InvalidQuestionError(f"time window is inverted: since {since:.3f} s > until {until:.3f} s")
        return dataclasses.replace(self, since=since, until=until)

    @property
    def windowed(self) -> bool:
        """True when a time window limits what the answer may use."""
        return self.since is not None or self.until is not None


def condition_request(condition, config: EngineConfig, *, since=None, until=None, evidence: int = 0) -> AskRequest:
    """The question a yes/no ``condition`` is evaluated as: the condition plus :data:`CONDITION_SUFFIX`,
    one answer token. The one validation of a condition (the engine's and the ROS Watch goal's).

    Raises:
        InvalidQuestionError: empty, too long (suffix included), bad window or evidence count.
    """
    if isinstance(condition, str) and condition.strip():
        condition = condition.strip() + CONDITION_SUFFIX
    return AskRequest.build(condition, config, max_new_tokens=1, since=since, until=until, evidence=evidence)
