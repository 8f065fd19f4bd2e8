"""Statistics of a soak run (pure Python + numpy, no ROS): RSS trend, percentiles, question
accounting and the pass/fail verdict.

Units: time in seconds (``t_s``) unless a name says ``_min``; memory in MB (10**6 bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["LinearFit", "linear_fit", "percentiles", "QuestionCounts", "count_questions", "Thresholds",
           "Verdict", "verdict", "after_warmup"]


@dataclass(frozen=True)
class LinearFit:
    """Least-squares line ``y = intercept + slope * x``.

    Attributes:
        slope: dy/dx (units of y per unit of x).
        slope_se: standard error of the slope (sigma * sqrt(1 / Sxx), residual sigma with n - 2
            degrees of freedom; assumes independent residuals). NaN when n < 3.
        intercept: y at x = 0.
        n: number of points.
    """

    slope: float
    slope_se: float
    intercept: float
    n: int


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Ordinary least squares of ``y`` on ``x`` (two or more points, ``x`` not all equal)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got {xs.shape} and {ys.shape}")
    n = xs.size
    if n < 2:
        raise ValueError(f"a line needs at least 2 points, got {n}")
    dx = xs - xs.mean()
    sxx = float(dx @ dx)
    if sxx == 0.0:
        raise ValueError("x values are all equal: no slope")
    slope = float(dx @ (ys - ys.mean())) / sxx
    intercept = float(ys.mean() - slope * xs.mean())
    if n < 3:
        return LinearFit(slope, math.nan, intercept, n)
    residuals = ys - (intercept + slope * xs)
    sigma2 = float(residuals @ residuals) / (n - 2)
    return LinearFit(slope, math.sqrt(sigma2 / sxx), intercept, n)


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> Dict[str, Optional[float]]:
    """``{"p50": ..., "p99": ...}`` (numpy's linear interpolation); None for each when empty."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return {f"p{q:g}": (float(np.percentile(arr, q)) if arr.size else None) for q in qs}


def after_warmup(t_s: Sequence[float], values: Sequence, warmup_s: float) -> tuple:
    """The ``(t, value)`` pairs with ``t >= warmup_s`` as two lists."""
    kept = [(t, v) for t, v in zip(t_s, values, strict=True) if t >= warmup_s]
    return [t for t, _ in kept], [v for _, v in kept]


@dataclass(frozen=True)
class QuestionCounts:
    """What happened to the questions: every one sent must end as answered or errored.

    Attributes:
        sent: questions sent (service calls and action goals).
        answered: responses with ``success`` true.
        errored: responses with ``success`` false, or a refused goal (a response all the same).
        lost: sent but no response by the end of the grace period.
    """

    sent: int
    answered: int
    errored: int
    lost: int


def count_questions(outcomes: Sequence[Optional[str]]) -> QuestionCounts:
    """Counts from one outcome per question sent: ``"answered"``, ``"errored"`` or None (no response)."""
    bad = {o for o in outcomes if o not in ("answered", "errored", None)}
    if bad:
        raise ValueError(f"unknown question outcomes {sorted(bad)}")
    answered = sum(o == "answered" for o in outcomes)
    errored = sum(o == "errored" for o in outcomes)
    return QuestionCounts(len(outcomes), answered, errored, len(outcomes) - answered - errored)


@dataclass(frozen=True)
class Thresholds:
    """What fails a soak run (the CLI options of the same names).

    Attributes:
        max_rss_growth_mb: largest RSS rise (MB) after warm-up: max(RSS) - RSS at the first sample after it.
        max_lost_questions: questions allowed without a response.
        max_crashes: node deaths allowed (an exit during the run, or an unclean exit at shutdown).
        rss_slope_target_mb_per_min: the RSS slope target (reported as met or not; does not fail the run).
    """

    max_rss_growth_mb: float = 50.0
    max_lost_questions: int = 0
    max_crashes: int = 0
    rss_slope_target_mb_per_min: float = 1.0

    def __post_init__(self) -> None:
        if not (self.max_rss_growth_mb >= 0 and self.max_lost_questions >= 0 and self.max_crashes >= 0
                and self.rss_slope_target_mb_per_min > 0):
            raise ValueError(f"thresholds must be >= 0 (slope target > 0): {self}")


@dataclass(frozen=True)
class Verdict:
    """``passed`` unless one of ``failures`` (human-readable reasons) happened."""

    passed: bool
    failures: List[str] = field(default_factory=list)
    slope_target_met: Optional[bool] = None


def verdict(*, crashes: int, questions: QuestionCounts, rss_growth_mb: Optional[float],
            rss_slope: Optional[LinearFit], thresholds: Thresholds) -> Verdict:
    """Pass/fail of a run. ``rss_growth_mb`` None (no sample after warm-up) fails: nothing was measured."""
    failures = []
    if crashes > thresholds.max_crashes:
        failures.append(f"node crashed {crashes} time(s) (allowed {thresholds.max_crashes})")
    if questions.lost > thresholds.max_lost_questions:
        failures.append(f"{questions.lost} of {questions.sent} questions got no response "
                        f"(allowed {thresholds.max_lost_questions})")
    if rss_growth_mb is None:
        failures.append("no RSS sample after warm-up: run longer than --warmup")
    elif rss_growth_mb > thresholds.max_rss_growth_mb:
        failures.append(f"RSS grew {rss_growth_mb:.1f} MB after warm-up (allowed {thresholds.max_rss_growth_mb:g} MB)")
    met = None if rss_slope is None else bool(rss_slope.slope < thresholds.rss_slope_target_mb_per_min)
    return Verdict(not failures, failures, met)
