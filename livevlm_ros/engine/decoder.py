"""One decoder layer of a Qwen2/Llama language model, run over an external pre-RoPE KV memory.

The transformers attention modules rotate keys before they reach a cache, so the engine runs
the layer's own submodules (norms, q/k/v/o projections, MLP) itself: it takes pre-RoPE keys
from memory, rotates them with *compacted* positions and attends with
``scaled_dot_product_attention``. Shapes drop the batch axis (one stream, batch 1):
``[heads, tokens, head_dim]`` for queries/keys/values, ``[tokens, hidden]`` for hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import rotate_half


class RotaryTable:
    """cos/sin of the model's rotary embedding for positions ``0..n-1``, grown on demand.

    Computed by the model's own ``rotary_emb`` module (so RoPE scaling variants stay exact).
    """

    def __init__(self, rotary_emb: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.rotary_emb = rotary_emb
        self.device = device
        self.dtype = dtype
        self.cos = self.sin = torch.empty(0, device=device, dtype=dtype)
        self.max_position_used = -1

    def _ensure(self, n: int) -> None:
        if n <= self.cos.shape[0]:
            return
        size = max(n, 2 * self.cos.shape[0], 256)
        positions = torch.arange(size, device=self.device)[None]
        probe = torch.empty(0, device=self.device, dtype=self.dtype)
        cos, sin = self.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0], sin[0]

    def rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate ``x`` ``[heads, n, head_dim]`` as tokens at positions ``start .. start+n-1``."""
        n = x.shape[1]
        if n == 0:
            return x
        self._ensure(start + n)
        self.max_position_used = max(self.max_position_used, start + n - 1)
        return x * self.cos[start:start + n] + rotate_half(x) * self.sin[start:start + n]

    def rotate_at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``[heads, n, head_dim]`` at arbitrary ``positions`` ``[n]`` (for scoring only)."""
        self._ensure(int(positions.max()) + 1)
        return x * self.cos[positions] + rotate_half(x) * self.sin[positions]


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


def attend(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of the last ``n`` tokens over ``T`` keys, causal among those ``n`` (all earlier keys visible).

    Args:
        queries: ``[heads, n, d]`` rotated. keys / values: ``[kv_heads, T, d]`` (keys rotated), T >= n.
    Returns:
        ``[n, heads * d]``.
    """
    heads, n, d = queries.shape
    total = keys.shape[1]
    mask = None
    if n > 1:
        # token i (of the n new ones) sees keys j <= total - n + i
        mask = torch.ones(n, total, dtype=torch.bool, device=queries.device).tril(diagonal=total - n)
    out = F.scaled_dot_product_attention(
        queries[None], keys[None], values[None], attn_mask=mask, scale=scale, enable_gqa=heads != keys.shape[0]
    )
    return out[0].transpose(0, 1).reshape(n, heads * d)


def finish(layer: nn.Module, residual: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Output projection, residuals and MLP: the layer's output ``[n, hidden]``."""
    hidden = residual + layer.self_attn.o_proj(attention)
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def observation_scores(queries: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """VSB importance of every key: attention it receives from the ``r`` newest tokens.

    Only the ``r x T`` block is computed. The ``r`` observation tokens are the last ``r`` of the
    ``T`` keys' tokens, causal among themselves.

    Args:
        queries: ``[heads, r, d]`` rotated queries of the observation tokens.
        keys: ``[kv_heads, T, d]`` rotated keys of everything they may see.
    Returns:
        ``[T]`` float32: softmax attention averaged over the ``r`` rows, then over heads
        (with GQA: over the query heads of each KV group, then over groups).
    """
    heads, r, d = queries.shape
    kv_heads, total, _ = keys.shape
    grouped = queries.float().reshape(kv_heads, (heads // kv_heads) * r, d)
    logits = torch.einsum("hqd,htd->hqt", grouped, keys.float()) * scale
    # only the last r keys can be in an observation token's future: mask that r x r block
    future = torch.ones(r, r, dtype=torch.bool, device=queries.device).triu(diagonal=1)
    logits[:, :, total - r:].masked_fill_(future.repeat(heads // kv_heads, 1)[None], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=(0, 1))


def logits_of(final_norm: nn.Module, lm_head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits ``[vocab]`` (float32) from the last row of ``hidden`` ``[n, hidden]``."""
    return lm_head(final_norm(hidden[-1:]))[0].float()
