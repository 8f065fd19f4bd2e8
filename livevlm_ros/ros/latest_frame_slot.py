"""Latest-wins bounded hand-over of frames from an image callback to the worker thread.

The image callback :meth:`LatestFrameSlot.put`\\ s each sampled frame and returns at once: when
the slot already holds ``depth`` frames the *oldest* is overwritten and counted as dropped.
The worker :meth:`take`\\ s frames oldest-first. So the callback never waits for the model, and
under overload the worker always gets the newest frames: the age of the newest ingested frame
stays bounded by about one ingest time (plus ``depth - 1`` frame intervals), instead of growing
with a backlog as with a deep subscriber queue.

Thread-safe: one lock guards a deque; every method holds it for O(1) work (``clear``: O(depth)).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Deque, Generic, List, Optional, TypeVar

__all__ = ["LatestFrameSlot"]

T = TypeVar("T")


class LatestFrameSlot(Generic[T]):
    """A bounded FIFO that drops its oldest item when full.

    Args:
        depth: frames held at most (>= 1); 1 keeps only the newest.

    Attributes:
        dropped: items overwritten before the worker took them (or cleared), since creation or
            the last :meth:`reset`.
        put_count / taken: items put / taken since creation or the last :meth:`reset`.
    """

    def __init__(self, depth: int = 1) -> None:
        if int(depth) < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = int(depth)
        self._items: Deque[T] = deque()
        self._lock = threading.Lock()
        self.dropped = 0
        self.put_count = 0
        self.taken = 0

    def put(self, item: T) -> Optional[T]:
        """Store ``item`` (never blocks); returns the overwritten item, if one was dropped."""
        with self._lock:
            self.put_count += 1
            evicted = None
            if len(self._items) >= self.depth:
                evicted = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            return evicted

    def take(self) -> Optional[T]:
        """The oldest pending item, or ``None`` when empty."""
        with self._lock:
            if not self._items:
                return None
            self.taken += 1
            return self._items.popleft()

    def take_all(self) -> List[T]:
        """Every pending item, oldest first."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self.taken += len(items)
            return items

    def clear(self) -> int:
        """Drop every pending item (counted as dropped); returns how many."""
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self.dropped += n
            return n

    def reset(self) -> None:
        """Drop every pending item and zero the counters (a memory reset starts the count again)."""
        with self._lock:
            self._items.clear()
            self.dropped = self.put_count = self.taken = 0

    def newest(self) -> Optional[T]:
        """The newest pending item without taking it."""
        with self._lock:
            return self._items[-1] if self._items else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
