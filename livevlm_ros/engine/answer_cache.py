"""The per-question KV cache: retrieved context + question + answer tokens, already rotated.

Built once per question from the stream's memory (which it never modifies) and thrown away
after the answer. Each layer may hold a different number of context tokens (retrieval and time
windows select per layer), so each layer has its own preallocated buffer and position counter.
"""

from __future__ import annotations

import torch


class AnswerCache:
    """Rotated keys and values of one answer, per layer.

    Attributes:
        next_position: per layer, the (compacted) position the next token takes.
    """

    def __init__(self, num_layers: int) -> None:
        self._keys: list[torch.Tensor] = [torch.empty(0)] * num_layers
        self._values: list[torch.Tensor] = [torch.empty(0)] * num_layers
        self._length = [0] * num_layers
        self.next_position = [0] * num_layers

    def start_layer(self, layer: int, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        """Fill ``layer`` with ``keys``/``values`` ``[kv_heads, n, d]`` (positions ``0..n-1``), room for ``room`` more."""
        heads, n, dim = keys.shape
        self._keys[layer] = keys.new_empty(heads, n + room, dim)
        self._values[layer] = values.new_empty(heads, n + room, dim)
        self._keys[layer][:, :n] = keys
        self._values[layer][:, :n] = values
        self._length[layer] = n
        self.next_position[layer] = n

    def append(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append rotated ``keys``/``values`` ``[kv_heads, m, d]`` to ``layer``."""
        start = self._length[layer]
        end = start + keys.shape[1]
        self._keys[layer][:, start:end] = keys
        self._values[layer][:, start:end] = values
        self._length[layer] = end
        self.next_position[layer] = end

    def keys(self, layer: int) -> torch.Tensor:
        return self._keys[layer][:, : self._length[layer]]

    def values(self, layer: int) -> torch.Tensor:
        return self._values[layer][:, : self._length[layer]]
