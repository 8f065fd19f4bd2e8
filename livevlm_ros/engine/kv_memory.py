"""Pre-RoPE key/value memory of one stream, for every decoder layer and KV head at once.

Layout (token axis, temporal order)::

    [ prefix | long-term memory (compressed) | short-term memory (last W frames) ]

* Keys are stored **without** rotary position embedding, and once more **rotated** at their
  compacted position (token ``i`` of the memory has position ``i``). The rotated copy is what
  clips attend to; it is refreshed only when positions change, i.e. after a compaction, so a
  clip never re-rotates the memory. Positions never grow with the stream.
* Every token carries metadata: frame index (``-1`` for prefix text), stream timestamp (s,
  ``nan`` for prefix text), **stream position** (its index among every token prefilled since the
  last reset; VSB's coverage buckets and PaR-with-PE use it), whether it is a vision token
  (False for prefix text and for a frame's structure tokens), and its accumulated importance.
  Compression keeps a token set per layer (or per KV head), so metadata is ``[layers, kv_heads, T]``.
* Buffers are preallocated for the bounded working size and written by index (gpt-fast style);
  they grow by doubling only for the unbounded ``full`` policy or oversized frames.
  Compaction is double-buffered: survivors are gathered into the spare buffers, which are
  swapped in; nothing is gathered and copied back.
* Host offload (ReKV-style) is a capability of the memory: with ``host_offload=True`` the tokens a
  compaction evicts go to a :class:`HostStore` in host RAM, which caches each frame's mean key.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

import torch

from .host_store import HostStore

#: Per-token fields compacted together: name -> (dtype or None for the model dtype, trailing shape is head_dim).
_KV_FIELDS = ("keys", "values")
_META_FIELDS = {
    "frame": torch.long,
    "time": torch.float64,
    "position": torch.long,
    "vision": torch.bool,
    "importance": torch.float32,
}


@dataclass(frozen=True)
class MemoryLayout:
    """A CPU snapshot of where every memory token came from (for reports, plots and evidence).

    Attributes:
        frame_index / position / timestamp / vision / importance: ``[layers, kv_heads, T]`` (int64, int64,
            float64 s, bool, float32) per memory token, temporal order.
        prefix_len: tokens of the always-kept prompt prefix.
        short_term_start: token index where short-term memory begins.
        stream_tokens: tokens prefilled since the last reset (the next token's stream position).
    """

    frame_index: torch.Tensor
    position: torch.Tensor
    timestamp: torch.Tensor
    vision: torch.Tensor
    importance: torch.Tensor
    prefix_len: int
    short_term_start: int
    stream_tokens: int


class KVMemory:
    """Per-layer, per-KV-head pre-RoPE keys/values, their rotated copy, and token metadata.

    Args:
        num_layers / num_kv_heads / head_dim: the language model's KV layout.
        device / dtype: where and in which precision keys and values live.
        rotary: a :class:`~livevlm_ros.engine.decoder.RotaryTable` (rotates keys at compacted positions).
        capacity: tokens to preallocate (grows by doubling past it).
        host_offload: keep evicted tokens in a :class:`HostStore` (ReKV-style).
        recent_frames: how many of the newest frames' token counts to remember (>= short-term frames).
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, *, device: torch.device,
                 dtype: torch.dtype, rotary, capacity: int = 256, host_offload: bool = False,
                 recent_frames: int = 64) -> None:
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.device = torch.device(device)
        self.dtype = dtype
        self.rotary = rotary
        self.length = 0
        self.prefix_len = 0
        self.stream_tokens = 0  # stream position of the next token
        self.version = 0  # bumped whenever memory content changes (caches keyed on it)
        self._recent: deque = deque(maxlen=max(1, recent_frames))  # (frame index, tokens), newest last
        self._capacity = 0
        self._buf: dict[str, torch.Tensor] = {}
        self._spare: dict[str, torch.Tensor] = {}
        self._rotated = torch.empty(0)
        self.host: Optional[HostStore] = (
            HostStore(num_layers, num_kv_heads, head_dim, dtype=dtype, device=self.device) if host_offload else None
        )
        self._grow(max(1, capacity))

    # ------------------------------------------------------------------ buffers
    def _new_buffers(self, capacity: int) -> dict[str, torch.Tensor]:
        lanes = (self.num_layers, self.num_kv_heads, capacity)
        buffers = {name: torch.empty(lanes + (self.head_dim,), device=self.device, dtype=self.dtype)
                   for name in _KV_FIELDS}
        buffers.update({name: torch.empty(lanes, device=self.device, dtype=dtype)
                        for name, dtype in _META_FIELDS.items()})
        return buffers

    def _grow(self, capacity: int) -> None:
        buffers = self._new_buffers(capacity)
        rotated = torch.empty_like(buffers["keys"])
        n = self.length
        if n:
            for name, tensor in buffers.items():
                tensor[:, :, :n] = self._buf[name][:, :, :n]
            rotated[:, :, :n] = self._rotated[:, :, :n]
        self._buf, self._rotated = buffers, rotated
        self._spare = self._new_buffers(capacity)
        self._capacity = capacity

    def reserve(self, tokens: int) -> None:
        """Make room for ``tokens`` in total (grows by doubling)."""
        if tokens > self._capacity:
            self._grow(max(tokens, 2 * self._capacity))

    @property
    def capacity(self) -> int:
        return self._capacity

    # ------------------------------------------------------------------ views ([L, H, T, ...] of the first T tokens)
    def _view(self, name: str) -> torch.Tensor:
        return self._buf[name][:, :, : self.length]

    @property
    def keys(self) -> torch.Tensor:
        """``[L, H, T, d]`` pre-RoPE keys."""
        return self._view("keys")

    @property
    def values(self) -> torch.Tensor:
        return self._view("values")

    @property
    def rotated_keys(self) -> torch.Tensor:
        """``[L, H, T, d]`` keys rotated at their compacted positions ``0..T-1``."""
        return self._rotated[:, :, : self.length]

    @property
    def frame_index(self) -> torch.Tensor:
        return self._view("frame")

    @property
    def timestamp(self) -> torch.Tensor:
        return self._view("time")

    @property
    def position(self) -> torch.Tensor:
        return self._view("position")

    @property
    def vision(self) -> torch.Tensor:
        return self._view("vision")

    @property
    def importance(self) -> torch.Tensor:
        return self._view("importance")

    def layer_through(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rotated keys, values)`` ``[H, end, d]`` of one layer, including tokens written but not committed."""
        return self._rotated[layer, :, :end], self._buf["values"][layer, :, :end]

    def rotated_through(self, end: int) -> torch.Tensor:
        """``[L, H, end, d]`` rotated keys of every layer, including tokens written but not committed."""
        return self._rotated[:, :, :end]

    # ------------------------------------------------------------------ writes
    def write_layer(self, layer: int, keys: torch.Tensor, values: torch.Tensor, rotated: torch.Tensor) -> None:
        """Write one layer's ``n`` new tokens (``[H, n, d]`` each) after the memory; :meth:`commit` makes them count."""
        start, end = self.length, self.length + keys.shape[1]
        self._buf["keys"][layer, :, start:end] = keys
        self._buf["values"][layer, :, start:end] = values
        self._rotated[layer, :, start:end] = rotated

    def commit(self, frame_index: torch.Tensor, timestamp: torch.Tensor, vision: torch.Tensor,
               frame_tokens: list[tuple[int, int]]) -> None:
        """Count the ``n`` tokens written by :meth:`write_layer` in every layer.

        Args:
            frame_index: ``[n]`` int64 (``-1`` for prefix text). timestamp: ``[n]`` float64 (s).
            vision: ``[n]`` bool. frame_tokens: ``(frame index, tokens)`` of each frame, in order.
        """
        n = frame_index.shape[0]
        start, end = self.length, self.length + n
        b = self._buf
        b["frame"][:, :, start:end] = frame_index.to(self.device)
        b["time"][:, :, start:end] = timestamp.to(device=self.device, dtype=torch.float64)
        b["vision"][:, :, start:end] = vision.to(self.device)
        b["position"][:, :, start:end] = torch.arange(self.stream_tokens, self.stream_tokens + n, device=self.device)
        b["importance"][:, :, start:end] = 0.0
        self.length = end
        self.stream_tokens += n
        self._recent.extend(frame_tokens)
        self.version += 1

    def mark_prefix(self) -> None:
        """Everything committed so far is the prompt prefix (always kept, never compressed)."""
        self.prefix_len = self.length

    def add_importance(self, start: int, scores: torch.Tensor, decay: float) -> None:
        """Tokens ``[start, T)``: importance ``= decay * importance + scores`` (``scores`` ``[L, H, T - start]``)."""
        region = self._buf["importance"][:, :, start: self.length]
        region.mul_(decay).add_(scores)

    def keep(self, start: int, end: int, keep_index: torch.Tensor) -> None:
        """Keep, in each layer and head, only the tokens ``start + keep_index[l, h]`` of the region ``[start, end)``.

        Tokens after ``end`` follow the kept ones. Survivors are gathered into the spare buffers, which
        are swapped in; then the rotated keys are refreshed from ``start`` on (their positions moved).
        With host offload, the evicted tokens go to the :class:`HostStore` first.

        Args:
            keep_index: ``[L, H, k]`` int64 offsets into the region, ascending per lane.
        """
        k = keep_index.shape[2]
        tail = self.length - end
        new_length = start + k + tail
        if self.host is not None:
            self._offload(start, end, keep_index)
        index = torch.cat([
            torch.arange(start, device=self.device).expand(self.num_layers, self.num_kv_heads, -1),
            start + keep_index,
            torch.arange(end, self.length, device=self.device).expand(self.num_layers, self.num_kv_heads, -1),
        ], dim=2)
        for name, source in self._buf.items():
            target = self._spare[name]
            if source.dim() == 4:
                gathered = index[..., None].expand(-1, -1, -1, self.head_dim)
                torch.gather(source[:, :, : self.length], 2, gathered, out=target[:, :, :new_length])
            else:
                torch.gather(source[:, :, : self.length], 2, index, out=target[:, :, :new_length])
        self._buf, self._spare = self._spare, self._buf
        self.length = new_length
        self._rotated[:, :, start:new_length] = self.rotary.rotate(self._buf["keys"][:, :, start:new_length], start)
        self.version += 1

    def _offload(self, start: int, end: int, keep_index: torch.Tensor) -> None:
        """Move the region's tokens that ``keep_index`` drops to the host store (identical in every lane)."""
        n = end - start
        dropped = torch.ones(n, dtype=torch.bool, device=self.device)
        dropped[keep_index[0, 0]] = False
        index = start + dropped.nonzero().squeeze(1)  # a host sync: ReKV's offload is host-side by design
        b = self._buf
        self.host.append(b["keys"][:, :, index], b["values"][:, :, index], b["frame"][0, 0, index],
                         b["time"][0, 0, index], b["position"][0, 0, index])

    # ------------------------------------------------------------------ persistence
    def state(self) -> tuple[dict, dict]:
        """``(tensors, meta)``: CPU copies of every token's fields and the host counters (for a checkpoint)."""
        tensors = {f"memory.{name}": tensor[:, :, : self.length].cpu().clone() for name, tensor in self._buf.items()}
        meta = {"length": self.length, "prefix_len": self.prefix_len, "stream_tokens": self.stream_tokens,
                "recent": [list(item) for item in self._recent]}
        if self.host is not None:
            host_tensors, host_meta = self.host.state()
            tensors.update(host_tensors)
            meta["host"] = host_meta
        return tensors, meta

    def load_state(self, tensors: dict, meta: dict) -> None:
        """Replace the memory by a :meth:`state` (the rotated keys are recomputed, bit for bit)."""
        length = int(meta["length"])
        self.reserve(length)
        for name, buffer in self._buf.items():
            source = tensors[f"memory.{name}"]
            expected = (self.num_layers, self.num_kv_heads, length) + tuple(buffer.shape[3:])
            if tuple(source.shape) != expected:
                raise ValueError(f"memory.{name} has shape {tuple(source.shape)}, expected {expected}")
            buffer[:, :, :length] = source.to(device=self.device, dtype=buffer.dtype)
        self.length = length
        self.prefix_len = int(meta["prefix_len"])
        self.stream_tokens = int(meta["stream_tokens"])
        self._recent.clear()
        self._recent.extend(tuple(item) for item in meta["recent"])
        self._rotated[:, :, :length] = self.rotary.rotate(self._buf["keys"][:, :, :length], 0)
        if self.host is not None:
            self.host.clear()
            if "host" in meta:
                self.host.load_state(tensors, meta["host"])
        self.version += 1

    def clear(self) -> None:
        """Forget every frame token and the stream counters; keep the prefix."""
        self.length = self.prefix_len
        self.stream_tokens = self.prefix_len
        self._recent.clear()
        if self.host is not None:
            self.host.clear()
        self.version += 1

    # ------------------------------------------------------------------ reads
    def short_term_start(self, first_short_term_frame: int) -> int:
        """Token index where the short-term memory (tokens of frames >= ``first_short_term_frame``) begins.

        Short-term tokens are never compressed and are the newest appended, so this is host
        arithmetic on the remembered token counts of the newest frames (no device read).
        """
        recent = sum(tokens for frame, tokens in self._recent if frame >= first_short_term_frame)
        return self.length - recent

    def layout(self, short_term_start: int) -> MemoryLayout:
        """A CPU snapshot of the token metadata."""
        return MemoryLayout(
            frame_index=self.frame_index.cpu(), position=self.position.cpu(), timestamp=self.timestamp.cpu(),
            vision=self.vision.cpu(), importance=self.importance.cpu(), prefix_len=self.prefix_len,
            short_term_start=short_term_start, stream_tokens=self.stream_tokens,
        )

    def nbytes(self) -> int:
        """Bytes of the pre-RoPE keys and values held (not the rotated copy, spare or unused capacity)."""
        per_token = 2 * self.num_layers * self.num_kv_heads * self.head_dim * self._buf["keys"].element_size()
        return per_token * self.length

    def allocated_bytes(self) -> int:
        """Bytes of every device buffer the memory holds (preallocated capacity, rotated copy, spare)."""
        tensors = list(self._buf.values()) + list(self._spare.values()) + [self._rotated]
        return sum(t.numel() * t.element_size() for t in tensors)

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """KV bytes of one token (keys + values over every layer)."""
        return 2 * num_layers * num_kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()


def time_coverage(timestamps: torch.Tensor, first: Optional[float], last: Optional[float], bins: int = 10) -> list:
    """Share of the tokens whose time falls in each of ``bins`` equal parts of ``[first, last]``, oldest first.

    Args:
        timestamps: float64 times (s) of the tokens counted (any shape).
    Returns:
        ``bins`` floats summing to 1 (all zeros when there is no token or no time yet).
    """
    times = timestamps.flatten().double().cpu()
    if times.numel() == 0 or first is None or last is None:
        return [0.0] * bins
    span = max(last - first, 1e-9)
    index = ((times - first) / span * bins).floor().clamp(0, bins - 1).long()
    counts = torch.bincount(index, minlength=bins).double()
    return (counts / counts.sum()).tolist() if math.isfinite(span) else [0.0] * bins
