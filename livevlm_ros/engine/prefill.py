"""The layer cache of clip (and prompt-prefix) prefill: new tokens attend over the stream's memory.

Each layer's new keys are rotated once, at their compacted positions ``T .. T+n-1``, and written
into the memory's preallocated buffers next to the memory's already-rotated keys; the clip then
attends over that one contiguous buffer (all of memory, causal among itself). When the memory
policy needs them, the observation tokens' attention over every key is recorded as importance.
"""

from __future__ import annotations

from typing import Optional

import torch

from .decoder import LayerInput, RotaryTable, attend_causal, observation_scores
from .kv_memory import KVMemory
from .timing import NO_TIMER


class MemoryPrefill:
    """Writes ``n`` new tokens into ``memory`` layer by layer (commit them afterwards).

    Args:
        observe: score the memory with the last ``observe`` new tokens' attention (0: no scores).
        reduce_heads: ``mean`` or ``max`` over the query heads of each KV group.
        timer: a :class:`~livevlm_ros.engine.timing.StageTimer` (the ``score`` section), or none.

    Attributes:
        scores: after the pass, ``[L, kv_heads, T + n]`` float32 importance of every token, or None.
    """

    def __init__(self, memory: KVMemory, rotary: RotaryTable, scale: float, observe: int = 0,
                 reduce_heads: str = "mean", timer=NO_TIMER) -> None:
        self.memory = memory
        self.rotary = rotary
        self.scale = scale
        self.observe = observe
        self.reduce_heads = reduce_heads
        self.timer = timer
        self.start = memory.length
        self._scores: list[torch.Tensor] = []

    def attend(self, layer: int, inp: LayerInput, need_output: bool = True) -> Optional[torch.Tensor]:
        n = inp.keys.shape[1]
        queries = self.rotary.rotate(inp.queries, self.start)
        self.memory.write_layer(layer, inp.keys, inp.values, self.rotary.rotate(inp.keys, self.start))
        keys, values = self.memory.layer_through(layer, self.start + n)
        if self.observe:
            with self.timer.section("score"):
                self._scores.append(observation_scores(queries[:, -self.observe:], keys, self.scale,
                                                       self.reduce_heads))
        return attend_causal(queries, keys, values, self.scale) if need_output else None

    @property
    def scores(self) -> Optional[torch.Tensor]:
        return torch.stack(self._scores) if self._scores else None
