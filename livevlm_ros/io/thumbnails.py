"""A per-stream ring of small JPEG thumbnails of the frames the memory still holds.

Evidence images (the frames an answer drew on) and the memory view need pictures of frames
long after the frames themselves are gone. The ring stores a small JPEG per ingested frame, keyed
by frame index, with its stamp; it forgets frames the memory no longer holds (:meth:`retain`) and,
whatever happens, stays within a byte bound by dropping the oldest thumbnails first.
Pure Python + Pillow; thread-safe (the worker adds, other threads read).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
from PIL import Image

#: Longest side of a thumbnail (pixels) and its JPEG quality.
THUMBNAIL_SIDE = 160
THUMBNAIL_QUALITY = 80


@dataclass(frozen=True)
class Thumbnail:
    """One frame's thumbnail. ``stamp_s``: header-stamp time (s); ``jpeg``: the encoded bytes."""

    frame: int
    stamp_s: float
    jpeg: bytes

    def decode(self) -> np.ndarray:
        """RGB uint8 ``(h, w, 3)``."""
        return np.asarray(Image.open(io.BytesIO(self.jpeg)).convert("RGB"))


def encode_thumbnail(rgb: np.ndarray, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY) -> bytes:
    """JPEG bytes of ``rgb`` (uint8 ``(H, W, 3)``) shrunk so its longest side is at most ``side`` pixels."""
    image = Image.fromarray(np.ascontiguousarray(rgb))
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class ThumbnailRing:
    """Thumbnails of one stream's frames, oldest first, within ``max_bytes``.

    Args:
        max_bytes: bound on the JPEG bytes held (> 0).
        side / quality: thumbnail size and JPEG quality.
    """

    def __init__(self, max_bytes: int, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.side = side
        self.quality = quality
        self._items: "OrderedDict[int, Thumbnail]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, frame: int, stamp_s: float, rgb: np.ndarray) -> Thumbnail:
        """Encode and keep ``rgb`` as frame ``frame``; the oldest thumbnails go if the bound is passed."""
        thumbnail = Thumbnail(int(frame), float(stamp_s), encode_thumbnail(rgb, self.side, self.quality))
        self.put(thumbnail)
        return thumbnail

    def put(self, thumbnail: Thumbnail) -> None:
        """Keep an already encoded thumbnail (e.g. restored from a checkpoint)."""
        with self._lock:
            old = self._items.pop(thumbnail.frame, None)
            if old is not None:
                self._bytes -= len(old.jpeg)
            self._items[thumbnail.frame] = thumbnail
            self._bytes += len(thumbnail.jpeg)
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped.jpeg)

    def retain(self, frames: Iterable[int]) -> None:
        """Forget every thumbnail whose frame is not in ``frames`` (the frames with tokens in memory)."""
        keep = set(int(f) for f in frames)
        with self._lock:
            for frame in [f for f in self._items if f not in keep]:
                self._bytes -= len(self._items.pop(frame).jpeg)

    def retain_timeline(self, token_times: Iterable[float], first_pending_frame: int) -> None:
        """Keep the thumbnails of frames that still have tokens in memory, and of frames not yet prefilled.

        Args:
            token_times: stream time (s) of every frame token in memory (``Timeline.token_times``); a
                frame has tokens left when its stamp is among them.
            first_pending_frame: index of the first frame not yet prefilled (frames ingested so far);
                those frames have no tokens yet but will.
        """
        times = set(float(t) for t in token_times)
        with self._lock:
            frames = [f for f, t in self._items.items() if f >= first_pending_frame or t.stamp_s in times]
        self.retain(frames)

    def get(self, frame: int) -> Optional[Thumbnail]:
        with self._lock:
            return self._items.get(int(frame))

    def items(self) -> list:
        """Every thumbnail, oldest first (a copy)."""
        with self._lock:
            return list(self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
