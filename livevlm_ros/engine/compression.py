"""Which long-term tokens to keep when the memory is over budget: pure tensor functions.

Every function works on *lanes*: rows of ``[G, n]`` tensors, one per layer (or per layer and KV
head), each holding the long-term region's ``n`` tokens in temporal order. A policy ranks the
tokens (a *priority*: lower keeps first); :func:`keep_by_priority` turns the ranking into the
``[G, budget]`` ascending offsets that survive, applying the structure rule. They run on CPU or
CUDA without reading anything back to the host.

Structure rule: a frame's structure tokens (``vision == False``: SmolVLM2's ``Frame from MM:SS:``
text, image delimiters) are never evicted while any of the frame's vision tokens remain. They are
ranked just before their frame's best vision token, so keeping that token keeps them too; a frame
with no vision token left sheds its structure tokens first.
"""

from __future__ import annotations

import torch


def rank_of(priority: torch.Tensor) -> torch.Tensor:
    """``[G, n]`` rank of each token by ascending ``priority`` (0 = kept first; ties by position)."""
    n = priority.shape[1]
    order = priority.argsort(dim=1, stable=True)
    return torch.empty_like(order).scatter_(1, order, torch.arange(n, device=priority.device).expand_as(order))


def frame_groups(frame: torch.Tensor) -> torch.Tensor:
    """``[G, n]`` consecutive group id (0, 1, ...) of each token's frame; frames are ascending along a lane."""
    starts = torch.ones_like(frame, dtype=torch.long)
    starts[:, 0] = 0
    starts[:, 1:] = (frame[:, 1:] != frame[:, :-1]).long()
    return starts.cumsum(dim=1)


def keep_by_priority(priority: torch.Tensor, frame: torch.Tensor, vision: torch.Tensor, budget: int) -> torch.Tensor:
    """The ``budget`` best tokens of each lane by ``priority``, with the structure rule.

    Args:
        priority: ``[G, n]`` lower is kept first (only vision tokens' values are used).
        frame: ``[G, n]`` int64 frame index of each token (ascending along a lane).
        vision: ``[G, n]`` bool; False marks structure tokens.
    Returns:
        ``[G, min(budget, n)]`` offsets of the survivors, ascending.
    """
    lanes, n = priority.shape
    if n <= budget:
        return torch.arange(n, device=priority.device).expand(lanes, -1)
    inf = torch.finfo(torch.float64).max
    rank = rank_of(torch.where(vision, priority.double(), inf))
    group = frame_groups(frame)
    best = torch.full((lanes, n), n, dtype=torch.long, device=priority.device)
    best.scatter_reduce_(1, group, torch.where(vision, rank, n), reduce="amin")
    key = torch.where(vision, 2 * rank + 1, 2 * best.gather(1, group))
    return key.topk(budget, dim=1, largest=False).indices.sort(dim=1).values


def pool_per_frame(values: torch.Tensor, frame: torch.Tensor, vision: torch.Tensor, reduce: str) -> torch.Tensor:
    """``values`` ``[G, n]`` replaced by their frame's ``mean`` or ``amin`` over its vision tokens."""
    lanes, n = values.shape
    group = frame_groups(frame)
    source = values.double()
    if reduce == "mean":
        sums = torch.zeros(lanes, n, dtype=torch.float64, device=values.device)
        counts = torch.zeros(lanes, n, dtype=torch.float64, device=values.device)
        sums.scatter_add_(1, group, torch.where(vision, source, 0.0))
        counts.scatter_add_(1, group, vision.double())
        pooled = sums / counts.clamp(min=1)
    else:
        pooled = torch.full((lanes, n), torch.finfo(torch.float64).max, dtype=torch.float64, device=values.device)
        pooled.scatter_reduce_(1, group, torch.where(vision, source, torch.finfo(torch.float64).max), reduce=reduce)
    return pooled.gather(1, group).to(values.dtype)


def memory_buckets(lanes: int, n: int, num_buckets: int, device: torch.device) -> torch.Tensor:
    """``[G, n]`` bucket of each token: ``num_buckets`` equal contiguous runs of the memory index (ablation)."""
    return (torch.arange(n, device=device) * num_buckets // n).expand(lanes, -1)


def stream_buckets(position: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """``[G, n]`` bucket of each token: ``num_buckets`` equal ranges of the stream positions the lane spans.

    Args:
        position: ``[G, n]`` int64 original stream position of each token, ascending along a lane.
    """
    low, high = position[:, :1], position[:, -1:]
    return (position - low) * num_buckets // (high - low + 1)


def bucket_of(n: int, num_buckets: int, device: torch.device) -> torch.Tensor:
    """``[n]`` memory-index bucket of each of ``n`` tokens (one lane of :func:`memory_buckets`)."""
    return memory_buckets(1, n, num_buckets, device)[0]


def vsb_priority(scores: torch.Tensor, candidate: torch.Tensor, bucket: torch.Tensor, num_buckets: int,
                 budget: int, capacity: int, saliency_share: float) -> torch.Tensor:
    """Vision Sink Bucketing as a priority: saliency first, then coverage across buckets.

    Phase 1 keeps the ``round(saliency_share * budget)`` highest-scoring candidates. Phase 2 walks the
    remaining candidates by descending score and keeps a token only while its bucket holds fewer than
    ``capacity`` kept tokens (phase-1 tokens count). If the buckets fill up before ``budget`` tokens are
    kept (phase 1 can overfill a bucket), the best remaining candidates fill the rest regardless of
    bucket (our choice; the paper is silent). The returned priority orders tokens exactly so: phase 1 by
    score, then phase-2 tokens by score, then the rest by score, then non-candidates.

    The greedy walk needs no Python loop: a token passes phase 2 iff its rank among the remaining
    tokens of its bucket is below the bucket's free room; the walk then keeps the best such tokens.

    Args:
        scores: ``[G, n]`` importance. candidate: ``[G, n]`` bool (vision tokens).
        bucket: ``[G, n]`` int64 bucket in ``[0, num_buckets)`` of each token.
    Returns:
        ``[G, n]`` int64 priority (lower is kept first).
    """
    lanes, n = scores.shape
    device = scores.device
    order = torch.where(candidate, scores.double(), -torch.inf).argsort(dim=1, descending=True, stable=True)
    grank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=device).expand_as(order))
    saliency = min(budget, int(round(saliency_share * budget)))
    kept = candidate & (grank < saliency)
    occupancy = torch.zeros(lanes, num_buckets, dtype=torch.long, device=device).scatter_add_(1, bucket, kept.long())
    room = (capacity - occupancy).clamp(min=0)
    remaining = candidate & ~kept
    # tokens grouped by bucket, best first within each bucket (keys are unique)
    grouped = (bucket * n + grank).argsort(dim=1)
    grouped_bucket = bucket.gather(1, grouped)
    running = remaining.gather(1, grouped).long().cumsum(dim=1)
    sizes = torch.zeros(lanes, num_buckets, dtype=torch.long, device=device).scatter_add_(
        1, bucket, torch.ones_like(bucket))
    start = (sizes.cumsum(dim=1) - sizes).gather(1, grouped_bucket)
    before = torch.where(start > 0, running.gather(1, (start - 1).clamp(min=0)), 0)
    rank_in_bucket = running - before - 1
    passes = remaining.gather(1, grouped) & (rank_in_bucket < room.gather(1, grouped_bucket))
    eligible = torch.zeros_like(kept).scatter_(1, grouped, passes)
    tier = torch.where(kept, 0, torch.where(eligible, 1, torch.where(candidate, 2, 3)))
    return tier * n + grank


# ------------------------------------------------------------------ the classic per-layer forms (all tokens vision)
def keep_recent(num_layers: int, length: int, budget: int, device: torch.device) -> torch.Tensor:
    """Sliding window (StreamingLLM, with the prefix as attention sinks): the newest ``budget`` tokens."""
    start = max(0, length - budget)
    return torch.arange(start, length, device=device).expand(num_layers, -1)


def keep_top_k(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """Plain top-``budget`` tokens by score (the paper's Top-K ablation). ``scores``: ``[G, n]``."""
    if scores.shape[1] <= budget:
        return torch.arange(scores.shape[1], device=scores.device).expand(scores.shape[0], -1)
    return scores.topk(budget, dim=1).indices.sort(dim=1).values


def keep_vision_sink_buckets(scores: torch.Tensor, budget: int, bucket_capacity: int, saliency_share: float,
                             position: torch.Tensor | None = None) -> torch.Tensor:
    """VSB over ``scores`` ``[G, n]`` (every token a vision token): ``[G, budget]`` ascending survivors.

    Buckets split the stream ``position`` ``[G, n]`` when given, else the memory index.
    """
    lanes, n = scores.shape
    if n <= budget:
        return torch.arange(n, device=scores.device).expand(lanes, -1)
    num_buckets = max(1, budget // bucket_capacity)
    bucket = (memory_buckets(lanes, n, num_buckets, scores.device) if position is None
              else stream_buckets(position, num_buckets))
    candidate = torch.ones_like(scores, dtype=torch.bool)
    priority = vsb_priority(scores, candidate, bucket, num_buckets, budget, bucket_capacity, saliency_share)
    return priority.topk(budget, dim=1, largest=False).indices.sort(dim=1).values
