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

    Observation queries are kept per layer and scored for every layer in one batched call afterwards
    (:meth:`scores`), which costs a fraction of the kernel launches of scoring layer by layer.
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
        self._observers: list[torch.Tensor] = []

    def attend(self, layer: int, inp: LayerInput, need_output: bool = True) -> Optional[torch.Tensor]:
        n = self._new_tokens = inp.keys.shape[1]
        queries = self.rotary.rotate(inp.queries, self.start)
        self.memory.write_layer(layer, inp.keys, inp.values, self.rotary.rotate(inp.keys, self.start))
        keys, values = self.memory.layer_through(layer, self.start + n)
        if self.observe:
            self._observers.append(queries[:, -self.observe:])
        return attend_causal(queries, keys, values, self.scale) if need_output else None

    def scores(self) -> Optional[torch.Tensor]:
        """``[L, kv_heads, T + n]`` float32 importance of every token, scored for all layers at once (after the
        pass, before the memory changes), or None when nothing was observed."""
        if not self._observers:
            return None
        with self.timer.section("score"):
            keys = self.memory.rotated_through(self.start + self._new_tokens)
            return observation_scores(torch.stack(self._observers), keys, self.scale, self.reduce_heads)
