"""Question-time retrieval of memory groups (PaR pages, ReKV frames): pure tensor functions.

A *group* is a set of memory tokens retrieved together: a page of ``C`` consecutive long-term
tokens (PaR) or all tokens of one frame (ReKV-style). Its representative is the mean of its
keys; the question scores a group by the pooled dot product of its own tokens' queries with that
mean. Nothing here reads a tensor back to the host.
"""

from __future__ import annotations

import math
from typing import Optional

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
        keys: ``[..., n, head_dim]``.
    Returns:
        ``[..., ceil(n / page_size), head_dim]`` float32; a reshape, no scatter.
    """
    *lead, n, dim = keys.shape
    pages = math.ceil(n / page_size)
    padded = keys.new_zeros(*lead, pages * page_size, dim)
    padded[..., :n, :] = keys
    sums = padded.view(*lead, pages, page_size, dim).float().sum(dim=-2)
    counts = torch.full((pages,), float(page_size), device=keys.device)
    counts[-1] = n - (pages - 1) * page_size
    return sums / counts[:, None]


def _by_page(values: torch.Tensor, page_size: int, fill) -> torch.Tensor:
    """``values`` ``[..., n]`` as ``[..., ceil(n / page_size), page_size]``, the short last page padded with
    ``fill`` (the neutral element of the reduction that follows: 0 for a sum, ``-inf`` for a max)."""
    *lead, n = values.shape
    pages = math.ceil(n / page_size)
    padded = values.new_full((*lead, pages * page_size), fill)
    padded[..., :n] = values
    return padded.view(*lead, pages, page_size)


def pages_with_visible_tokens(visible: torch.Tensor, page_size: int) -> torch.Tensor:
    """``[..., pages]`` bool: pages holding at least one visible token (``visible`` ``[..., n]`` bool)."""
    return _by_page(visible, page_size, False).any(dim=-1)


def tokens_of_pages(pages: torch.Tensor, page_size: int, n_tokens: int,
                    offsets: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token offsets of ``pages`` (``[..., k]`` ascending page ids), and which of them exist.

    Args:
        offsets: ``arange(page_size)`` on the pages' device, if the caller keeps one.
    Returns:
        ``(offsets, exists)``, both ``[..., k * page_size]``: offsets clamped into ``[0, n_tokens)``
        (so they can be gathered), ``exists`` False for the missing tail of a short last page.
    """
    within = torch.arange(page_size, device=pages.device) if offsets is None else offsets
    tokens = (pages[..., :, None] * page_size + within).flatten(-2)
    return tokens.clamp(max=n_tokens - 1), tokens < n_tokens


def question_weights(own: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[q]`` pooling weights (in ``dtype``): uniform over the question's own tokens (``own`` ``[q]`` bool), 0 elsewhere."""
    weights = own.float()
    return (weights / weights.sum().clamp(min=1.0)).to(dtype)


def pooled_query(queries: torch.Tensor, num_kv_heads: int, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of the question's queries over its own tokens and over the query heads of each KV group.

    Args:
        queries: ``[heads, q, head_dim]`` (pre-RoPE, or rotated for the PE ablation).
        weights: ``[q]`` pooling weights summing to 1, in the queries' dtype (see :func:`question_weights`);
            ``None``: all ``q`` tokens.
    Returns:
        ``[kv_heads, head_dim]`` float32; its dot product with a group mean, averaged over KV heads,
        equals the mean over the pooled query heads and tokens of ``q . mean_key`` (linearity).
    """
    heads, q, dim = queries.shape
    pooled = queries.mean(dim=1) if weights is None else torch.matmul(weights, queries)  # [heads, dim]
    return pooled.float().reshape(num_kv_heads, heads // num_kv_heads, dim).mean(dim=1)


def score_groups(pooled: torch.Tensor, means: torch.Tensor, per_head: bool = False) -> torch.Tensor:
    """Score of each group: ``pooled . mean`` per KV head (``[kv_heads, groups]``) or its mean over heads (``[groups]``).

    Args:
        pooled: ``[kv_heads, d]`` float32. means: ``[kv_heads, groups, d]`` float32.
    """
    scores = torch.matmul(means, pooled[:, :, None])[..., 0]
    return scores if per_head else scores.mean(dim=0)


def page_max_scores(pooled: torch.Tensor, keys: torch.Tensor, page_size: int, per_head: bool = False,
                    usable: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Score of each page of ``page_size`` consecutive tokens: its best token's ``pooled . key``.

    Args:
        pooled: ``[kv_heads, d]`` float32 pooled question query (see :func:`pooled_query`).
        keys: ``[kv_heads, n, d]`` the long-term tokens' keys (pre-RoPE, or rotated for the PE ablation).
        per_head: keep one score per KV head (``[kv_heads, pages]``); else token scores are averaged
            over KV heads first, as :func:`score_groups` does (``[pages]``).
        usable: ``[n]`` (or ``[kv_heads, n]``) bool; tokens that may not be used never score (a page
            with none scores ``-inf``).
    Returns:
        ``[pages]`` or ``[kv_heads, pages]`` float32, ``pages = ceil(n / page_size)``.
    """
    tokens = torch.matmul(keys.float(), pooled[:, :, None])[..., 0]  # [kv_heads, n]
    if not per_head:
        tokens = tokens.mean(dim=0)
    if usable is not None:
        tokens = tokens.masked_fill(~usable, -torch.inf)
    return _by_page(tokens, page_size, -torch.inf).amax(dim=-1)


def page_attention_scores(queries: torch.Tensor, keys: torch.Tensor, page_size: int, weights: torch.Tensor,
                          per_head: bool = False, usable: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Score of each page: the attention mass the question's own tokens give its tokens.

    Per query head and question token, ``softmax(q . k / sqrt(d))`` over the long-term tokens (pre-RoPE,
    or rotated for the PE ablation), weighted by ``weights`` over the question's tokens, averaged over
    the query heads of each KV group, then summed over each page's tokens. Unlike a pooled query's dot
    product with a page mean (linear: one averaged query, one averaged key), the softmax keeps each
    head's and each question token's own match, so a page wins when some head attends to it.

    Args:
        queries: ``[heads, q, d]``; heads grouped over KV heads as in GQA (head ``h`` reads KV head
            ``h // (heads / kv_heads)``).
        keys: ``[kv_heads, n, d]`` the long-term tokens' keys.
        weights: ``[q]`` pooling weights summing to 1 (see :func:`question_weights`).
        per_head: keep one score per KV head (``[kv_heads, pages]``); else averaged over KV heads.
        usable: ``[n]`` (or ``[kv_heads, n]``) bool; other tokens receive no attention (a page with
            none scores 0, below any page with a usable token only if that token gets mass).
    Returns:
        ``[pages]`` or ``[kv_heads, pages]`` float32 in [0, 1] (a page's share of the attention), ``pages =
        ceil(n / page_size)``. Cost: ``heads x q x n`` per layer, the question's own attention over memory.
    """
    heads, q, dim = queries.shape
    kv_heads, n, _ = keys.shape
    group = heads // kv_heads
    logits = torch.matmul(queries.float().reshape(kv_heads, group * q, dim), keys.float().transpose(1, 2))
    logits = logits * (1.0 / math.sqrt(dim))  # [kv_heads, group * q, n]
    if usable is not None:
        lanes = usable if usable.ndim == 2 else usable[None]
        logits = logits.masked_fill(~lanes[:, None, :], -torch.inf)
    probs = torch.softmax(logits, dim=-1).nan_to_num_(0.0).view(kv_heads, group, q, n)
    mass = torch.matmul(weights.float(), probs).mean(dim=1)  # [kv_heads, n]
    if not per_head:
        mass = mass.mean(dim=0)
    return _by_page(mass, page_size, 0.0).sum(dim=-1)


def top_groups(scores: torch.Tensor, ratio: float = 0.0, count: int = 0) -> torch.Tensor:
    """Ids of the best groups along the last axis, ascending (temporal order): ``ceil(ratio * n)`` of them, or ``count``."""
    n = scores.shape[-1]
    k = min(n, max(1, math.ceil(ratio * n)) if count == 0 else count)
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


def tokens_in_groups(group_ids: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Positions (ascending) of the tokens whose group is in ``chosen`` (host-side sizes: a sync)."""
    return torch.isin(group_ids, chosen).nonzero().squeeze(1)
