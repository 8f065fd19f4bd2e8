"""Host-RAM store of evicted KV tokens with cached per-frame mean keys (ReKV-style offload).

Tokens arrive in temporal order, identical in every layer and KV head (they are what a sliding
window pushed out). Keys and values stay in host memory (pinned when the model is on CUDA, so
copies back are asynchronous); each frame's mean pre-RoPE key, the representative its retrieval
scores, is kept on the model's device and updated incrementally as a frame's tokens arrive.
"""

from __future__ import annotations

import bisect
from typing import Optional

import torch


class HostStore:
    """Offloaded tokens of one stream.

    Attributes:
        length: tokens held. frame_ids / frame_times / frame_start / frame_end: per stored frame
            (host lists, temporal order): frame index, stream time (s), token range ``[start, end)``.
        positions: ``[length]`` int64 original stream position of every stored token (host).
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, *, dtype: torch.dtype,
                 device: torch.device, initial_capacity: int = 1024) -> None:
        self.shape = (num_layers, num_kv_heads, head_dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self._pin = self.device.type == "cuda"
        self.length = 0
        self._keys = self._values = None
        self._positions = torch.empty(0, dtype=torch.long)
        self._capacity = 0
        self._mean_sums = torch.zeros(num_layers, num_kv_heads, 0, head_dim, device=self.device, dtype=torch.float32)
        self.frame_ids: list[int] = []
        self.frame_times: list[float] = []
        self.frame_start: list[int] = []
        self.frame_end: list[int] = []
        self._grow(initial_capacity)

    def _grow(self, capacity: int) -> None:
        layers, heads, dim = self.shape
        keys = torch.empty(layers, heads, capacity, dim, dtype=self.dtype, pin_memory=self._pin)
        values = torch.empty_like(keys, pin_memory=self._pin)
        positions = torch.empty(capacity, dtype=torch.long)
        if self.length:
            keys[:, :, : self.length] = self._keys[:, :, : self.length]
            values[:, :, : self.length] = self._values[:, :, : self.length]
            positions[: self.length] = self._positions[: self.length]
        self._keys, self._values, self._positions, self._capacity = keys, values, positions, capacity

    def append(self, keys: torch.Tensor, values: torch.Tensor, frame_index: torch.Tensor,
               timestamp: torch.Tensor, position: torch.Tensor) -> None:
        """Add ``n`` evicted tokens: keys/values ``[L, H, n, d]`` (device), frame index / time / stream position ``[n]``."""
        n = keys.shape[2]
        if n == 0:
            return
        if self.length + n > self._capacity:
            self._grow(max(self.length + n, 2 * self._capacity))
        start = self.length
        self._keys[:, :, start:start + n].copy_(keys)
        self._values[:, :, start:start + n].copy_(values)
        self._positions[start:start + n] = position.cpu()
        frames = frame_index.tolist()
        times = timestamp.tolist()
        # per-frame mean keys: token i belongs to the stored frame slot of its frame index
        slots = []
        for i, frame in enumerate(frames):
            if not self.frame_ids or self.frame_ids[-1] != frame:
                self.frame_ids.append(frame)
                self.frame_times.append(times[i])
                self.frame_start.append(start + i)
                self.frame_end.append(start + i)
            self.frame_end[-1] = start + i + 1
            slots.append(len(self.frame_ids) - 1)
        count = len(self.frame_ids)
        if count > self._mean_sums.shape[2]:
            grown = torch.zeros(*self.shape[:2], max(count, 2 * self._mean_sums.shape[2]), self.shape[2],
                                device=self.device, dtype=torch.float32)
            grown[:, :, : self._mean_sums.shape[2]] = self._mean_sums
            self._mean_sums = grown
        slot_index = torch.tensor(slots, device=self.device)
        self._mean_sums.index_add_(2, slot_index, keys.float())
        self.length += n

    def frame_means(self) -> torch.Tensor:
        """``[L, H, F, d]`` float32 mean pre-RoPE key of every stored frame (on the model's device)."""
        counts = torch.tensor([e - s for s, e in zip(self.frame_start, self.frame_end)], device=self.device)
        return self._mean_sums[:, :, : len(self.frame_ids)] / counts.clamp(min=1)[None, None, :, None]

    def frames_in(self, since: Optional[float], until: Optional[float]) -> list[int]:
        """Slots of the stored frames whose time lies in ``[since, until]`` (open ends allowed)."""
        low = 0 if since is None else bisect.bisect_left(self.frame_times, since)
        high = len(self.frame_times) if until is None else bisect.bisect_right(self.frame_times, until)
        return list(range(low, high))

    def gather(self, layer: int, slots: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys, values ``[H, n, d]`` and times ``[n]`` of the frames ``slots`` (ascending), copied to the device."""
        index = [i for slot in slots for i in range(self.frame_start[slot], self.frame_end[slot])]
        times = [self.frame_times[slot] for slot in slots for _ in range(self.frame_end[slot] - self.frame_start[slot])]
        index_t = torch.tensor(index, dtype=torch.long)
        keys = self._keys[layer].index_select(1, index_t)
        values = self._values[layer].index_select(1, index_t)
        if self._pin:
            keys, values = keys.pin_memory(), values.pin_memory()
        return (keys.to(self.device, non_blocking=True), values.to(self.device, non_blocking=True),
                torch.tensor(times, dtype=torch.float64, device=self.device))

    @property
    def positions(self) -> torch.Tensor:
        return self._positions[: self.length]

    def token_times(self) -> torch.Tensor:
        """``[length]`` float64 stream time of every stored token (host)."""
        return torch.tensor([t for t, s, e in zip(self.frame_times, self.frame_start, self.frame_end)
                             for _ in range(e - s)], dtype=torch.float64)

    def state(self) -> tuple[dict, dict]:
        """``(tensors, meta)`` of what the store holds (for a checkpoint)."""
        n, frames = self.length, len(self.frame_ids)
        tensors = {"host.keys": self._keys[:, :, :n].clone(), "host.values": self._values[:, :, :n].clone(),
                   "host.position": self._positions[:n].clone(),
                   "host.mean_sums": self._mean_sums[:, :, :frames].cpu().clone()}
        meta = {"length": n, "frame_ids": self.frame_ids, "frame_times": self.frame_times,
                "frame_start": self.frame_start, "frame_end": self.frame_end}
        return tensors, meta

    def load_state(self, tensors: dict, meta: dict) -> None:
        """Replace the store's content by a :meth:`state`."""
        n = int(meta["length"])
        if n > self._capacity:
            self._grow(n)
        self._keys[:, :, :n] = tensors["host.keys"].to(self.dtype)
        self._values[:, :, :n] = tensors["host.values"].to(self.dtype)
        self._positions[:n] = tensors["host.position"]
        self.frame_ids, self.frame_times = list(meta["frame_ids"]), list(meta["frame_times"])
        self.frame_start, self.frame_end = list(meta["frame_start"]), list(meta["frame_end"])
        sums = tensors["host.mean_sums"].to(self.device)
        self._mean_sums = torch.zeros(*self.shape[:2], max(1, sums.shape[2]), self.shape[2], device=self.device,
                                      dtype=torch.float32)
        self._mean_sums[:, :, : sums.shape[2]] = sums
        self.length = n

    def clear(self) -> None:
        self.length = 0
        self._mean_sums.zero_()
        self.frame_ids.clear()
        self.frame_times.clear()
        self.frame_start.clear()
        self.frame_end.clear()

    def nbytes(self) -> int:
        """Bytes of the keys and values held."""
        layers, heads, dim = self.shape
        return 2 * layers * heads * dim * self.length * torch.empty(0, dtype=self.dtype).element_size()
