"""What a soak run measures: the node process's RSS, the node's ``~/memory_status`` and one sample
row every ``period_s``.

* :func:`rss_mb`: resident set size of a process (psutil when installed, else ``/proc/PID/status``).
* :func:`device_memory_mb`: device memory the node reports in its ``MemoryStatus``, when the
  message has such a field (today's ``MemoryStatus`` has none: N/A, None).
* :class:`StatusMonitor`: keeps the newest ``MemoryStatus`` and every stream's frame age from each
  status message (``status_period_s``, finer than the sample period) for the percentiles.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional

__all__ = ["rss_mb", "device_memory_mb", "StatusMonitor", "stream_row", "DEVICE_MEMORY_FIELDS"]

MB = 1e6
#: MemoryStatus fields (bytes) that would carry the node's device memory, first found wins.
DEVICE_MEMORY_FIELDS = ("device_memory_allocated_bytes", "device_memory_bytes", "cuda_memory_allocated_bytes")


def rss_mb(pid: int) -> Optional[float]:
    """RSS of process ``pid`` in MB (10**6 bytes); None when it is gone."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss / MB
        except psutil.Error:
            return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / MB  # kB
    except OSError:
        return None
    return None


def device_memory_mb(status) -> Optional[float]:
    """Device memory (MB) from a ``MemoryStatus`` that reports it, else None (N/A)."""
    for name in DEVICE_MEMORY_FIELDS:
        if status is not None and hasattr(status, name):
            return float(getattr(status, name)) / MB
    return None


def stream_row(s, stamp_offset_s: float) -> Dict[str, object]:
    """One stream's entry of a sample row from its ``StreamStatus``.

    ``newest_frame_age_s`` is the node's age minus the publisher's stamp offset (after the stamp
    jump the header stamps run behind the clock by the jump); None when nothing was ingested yet.
    """
    age = float(s.newest_frame_age_s)
    return {
        "memory_tokens": int(s.memory_tokens), "budget_tokens": int(s.budget_tokens),
        "frames_received": int(s.frames_received), "frames_sampled": int(s.frames_sampled),
        "frames_ingested": int(s.frames_ingested), "frames_dropped": int(s.frames_dropped),
        "frames_rejected": int(s.frames_rejected), "queue_depth": int(s.queue_depth),
        "ingest_rate_hz": float(s.ingest_rate_hz),
        "newest_frame_age_s": None if age < 0 else max(0.0, age + stamp_offset_s),
    }


class StatusMonitor:
    """Subscribes ``<node>/memory_status``; ``latest`` is the newest message.

    Every message appends ``(t_s, stream, corrected age)`` to ``ages`` (``t_s`` seconds after
    ``t0``, monotonic) using ``offsets()`` (stream -> current stamp offset, s).
    """

    def __init__(self, node, node_name: str, t0: float, offsets: Callable[[], Dict[str, float]]):
        from livevlm_interfaces.msg import MemoryStatus

        self.t0, self._offsets = t0, offsets
        self.latest = None
        self.messages = 0
        self.ages: List[tuple] = []
        self._received: Optional[tuple] = None   # frames_received per stream in the newest message
        self._unchanged = False                   # ... equal to those of the message before it
        self._lock = threading.Lock()
        node.create_subscription(MemoryStatus, f"{node_name}/memory_status", self._on_status, 10)

    def _on_status(self, msg) -> None:
        t = time.monotonic() - self.t0
        offsets = self._offsets()
        received = tuple((s.name, s.frames_received) for s in msg.streams)
        with self._lock:
            self.latest, self.messages = msg, self.messages + 1
            self._unchanged, self._received = received == self._received, received
            for s in msg.streams:
                age = stream_row(s, offsets.get(s.name, 0.0))["newest_frame_age_s"]
                if age is not None:
                    self.ages.append((t, s.name, age))

    def wait_settled(self, timeout_s: float) -> bool:
        """After the cameras stopped: wait for a new message whose ``frames_received`` equal the
        message before it (every stream), so that :meth:`snapshot` counts the frames still in
        flight or queued when the cameras stopped (up to a status period's worth, 15 frames of a
        30 Hz camera at 0.5 s); False after ``timeout_s``."""
        with self._lock:
            start = self.messages
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.messages > start and self._unchanged:
                    return True
            time.sleep(0.05)
        return False

    def snapshot(self):
        with self._lock:
            return self.latest, list(self.ages)
