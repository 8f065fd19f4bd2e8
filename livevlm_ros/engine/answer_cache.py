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

from .decoder import LayerInput, RotaryTable, attend_causal, attend_masked, expand_kv


@dataclass
class Context:
    """What one layer may attend to when answering (pre-RoPE, temporal order, padded to ``K`` slots).

    Attributes:
        keys / values: ``[kv_heads, K, d]``. valid: ``[kv_heads, K]`` bool (False: padding or outside
            the time window). times: ``[kv_heads, K]`` float64 stream time (s), nan for prefix text.
        frames: ``[kv_heads, K]`` or ``[K]`` int64 frame index of each slot (-1: prefix text or padding).
        dense: every slot is valid (known on the host), so positions are simply ``0..K-1``.
    """

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor
    times: torch.Tensor
    frames: torch.Tensor
    dense: bool = False


class AnswerCache:
    """Rotated keys and values of one answer for every layer.

    Args:
        context_slots: ``K``, context slots per layer. room: question + answer tokens to make room for.
        build_context: ``(layer, LayerInput of the question) -> Context``, called once per layer on the
            question's pass (retrieval needs that layer's question queries).

    Attributes:
        cursor: host index of the next slot (the same in every layer).
        next_position: ``[L, kv_heads]`` device: position the next token takes in each layer and head.
        times: ``[L, kv_heads, K]`` float64 stream time of each context slot (nan: prefix or empty).
        frames: ``[L, kv_heads, K]`` int64 frame index of each context slot (-1: prefix or empty).
        mass: ``[L, K]`` float32 attention the last prompt token (the one whose output is the first answer
            token's logits) paid to each context slot, mean over heads; only with ``evidence=True``.
    """

    def __init__(self, *, num_layers: int, num_kv_heads: int, head_dim: int, context_slots: int, room: int,
                 device: torch.device, dtype: torch.dtype, rotary: RotaryTable, scale: float,
                 build_context: Callable[[int, LayerInput], Context], evidence: bool = False) -> None:
        slots = context_slots + room
        self.context_slots = context_slots
        self.keys = torch.zeros(num_layers, num_kv_heads, slots, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.valid = torch.zeros(num_layers, num_kv_heads, slots, device=device, dtype=torch.bool)
        self.next_position = torch.zeros(num_layers, num_kv_heads, device=device, dtype=torch.long)
        self.times = torch.full((num_layers, num_kv_heads, context_slots), torch.nan, device=device,
                                dtype=torch.float64)
        self.frames = torch.full((num_layers, num_kv_heads, context_slots), -1, device=device, dtype=torch.long)
        self.mass = torch.zeros(num_layers, context_slots, device=device) if evidence else None
        self.cursor = context_slots
        self._cursor = torch.tensor(context_slots, device=device)
        self._slots = torch.arange(slots, device=device)
        self._filled = [False] * num_layers
        self._dense = [False] * num_layers
        self._rotary = rotary
        self._scale = scale
        self._build = build_context
        self._step: tuple = (-1, None, None)  # (cursor, slot index of the new tokens, causal mask) of this step

    @property
    def slots(self) -> int:
        return self.valid.shape[2]

    def attend(self, layer: int, inp: LayerInput, need_output: bool = True) -> torch.Tensor:
        """Write the ``n`` new tokens of ``layer`` at the cursor and attend over the valid slots."""
        if not self._filled[layer]:
            self._fill(layer, self._build(layer, inp))
        n = inp.keys.shape[1]
        if n > 1 and self._dense[layer]:
            return self._attend_dense(layer, inp, need_output)
        heads, kv_heads = inp.queries.shape[0], inp.keys.shape[0]
        index, causal = self._step_index(n)
        positions = self.next_position[layer][:, None] + self._slots[:n]  # [kv_heads, n]
        # queries and keys rotated in one call (query head h sits at its KV head's positions)
        both = torch.cat([inp.queries, inp.keys])
        rotated = self._rotary.rotate_positions(
            both, torch.cat([positions.repeat_interleave(heads // kv_heads, dim=0), positions]), self.slots)
        queries, keys = rotated[:heads], rotated[heads:]
        self.keys[layer].index_copy_(1, index, keys)
        self.values[layer].index_copy_(1, index, inp.values)
        self.valid[layer].index_fill_(1, index, True)
        self.next_position[layer] += n
        if not need_output:
            return inp.queries.new_empty(0)
        visible = self.valid[layer][:, None, :]
        if causal is not None:
            visible = visible & causal
        if self.mass is not None and self.cursor == self.context_slots:  # the question pass
            self._note_mass(layer, queries[:, -1:], self.keys[layer], visible[:, -1])
        return attend_masked(queries, self.keys[layer], self.values[layer], visible, self._scale)

    def _attend_dense(self, layer: int, inp: LayerInput, need_output: bool) -> torch.Tensor:
        """The question's pass over a context whose every slot is valid: positions are the slots themselves
        (known on the host), and the question sees all of the context and itself causally."""
        n, start = inp.keys.shape[1], self.cursor
        end = start + n
        self.keys[layer, :, start:end] = self._rotary.rotate(inp.keys, start)
        self.values[layer, :, start:end] = inp.values
        self.valid[layer, :, start:end] = True
        self.next_position[layer] += n
        if not need_output:
            return inp.queries.new_empty(0)
        queries = self._rotary.rotate(inp.queries, start)
        if self.mass is not None:
            self._note_mass(layer, queries[:, -1:], self.keys[layer, :, :end], None)
        return attend_causal(queries, self.keys[layer, :, :end], self.values[layer, :, :end], self._scale)

    def _note_mass(self, layer: int, last_query: torch.Tensor, keys: torch.Tensor,
                   visible: torch.Tensor | None) -> None:
        """Attention of the last prompt token over the context slots (mean over heads) into :attr:`mass`."""
        heads = last_query.shape[0]
        logits = torch.matmul(last_query, expand_kv(keys, heads).transpose(1, 2))[:, 0].float() * self._scale
        if visible is not None:
            logits = logits.masked_fill(~visible.repeat_interleave(heads // visible.shape[0], dim=0), -torch.inf)
        weights = logits.softmax(dim=-1).mean(dim=0)
        self.mass[layer] = weights[: self.context_slots]

    def _step_index(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot index ``[n]`` of this step's tokens and, for ``n > 1``, their ``[1, n, S]`` causal mask (shared by
        every layer of the step)."""
        if self._step[0] != self.cursor or self._step[1].shape[0] != n:
            index = self._cursor + self._slots[:n]
            causal = (self._slots[None, :] <= index[:, None])[None] if n > 1 else None
            self._step = (self.cursor, index, causal)
        return self._step[1], self._step[2]

    def _fill(self, layer: int, context: Context) -> None:
        k = context.keys.shape[1]
        if context.dense:
            self.keys[layer, :, :k] = self._rotary.rotate(context.keys, 0)
            self.valid[layer, :, :k] = True
            self.next_position[layer] = k
        else:
            positions = (context.valid.long().cumsum(dim=-1) - 1).clamp(min=0)
            self.keys[layer, :, :k] = self._rotary.rotate_positions(context.keys, positions, max(k, 1))
            self.valid[layer, :, :k] = context.valid
            self.next_position[layer] = context.valid.sum(dim=-1)
        self.values[layer, :, :k] = context.values
        self.times[layer, :, :k] = context.times
        self.frames[layer, :, :k] = context.frames.masked_fill(~context.valid, -1)
        self._filled[layer] = True
        self._dense[layer] = context.dense

    def spans(self) -> tuple[float, float]:
        """Earliest and latest stream time (s) any layer's valid context holds (a host read; call after the answer)."""
        k = self.context_slots
        times = self.times.masked_fill(~self.valid[:, :, :k], torch.nan)
        low, high = times.nan_to_num(torch.inf).amin(), times.nan_to_num(-torch.inf).amax()
        return tuple(torch.stack([low, high]).tolist())

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
