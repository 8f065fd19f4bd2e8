"""Statistics of the fidelity study: cluster bootstrap confidence intervals and paired differences.

Questions of one stream share a memory, so they are not independent: every interval resamples
*streams* (clusters) with replacement, keeping each stream's questions together. Paired
comparisons resample the same streams for both arms, so the per-question difference is what is
bootstrapped (the two arms answered the same questions about the same captions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap ``LEVEL`` interval ``[low, high]`` and the number of observations."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _cluster_means(values: np.ndarray, clusters: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``[resamples]`` means of ``values`` over streams drawn with replacement (cluster bootstrap)."""
    ids, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=ids.size)
    counts = np.bincount(inverse, minlength=ids.size).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ids.size, size=(resamples, ids.size))
    return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def bootstrap(values: Sequence[float], clusters: Optional[Sequence] = None, *, resamples: int = RESAMPLES,
              level: float = LEVEL, seed: int = 0) -> Estimate:
    """Mean of ``values`` with a percentile cluster-bootstrap interval.

    Args:
        values: one number per observation (1/0 for accuracy, a margin in nats, ...).
        clusters: the stream of each observation (default: every observation its own cluster).
    Returns:
        :class:`Estimate`; ``nan`` fields when ``values`` is empty.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    groups = np.arange(data.size) if clusters is None else np.asarray(clusters)
    if groups.shape != data.shape:
        raise ValueError(f"{data.size} values but {groups.size} cluster labels")
    means = _cluster_means(data, groups, resamples, seed)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Estimate(float(data.mean()), float(low), float(high), int(data.size))


def paired_difference(a: Sequence[float], b: Sequence[float], clusters: Sequence, **kwargs) -> Estimate:
    """Mean of ``a - b`` over paired observations (same question, two arms), cluster-bootstrapped."""
    left, right = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if left.shape != right.shape:
        raise ValueError(f"paired samples differ in size: {left.size} vs {right.size}")
    return bootstrap(left - right, clusters, **kwargs)
