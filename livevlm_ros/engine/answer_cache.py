"""The per-question KV cache: [retrieved context | question | answer], rotated, preallocated.

Built once per question from the stream's memory (which it never modifies) and thrown away after
the answer. Every layer has the same number of slots: ``K`` context slots (each layer's retrieved
context, padded; ``valid`` says which slots hold a token), then the question, then room for the
answer. Positions are compacted per layer and KV head: the ``i``-th valid context token has
position ``i``, the question and answer follow.

Writes go to a device cursor and every step attends over the whole buffer under the ``valid``
mask, so a decode step has static shapes and reads nothing back to the host: ready for CUDA-graph
capture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .decoder import LayerInput, RotaryTable, attend_masked


@dataclass
class Context:
    """What one layer may attend to when answering (pre-RoPE, temporal order, padded to ``K`` slots).

    Attributes:
        keys / values: ``[kv_heads, K, d]``. valid: ``[kv_heads, K]`` bool (False: padding or outside
            the time window). times: ``[kv_heads, K]`` float64 stream time (s), nan for prefix text.
    """

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor
    times: torch.Tensor


class AnswerCache:
    """Rotated keys and values of one answer for every layer.

    Args:
        context_slots: ``K``, context slots per layer. room: question + answer tokens to make room for.
        build_context: ``(layer, LayerInput of the question) -> Context``, called once per layer on the
            question's pass (retrieval needs that layer's question queries).

    Attributes:
        cursor: host index of the next slot (the same in every layer).
        next_position: ``[L, kv_heads]`` device: position the next token takes in each layer and head.
        span_low / span_high: ``[L]`` device: the earliest / latest stream time each layer's context holds.
    """

    def __init__(self, *, num_layers: int, num_kv_heads: int, head_dim: int, context_slots: int, room: int,
                 device: torch.device, dtype: torch.dtype, rotary: RotaryTable, scale: float,
                 build_context: Callable[[int, LayerInput], Context]) -> None:
        slots = context_slots + room
        self.context_slots = context_slots
        self.keys = torch.zeros(num_layers, num_kv_heads, slots, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.valid = torch.zeros(num_layers, num_kv_heads, slots, device=device, dtype=torch.bool)
        self.next_position = torch.zeros(num_layers, num_kv_heads, device=device, dtype=torch.long)
        self.span_low = torch.full((num_layers,), torch.inf, device=device, dtype=torch.float64)
        self.span_high = torch.full((num_layers,), -torch.inf, device=device, dtype=torch.float64)
        self.cursor = context_slots
        self._cursor = torch.tensor(context_slots, device=device)
        self._slots = torch.arange(slots, device=device)
        self._filled = [False] * num_layers
        self._rotary = rotary
        self._scale = scale
        self._build = build_context

    @property
    def slots(self) -> int:
        return self.valid.shape[2]

    def attend(self, layer: int, inp: LayerInput, need_output: bool = True) -> torch.Tensor:
        """Write the ``n`` new tokens of ``layer`` at the cursor and attend over the valid slots."""
        if not self._filled[layer]:
            self._fill(layer, self._build(layer, inp))
        n = inp.keys.shape[1]
        heads = inp.queries.shape[0]
        positions = self.next_position[layer][:, None] + torch.arange(n, device=inp.keys.device)  # [kv_heads, n]
        bound = self.slots
        keys = self._rotary.rotate_positions(inp.keys, positions, bound)
        group = heads // keys.shape[0]
        queries = self._rotary.rotate_positions(inp.queries, positions.repeat_interleave(group, dim=0), bound)
        index = self._cursor + torch.arange(n, device=keys.device)
        self.keys[layer].index_copy_(1, index, keys)
        self.values[layer].index_copy_(1, index, inp.values)
        self.valid[layer].index_fill_(1, index, True)
        self.next_position[layer] += n
        if not need_output:
            return inp.queries.new_empty(0)
        visible = self.valid[layer][:, None, :]
        if n > 1:  # causal among the new tokens
            visible = visible & (self._slots[None, :] <= index[:, None])[None]
        return attend_masked(queries, self.keys[layer], self.values[layer], visible, self._scale)

    def _fill(self, layer: int, context: Context) -> None:
        k = context.keys.shape[1]
        positions = (context.valid.long().cumsum(dim=1) - 1).clamp(min=0)
        self.keys[layer, :, :k] = self._rotary.rotate_positions(context.keys, positions, max(k, 1))
        self.values[layer, :, :k] = context.values
        self.valid[layer, :, :k] = context.valid
        self.next_position[layer] = context.valid.sum(dim=1)
        times = context.times.masked_fill(~context.valid, torch.nan)
        self.span_low[layer] = times.nan_to_num(torch.inf).amin()
        self.span_high[layer] = times.nan_to_num(-torch.inf).amax()
        self._filled[layer] = True

    def advance(self, n: int) -> None:
        """Move the cursor past ``n`` tokens written in every layer."""
        self.cursor += n
        self._cursor += n

    def checkpoint(self) -> tuple[int, torch.Tensor]:
        """The cursor and positions now, to :meth:`rewind` to (e.g. between scored answer options)."""
        return self.cursor, self.next_position.clone()

    def rewind(self, state: tuple[int, torch.Tensor]) -> None:
        """Forget every token written after :meth:`checkpoint` returned ``state``."""
        cursor, positions = state
        self.valid[:, :, cursor:] = False
        self.next_position.copy_(positions)
        self.cursor = cursor
        self._cursor.fill_(cursor)
