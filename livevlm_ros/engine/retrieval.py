"""Question-time retrieval of memory groups (PaR pages, ReKV frames): pure tensor functions.

A *group* is a set of memory tokens retrieved together: a page of ``C`` consecutive long-term
tokens (PaR) or all tokens of one frame (ReKV-style). Its representative is the mean of its
keys; the question scores a group by the pooled dot product of its queries with that mean.
"""

from __future__ import annotations

import math

import torch


def group_means(keys: torch.Tensor, group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean key of each group.

    Args:
        keys: ``[kv_heads, n, head_dim]``.
        group_ids: ``[n]`` int64 in ``[0, num_groups)``.
    Returns:
        ``[kv_heads, num_groups, head_dim]`` float32.
    """
    heads, _, dim = keys.shape
    sums = torch.zeros(heads, num_groups, dim, device=keys.device, dtype=torch.float32)
    sums.index_add_(1, group_ids, keys.float())
    counts = torch.bincount(group_ids, minlength=num_groups).clamp(min=1).to(torch.float32)
    return sums / counts[None, :, None]


def page_means(keys: torch.Tensor, page_size: int) -> torch.Tensor:
    """Mean key of each page of ``page_size`` consecutive tokens (the last page may be shorter).

    Args:
        keys: ``[kv_heads, n, head_dim]``.
    Returns:
        ``[kv_heads, ceil(n / page_size), head_dim]`` float32; a reshape, no scatter.
    """
    heads, n, dim = keys.shape
    pages = math.ceil(n / page_size)
    padded = keys.new_zeros(heads, pages * page_size, dim)
    padded[:, :n] = keys
    sums = padded.view(heads, pages, page_size, dim).float().sum(dim=2)
    counts = torch.full((pages,), float(page_size), device=keys.device)
    counts[-1] = n - (pages - 1) * page_size
    return sums / counts[None, :, None]


def tokens_of_pages(pages: torch.Tensor, page_size: int, n_tokens: int) -> torch.Tensor:
    """Positions (ascending) of the tokens of ``pages`` (ascending page ids) of ``page_size`` tokens."""
    index = (pages[:, None] * page_size + torch.arange(page_size, device=pages.device)).flatten()
    return index[index < n_tokens]


def pooled_query(queries: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Mean of the question's queries over tokens and over the query heads of each KV group.

    Args:
        queries: ``[heads, q, head_dim]``.
    Returns:
        ``[kv_heads, head_dim]`` float32; its dot product with a group mean, averaged over KV heads,
        equals the mean over all query heads and tokens of ``q . mean_key`` (linearity).
    """
    heads, q, dim = queries.shape
    return queries.float().reshape(num_kv_heads, (heads // num_kv_heads) * q, dim).mean(dim=1)


def score_groups(pooled: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """``[num_groups]`` score of each group: mean over KV heads of ``pooled . mean``."""
    return torch.einsum("hd,hgd->hg", pooled, means).mean(dim=0)


def top_groups(scores: torch.Tensor, ratio: float = 0.0, count: int = 0) -> torch.Tensor:
    """Ids of the best groups, ascending (temporal order): ``ceil(ratio * n)`` of them, or ``count``."""
    n = scores.shape[0]
    k = min(n, max(1, math.ceil(ratio * n)) if count == 0 else count)
    return scores.topk(k).indices.sort().values


def tokens_in_groups(group_ids: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Positions (ascending) of the tokens whose group is in ``chosen``."""
    return torch.isin(group_ids, chosen).nonzero().squeeze(1)
