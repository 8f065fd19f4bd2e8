"""Per-stream health: ingest rate, and the diagnostic level of a stream and of the model.

Pure functions and small classes (no rclpy): the node turns their output into
``diagnostic_msgs/DiagnosticStatus`` entries on ``/diagnostics``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Optional, Tuple

__all__ = ["OK", "WARN", "ERROR", "RateMeter", "StreamHealth", "stream_level", "model_level"]

# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR = 0, 1, 2


class RateMeter:
    """Events per second over a sliding window of monotonic time (thread-safe).

    Args:
        window_s: length of the window (s).
        clock: monotonic clock (s), injectable for tests.
    """

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = float(window_s)
        self._clock = clock
        self._times: Deque[float] = deque()
        self._first: Optional[float] = None
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            now = self._clock()
            if self._first is None:
                self._first = now
            self._times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def reset(self) -> None:
        """Forget every event (a memory reset)."""
        with self._lock:
            self._times.clear()
            self._first = None

    def rate_hz(self) -> float:
        """Events per second in the last ``window_s`` (or since the first event, if more recent)."""
        with self._lock:
            if self._first is None:
                return 0.0
            now = self._clock()
            self._trim(now)
            elapsed = min(self.window_s, now - self._first)
            return len(self._times) / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class StreamHealth:
    """What the diagnostics of one stream are computed from (one status period).

    Attributes:
        active: whether the node is active (subscribed).
        topic: resolved topic name.
        frames_received: messages received since configure or the stream's last ``~/reset``.
        sampled_in_period / dropped_in_period: frames sampled / dropped during the last period.
        newest_frame_age_s: node clock - header stamp of the newest ingested frame (s), None when none.
        ingest_rate_hz: recent frames ingested per second.
        sample_fps: the sampler's rate (0: every frame).
        stale_frame_warn_s / drop_warn_ratio: thresholds (parameters of the same names).
    """

    active: bool
    topic: str
    frames_received: int
    sampled_in_period: int
    dropped_in_period: int
    newest_frame_age_s: Optional[float]
    ingest_rate_hz: float
    sample_fps: float
    stale_frame_warn_s: float
    drop_warn_ratio: float


def stream_level(h: StreamHealth) -> Tuple[int, str]:
    """``(level, message)`` of one stream: WARN when nothing arrives, frames are old or many are dropped."""
    if not h.active:
        return OK, "inactive (lifecycle): not subscribed"
    if h.frames_received == 0:
        return WARN, (f"no frames received on {h.topic} yet: check the topic name/remapping and that the "
                      "publisher's QoS is compatible (a best-effort publisher needs qos.reliability best_effort)")
    if h.sampled_in_period > 0 and h.dropped_in_period > h.drop_warn_ratio * h.sampled_in_period:
        return WARN, (f"dropped {h.dropped_in_period} of {h.sampled_in_period} sampled frames in the last period: "
                      f"the model ingests {h.ingest_rate_hz:.1f} Hz, slower than sample_fps {h.sample_fps:g}; "
                      "lower sample_fps or use a faster device")
    if h.newest_frame_age_s is not None and h.newest_frame_age_s > h.stale_frame_warn_s:
        return WARN, (f"newest ingested frame is {h.newest_frame_age_s:.1f} s old (> stale_frame_warn_s "
                      f"{h.stale_frame_warn_s:g}): the camera stopped, or stamps are not in node time "
                      "(replaying a bag? use livevlm_replay --clock with use_sim_time:=true)")
    if h.newest_frame_age_s is None:
        return OK, f"receiving on {h.topic}, nothing ingested yet"
    return OK, f"ingesting {h.ingest_rate_hz:.1f} Hz, newest frame {h.newest_frame_age_s:.2f} s old"


def model_level(loaded: bool, name: str, random_weights: bool, error: str = "") -> Tuple[int, str]:
    """``(level, message)`` of the model: ERROR when not loaded, WARN for random test weights."""
    if not loaded:
        return ERROR, f"model not loaded: {error}" if error else "model not loaded (node not configured)"
    if random_weights:
        return WARN, f"{name} has RANDOM weights (test model): answers are not about the images"
    return OK, f"{name} loaded"
