"""Which long-term tokens to keep when the memory is over budget: pure tensor functions.

All functions take per-layer scores or lengths for the *long-term* region only (tokens in
temporal order) and return ``[layers, budget]`` int64 offsets into that region, sorted
ascending, so survivors stay in temporal order. They run on CPU or CUDA.
"""

from __future__ import annotations

import torch


def keep_recent(num_layers: int, length: int, budget: int, device: torch.device) -> torch.Tensor:
    """Sliding window (StreamingLLM, with the prefix as attention sinks): the newest ``budget`` tokens."""
    start = max(0, length - budget)
    return torch.arange(start, length, device=device).expand(num_layers, -1)


def keep_top_k(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """Plain top-``budget`` tokens by score (the paper's Top-K ablation).

    Args:
        scores: ``[layers, n]`` importance of each long-term token.
    """
    if scores.shape[1] <= budget:
        return torch.arange(scores.shape[1], device=scores.device).expand(scores.shape[0], -1)
    return scores.topk(budget, dim=1).indices.sort(dim=1).values


def bucket_of(n: int, num_buckets: int, device: torch.device) -> torch.Tensor:
    """``[n]`` bucket id of each token: ``num_buckets`` equal, contiguous, temporal buckets."""
    return torch.arange(n, device=device) * num_buckets // n


def keep_vision_sink_buckets(scores: torch.Tensor, budget: int, bucket_capacity: int,
                             saliency_share: float) -> torch.Tensor:
    """Vision Sink Bucketing: saliency first, then coverage across temporal buckets.

    Phase 1 keeps the ``round(saliency_share * budget)`` highest-scoring tokens. The tokens are
    split into ``budget // bucket_capacity`` equal temporal buckets; phase 2 walks the remaining
    tokens by descending score and keeps a token only while its bucket holds fewer than
    ``bucket_capacity`` kept tokens (phase-1 tokens count), until ``budget`` are kept. If the
    buckets fill up before that (phase 1 can overfill a bucket), the best remaining tokens fill
    the rest regardless of bucket (our choice; the paper is silent), so exactly ``budget`` survive.

    The greedy walk is computed without a Python loop: a token passes phase 2 iff its rank
    among the remaining tokens of its bucket is below the bucket's free room; the walk then
    keeps the best such tokens, which is the same set.

    Args:
        scores: ``[layers, n]`` importance of each long-term token, temporal order.
    Returns:
        ``[layers, budget]`` offsets of the survivors, ascending.
    """
    num_layers, n = scores.shape
    device = scores.device
    if n <= budget:
        return torch.arange(n, device=device).expand(num_layers, -1)
    saliency = min(budget, int(round(saliency_share * budget)))
    order = scores.argsort(dim=1, descending=True, stable=True)  # [L, n] token ids, best first
    global_rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=device).expand(num_layers, -1))
    kept = global_rank < saliency

    num_buckets = max(1, budget // bucket_capacity)
    bucket = bucket_of(n, num_buckets, device)
    occupancy = torch.zeros(num_layers, num_buckets, device=device, dtype=torch.long)
    occupancy.scatter_add_(1, bucket.expand(num_layers, -1), kept.long())
    room = (bucket_capacity - occupancy).clamp(min=0)

    # Remaining tokens grouped by bucket, best first within each bucket.
    by_score = order  # best first
    grouped = by_score.gather(1, bucket[by_score].argsort(dim=1, stable=True))
    grouped_bucket = bucket[grouped]
    remaining = ~kept.gather(1, grouped)
    # rank among the *remaining* tokens of the same bucket
    bucket_sizes = torch.bincount(bucket, minlength=num_buckets)
    bucket_start = torch.cumsum(bucket_sizes, 0) - bucket_sizes
    running = torch.cumsum(remaining.long(), dim=1)  # remaining tokens seen so far in grouped order
    before_bucket = running.gather(1, (bucket_start[grouped_bucket] - 1).clamp(min=0))
    before_bucket = torch.where(bucket_start[grouped_bucket] > 0, before_bucket, torch.zeros_like(before_bucket))
    rank_in_bucket = running - before_bucket - 1
    passes = remaining & (rank_in_bucket < room.gather(1, grouped_bucket))
    eligible = torch.zeros_like(kept).scatter_(1, grouped, passes)

    # Phase 2 keeps the best eligible tokens; then the best of the rest if buckets ran out.
    tier = torch.where(kept, 0, torch.where(eligible, 1, 2))
    priority = tier * n + global_rank  # lower is better; phase-1 tokens first
    survivors = priority.topk(budget, dim=1, largest=False).indices
    return survivors.sort(dim=1).values
