"""One decoder layer of a Qwen2/Llama language model, run over an external pre-RoPE KV memory.

The transformers attention modules rotate keys before they reach a cache, so the engine runs
the layer's own submodules (norms, q/k/v/o projections, MLP) itself: it takes keys from memory,
rotates them with *compacted* positions and attends with ``scaled_dot_product_attention``.
Shapes drop the batch axis (one stream, batch 1): ``[heads, tokens, head_dim]`` for
queries/keys/values, ``[tokens, hidden]`` for hidden states.

Attention without dense masks: a clip attends to all of memory and causally to itself, which is
SDPA's *lower-right* causal alignment. On CUDA that is ``causal_lower_right`` (flash or
memory-efficient kernels, KV heads expanded so no kernel needs GQA support); on the CPU, SDPA's
fused kernel is fed query blocks of at most :data:`CPU_QUERY_BLOCK` rows, each with a boolean mask
of ``block x T``, so no buffer grows with ``heads x n x T`` (or even ``n x T``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right
from transformers.models.llama.modeling_llama import rotate_half

#: Query rows per SDPA call when a clip attends on the CPU (bounds the mask at block x T booleans).
CPU_QUERY_BLOCK = 256
#: Observation rows scored per block at most, and the most fp32 logits one scoring block may hold
#: (2**22 = 16 MiB): the softmax never materialises more, whatever the memory size.
SCORE_ROW_BLOCK = 128
SCORE_BLOCK_ELEMENTS = 2**22


class RotaryTable:
    """cos/sin of the model's rotary embedding for positions ``0..n-1``, grown on demand.

    Computed by the model's own ``rotary_emb`` module (so RoPE scaling variants stay exact).

    Attributes:
        max_position_used: the largest compacted position rotated so far (host bookkeeping).
    """

    def __init__(self, rotary_emb: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.rotary_emb = rotary_emb
        self.device = device
        self.dtype = dtype
        self.cos = self.sin = torch.empty(0, device=device, dtype=dtype)
        self.max_position_used = -1

    def ensure(self, n: int) -> None:
        """Make positions ``0..n-1`` available."""
        if n <= self.cos.shape[0]:
            return
        size = max(n, 2 * self.cos.shape[0], 256)
        self.cos, self.sin = self._table(torch.arange(size, device=self.device))

    def _table(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probe = torch.empty(0, device=self.device, dtype=self.dtype)
        cos, sin = self.rotary_emb(probe, positions.reshape(1, -1))
        return cos[0], sin[0]

    def note(self, last_position: int) -> None:
        self.max_position_used = max(self.max_position_used, last_position)

    def rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate ``x`` ``[..., n, head_dim]`` as tokens at positions ``start .. start+n-1``."""
        n = x.shape[-2]
        if n == 0:
            return x
        self.ensure(start + n)
        self.note(start + n - 1)
        return x * self.cos[start:start + n] + rotate_half(x) * self.sin[start:start + n]

    def rotate_positions(self, x: torch.Tensor, positions: torch.Tensor, bound: int) -> torch.Tensor:
        """Rotate ``x`` ``[H, n, d]`` at compacted ``positions`` (``[H, n]`` or ``[n]`` long, all ``< bound``).

        The positions live on the device, so they are not noted in :attr:`max_position_used`; the
        caller notes the largest one once it reads it.
        """
        self.ensure(bound)
        return x * self.cos[positions] + rotate_half(x) * self.sin[positions]

    def rotate_at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``[..., n, d]`` at arbitrary (e.g. original stream) ``positions`` ``[..., n]``.

        cos/sin are computed for these positions only (stream positions are unbounded, so no table);
        for scoring only, not counted as positions used.
        """
        cos, sin = self._table(positions)
        return x * cos.reshape(*positions.shape, -1) + rotate_half(x) * sin.reshape(*positions.shape, -1)


@dataclass
class LayerInput:
    """Pre-RoPE projections of new tokens at one layer.

    Attributes:
        residual: ``[n, hidden]`` layer input. queries: ``[heads, n, d]``. keys / values: ``[kv_heads, n, d]``.
    """

    residual: torch.Tensor
    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor


def project(layer: nn.Module, hidden: torch.Tensor) -> LayerInput:
    """Input norm and q/k/v projections of ``hidden`` ``[n, hidden]`` (no RoPE)."""
    attn = layer.self_attn
    normed = layer.input_layernorm(hidden)
    d = attn.head_dim
    n = hidden.shape[0]
    queries = attn.q_proj(normed).view(n, -1, d).transpose(0, 1)
    keys = attn.k_proj(normed).view(n, -1, d).transpose(0, 1)
    values = attn.v_proj(normed).view(n, -1, d).transpose(0, 1)
    return LayerInput(hidden, queries, keys, values)


def finish(layer: nn.Module, residual: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Output projection, residuals and MLP: the layer's output ``[n, hidden]``."""
    hidden = residual + layer.self_attn.o_proj(attention)
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def _merge_heads(out: torch.Tensor) -> torch.Tensor:
    """``[1, heads, n, d]`` -> ``[n, heads * d]``."""
    _, heads, n, d = out.shape
    return out[0].transpose(0, 1).reshape(n, heads * d)


def expand_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[kv_heads, T, d]`` repeated to ``[heads, T, d]`` (query head h reads KV head h // group)."""
    group = heads // x.shape[0]
    return x if group == 1 else x.repeat_interleave(group, dim=0)


def attend_causal(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of the last ``n`` tokens over ``T`` keys: all earlier keys visible, causal among the ``n``.

    Args:
        queries: ``[heads, n, d]`` rotated. keys / values: ``[kv_heads, T, d]`` (keys rotated), T >= n; the
            last ``n`` keys are the queries' own tokens.
    Returns:
        ``[n, heads * d]``.
    """
    heads, n, _ = queries.shape
    total = keys.shape[1]
    if n == 1 or n == total:  # plain (no) or square causal mask: SDPA's own is_causal
        out = F.scaled_dot_product_attention(queries[None], keys[None], values[None], is_causal=n > 1, scale=scale,
                                             enable_gqa=heads != keys.shape[0])
        return _merge_heads(out)
    if queries.device.type == "cuda":
        k, v = expand_kv(keys, heads), expand_kv(values, heads)
        out = F.scaled_dot_product_attention(queries[None], k[None], v[None], attn_mask=causal_lower_right(n, total),
                                             scale=scale)
        return _merge_heads(out)
    pieces = []
    for first in range(0, n, CPU_QUERY_BLOCK):
        last = min(n, first + CPU_QUERY_BLOCK)
        visible = total - n + last  # keys the block's last row sees; the block's rows see a prefix of them
        rows = torch.arange(first, last, device=queries.device)[:, None]
        mask = torch.arange(visible, device=queries.device)[None, :] <= total - n + rows
        out = F.scaled_dot_product_attention(queries[None, :, first:last], keys[None, :, :visible],
                                             values[None, :, :visible], attn_mask=mask, scale=scale,
                                             enable_gqa=heads != keys.shape[0])
        pieces.append(_merge_heads(out))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def attend_masked(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """Attention of ``n`` queries over ``S`` keys where ``mask`` says which keys each query may see.

    For answering (``n`` = question tokens, or 1 while decoding over a preallocated cache).

    Args:
        queries: ``[heads, n, d]`` rotated. keys / values: ``[kv_heads, S, d]``.
        mask: ``[kv_heads, n, S]`` bool (True: visible).
    Returns:
        ``[n, heads * d]``.
    """
    heads = queries.shape[0]
    group = heads // keys.shape[0]
    mask = mask if group == 1 else mask.repeat_interleave(group, dim=0)
    out = F.scaled_dot_product_attention(queries[None], keys[None], values[None], attn_mask=mask[None], scale=scale,
                                         enable_gqa=group != 1)
    return _merge_heads(out)


def observation_scores(queries: torch.Tensor, keys: torch.Tensor, scale: float, reduce_heads: str = "mean"
                       ) -> torch.Tensor:
    """VSB importance of every key: attention it receives from the ``r`` newest tokens.

    Only the ``r x T`` block is computed, in the model's dtype with an fp32 softmax, in blocks of at
    most :data:`SCORE_BLOCK_ELEMENTS` logits (rows and layers at a time). The ``r`` observation tokens
    are the last ``r`` of the ``T`` keys' tokens, causal among themselves.

    Args:
        queries: ``[..., heads, r, d]`` rotated queries of the observation tokens (e.g. ``[layers, ...]``).
        keys: ``[..., kv_heads, T, d]`` rotated keys of everything they may see.
        reduce_heads: ``mean`` or ``max`` over the query heads of each KV group.
    Returns:
        ``[..., kv_heads, T]`` float32: softmax attention averaged over the ``r`` rows, then reduced over the
        query heads of each KV group.
    """
    *lead, heads, r, d = queries.shape
    kv_heads, total = keys.shape[-3], keys.shape[-2]
    group = heads // kv_heads
    grouped = queries.reshape(-1, kv_heads, group, r, d)
    keys = keys.reshape(-1, kv_heads, total, d)
    layers = grouped.shape[0]
    rows = max(1, min(r, SCORE_ROW_BLOCK, SCORE_BLOCK_ELEMENTS // (heads * total)))
    layer_block = max(1, SCORE_BLOCK_ELEMENTS // (heads * rows * total))
    sums = torch.zeros(layers, kv_heads, group, total, device=keys.device, dtype=torch.float32)
    for first_layer in range(0, layers, layer_block):
        lay = slice(first_layer, first_layer + layer_block)
        for first in range(0, r, rows):
            last = min(r, first + rows)
            logits = torch.einsum("lhgqd,lhtd->lhgqt", grouped[lay, :, :, first:last], keys[lay]).float() * scale
            # only the last r keys can be in an observation token's future: mask that block's r x r part
            future = torch.arange(r, device=keys.device)[None, :] > torch.arange(first, last, device=keys.device)[:, None]
            logits[..., total - r:].masked_fill_(future, float("-inf"))
            sums[lay] += logits.softmax(dim=-1).sum(dim=3)
    per_head = sums / r
    reduced = per_head.amax(dim=2) if reduce_heads == "max" else per_head.mean(dim=2)
    return reduced.reshape(*lead, kv_heads, total)


def logits_of(final_norm: nn.Module, lm_head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits ``[vocab]`` (float32) from the last row of ``hidden`` ``[n, hidden]``."""
    return lm_head(final_norm(hidden[-1:]))[0].float()
