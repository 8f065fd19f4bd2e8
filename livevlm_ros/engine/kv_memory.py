"""Pre-RoPE key/value memory of one stream, for all decoder layers at once.

Layout (token axis, temporal order)::

    [ prefix | long-term memory (compressed) | short-term memory (last W frames) ]

* Keys are stored **without** rotary position embedding; positions are given at attention
  time (compacted: token i of the memory gets position i), so they never grow with the stream.
* Every token carries its frame index (``-1`` for prefix text) and stream timestamp (s, ``nan``
  for prefix text). Compression keeps a different token set per layer, so metadata is per layer.
* Buffers are preallocated and written by index (gpt-fast style); they grow by doubling only
  while the stream is shorter than the budget (or always, for the unbounded ``full`` policy).
"""

from __future__ import annotations

import math
from typing import Optional

import torch


class KVMemory:
    """Per-layer pre-RoPE keys/values plus token metadata.

    Attributes (views of the first ``length`` tokens):
        keys / values: ``[layers, kv_heads, length, head_dim]`` in the model's dtype.
        frame_index: ``[layers, length]`` int64 frame number since reset (``-1`` = prefix text).
        timestamp: ``[layers, length]`` float64 stream time (s) of each token's frame.
        prefix_len: tokens of the always-kept prompt prefix.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, *, device: torch.device,
                 dtype: torch.dtype, initial_capacity: int = 256) -> None:
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.device = torch.device(device)
        self.dtype = dtype
        self.length = 0
        self.prefix_len = 0
        self._capacity = 0
        self._keys = self._values = self._frame = self._time = None
        self._grow(initial_capacity)

    # ------------------------------------------------------------------ buffers
    def _grow(self, capacity: int) -> None:
        shape = (self.num_layers, self.num_kv_heads, capacity, self.head_dim)
        keys = torch.empty(shape, device=self.device, dtype=self.dtype)
        values = torch.empty(shape, device=self.device, dtype=self.dtype)
        frame = torch.empty((self.num_layers, capacity), device=self.device, dtype=torch.long)
        time = torch.empty((self.num_layers, capacity), device=self.device, dtype=torch.float64)
        if self.length:
            n = self.length
            keys[:, :, :n] = self._keys[:, :, :n]
            values[:, :, :n] = self._values[:, :, :n]
            frame[:, :n] = self._frame[:, :n]
            time[:, :n] = self._time[:, :n]
        self._keys, self._values, self._frame, self._time = keys, values, frame, time
        self._capacity = capacity

    def reserve(self, tokens: int) -> None:
        """Make room for ``tokens`` in total (grows by doubling)."""
        if tokens > self._capacity:
            self._grow(max(tokens, 2 * self._capacity))

    @property
    def keys(self) -> torch.Tensor:
        return self._keys[:, :, : self.length]

    @property
    def values(self) -> torch.Tensor:
        return self._values[:, :, : self.length]

    @property
    def frame_index(self) -> torch.Tensor:
        return self._frame[:, : self.length]

    @property
    def timestamp(self) -> torch.Tensor:
        return self._time[:, : self.length]

    # ------------------------------------------------------------------ writes
    def append(self, keys: torch.Tensor, values: torch.Tensor, frame_index: torch.Tensor,
               timestamp: torch.Tensor) -> None:
        """Append ``n`` tokens to every layer.

        Args:
            keys / values: ``[layers, kv_heads, n, head_dim]`` pre-RoPE.
            frame_index: ``[n]`` or ``[layers, n]`` int64. timestamp: ``[n]`` or ``[layers, n]`` float64 (s).
        """
        n = keys.shape[2]
        self.reserve(self.length + n)
        end = self.length + n
        self._keys[:, :, self.length:end] = keys
        self._values[:, :, self.length:end] = values
        self._frame[:, self.length:end] = frame_index.to(self.device)
        self._time[:, self.length:end] = timestamp.to(device=self.device, dtype=torch.float64)
        self.length = end

    def append_prefix(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write the prompt prefix (must be the first write after :meth:`clear`)."""
        if self.length:
            raise RuntimeError("the prefix must be written into an empty memory")
        n = keys.shape[2]
        self.append(keys, values, torch.full((n,), -1, dtype=torch.long),
                    torch.full((n,), math.nan, dtype=torch.float64))
        self.prefix_len = n

    def keep(self, start: int, end: int, keep_index: torch.Tensor) -> None:
        """Keep, in each layer, only the tokens ``start + keep_index[l]`` of the region ``[start, end)``.

        Tokens after ``end`` slide down to follow the kept ones.

        Args:
            keep_index: ``[layers, k]`` int64 offsets into the region, sorted ascending per layer.
        """
        k = keep_index.shape[1]
        tail = self.length - end
        gather4 = (start + keep_index)[:, None, :, None].expand(-1, self.num_kv_heads, -1, self.head_dim)
        kept_keys = self._keys[:, :, : self.length].gather(2, gather4)
        kept_values = self._values[:, :, : self.length].gather(2, gather4)
        kept_frame = self._frame[:, : self.length].gather(1, start + keep_index)
        kept_time = self._time[:, : self.length].gather(1, start + keep_index)
        if tail:
            # clone: the tail's source and destination ranges may overlap
            tail_slice = slice(end, self.length)
            tail_keys = self._keys[:, :, tail_slice].clone()
            tail_values = self._values[:, :, tail_slice].clone()
            tail_frame = self._frame[:, tail_slice].clone()
            tail_time = self._time[:, tail_slice].clone()
        new_end = start + k
        self._keys[:, :, start:new_end] = kept_keys
        self._values[:, :, start:new_end] = kept_values
        self._frame[:, start:new_end] = kept_frame
        self._time[:, start:new_end] = kept_time
        if tail:
            self._keys[:, :, new_end:new_end + tail] = tail_keys
            self._values[:, :, new_end:new_end + tail] = tail_values
            self._frame[:, new_end:new_end + tail] = tail_frame
            self._time[:, new_end:new_end + tail] = tail_time
        self.length = new_end + tail

    def slice_tokens(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Copies of (keys, values, frame_index, timestamp) of tokens ``[start, end)`` of every layer."""
        return (self._keys[:, :, start:end].clone(), self._values[:, :, start:end].clone(),
                self._frame[:, start:end].clone(), self._time[:, start:end].clone())

    def clear(self, keep_prefix: bool = True) -> None:
        """Forget every frame token (and the prefix unless ``keep_prefix``)."""
        self.length = self.prefix_len if keep_prefix else 0
        if not keep_prefix:
            self.prefix_len = 0

    # ------------------------------------------------------------------ reads
    def short_term_start(self, first_short_term_frame: Optional[int]) -> int:
        """Token index where the short-term memory begins (tokens of frames >= ``first_short_term_frame``).

        Short-term tokens are never compressed, so layer 0 tells for all layers.
        """
        if first_short_term_frame is None:
            return self.length
        frames = self._frame[0, self.prefix_len: self.length]
        return self.prefix_len + int((frames < first_short_term_frame).sum())

    def nbytes(self) -> int:
        """Bytes of the keys and values held (not the preallocated spare capacity)."""
        per_token = 2 * self.num_layers * self.num_kv_heads * self.head_dim * self._keys.element_size()
        return per_token * self.length
