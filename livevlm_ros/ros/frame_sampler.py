"""Keep camera frames at ``sample_fps`` by their *header stamps* (never by wall time).

A frame is kept when ``stamp - last_kept >= 1/sample_fps - tolerance``; ``tolerance`` absorbs
tiny jitter of camera stamps (a 2 Hz sampler on a 30 Hz camera keeps the frame stamped
0.4999 s after the last one). ``sample_fps = 0`` keeps every frame whose stamp does not go
backwards.

Stamps going backwards (a bag replayed with ``--loop``, a restarted driver, a simulation reset)
are handled by a policy:

* ``reset``:  the frame is kept and starts a new *epoch*: the caller must clear the stream's
  memory before ingesting it (the engine refuses timestamps earlier than the previous frame).
* ``reject``: the frame is dropped with a reason until stamps pass the last kept one again.

A jump back by no more than ``tolerance`` is jitter, not a new timeline: the frame is skipped
like one that came too soon. The sampler is two-phase: :meth:`FrameSampler.evaluate` decides
without changing state and :meth:`FrameSampler.commit` records a kept frame once the caller
has decoded it, so a corrupt frame does not delay the next good one. Not thread-safe: one
image callback at a time (the node uses a mutually exclusive callback group per stream).
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Optional

__all__ = ["JumpPolicy", "Verdict", "SampleDecision", "FrameSampler", "cdr_header_stamp"]


class JumpPolicy(str, enum.Enum):
    """What to do with a frame whose stamp is earlier than the last kept one."""

    RESET = "reset"
    REJECT = "reject"


class Verdict(str, enum.Enum):
    """Outcome of :meth:`FrameSampler.evaluate`."""

    KEEP = "keep"  # sampled: decode and hand it to the worker
    SKIP = "skip"  # too soon after the last kept frame (normal rate reduction, not an error)
    REJECT = "reject"  # bad stamp: counted as rejected, with a reason


@dataclass(frozen=True)
class SampleDecision:
    """The sampler's decision for one frame.

    Attributes:
        verdict: keep, skip or reject.
        stamp_s: the frame's header stamp (s).
        epoch: timeline number the frame belongs to; a kept frame whose epoch differs from the
            stream's current one must be preceded by a memory reset.
        reason: human-readable reason for a reject (or for a new epoch); empty otherwise.
        jumped_back_s: how far the stamp went back (s), 0 when it did not.
    """

    verdict: Verdict
    stamp_s: float
    epoch: int
    reason: str = ""
    jumped_back_s: float = 0.0

    @property
    def keep(self) -> bool:
        return self.verdict is Verdict.KEEP

    @property
    def starts_new_epoch(self) -> bool:
        return self.jumped_back_s > 0.0 and self.keep


class FrameSampler:
    """Rate sampler and stamp checker of one stream.

    Args:
        sample_fps: frames per second of *stamp* time to keep; 0 keeps every frame.
        policy: :class:`JumpPolicy` (or its string) for stamps going backwards.
        tolerance_s: jitter tolerance (s); capped at half the sampling interval.
    """

    def __init__(self, sample_fps: float, policy: str | JumpPolicy = JumpPolicy.RESET, tolerance_s: float = 0.005):
        self.policy = JumpPolicy(policy)
        self._tolerance_request = 0.0
        self.interval_s = 0.0
        self.tolerance_s = 0.0
        self.set_rate(sample_fps, tolerance_s)
        self.epoch = 0
        self.last_kept_s: Optional[float] = None

    def set_rate(self, sample_fps: float, tolerance_s: Optional[float] = None) -> None:
        """Change the sampling rate (fps) and optionally the jitter tolerance (s)."""
        if not (math.isfinite(sample_fps) and sample_fps >= 0.0):
            raise ValueError(f"sample_fps must be finite and >= 0, got {sample_fps!r}")
        if tolerance_s is not None:
            if not (math.isfinite(tolerance_s) and tolerance_s >= 0.0):
                raise ValueError(f"tolerance_s must be finite and >= 0, got {tolerance_s!r}")
            self._tolerance_request = float(tolerance_s)
        self.interval_s = 1.0 / sample_fps if sample_fps > 0 else 0.0
        cap = self.interval_s / 2 if self.interval_s > 0 else self._tolerance_request
        self.tolerance_s = min(self._tolerance_request, cap)

    def evaluate(self, stamp_s: float) -> SampleDecision:
        """Decide about a frame stamped ``stamp_s`` (s); changes no state."""
        if not math.isfinite(stamp_s):
            return SampleDecision(Verdict.REJECT, stamp_s, self.epoch, f"header stamp is not finite ({stamp_s})")
        if stamp_s <= 0.0:
            return SampleDecision(
                Verdict.REJECT, stamp_s, self.epoch,
                "header stamp is zero: the publisher does not set header.stamp (frames are sampled and "
                "windowed by header time, so the camera driver must stamp its images)",
            )
        last = self.last_kept_s
        if last is None:
            return SampleDecision(Verdict.KEEP, stamp_s, self.epoch)
        delta = stamp_s - last
        if delta < -self.tolerance_s:
            back = -delta
            if self.policy is JumpPolicy.RESET:
                return SampleDecision(
                    Verdict.KEEP, stamp_s, self.epoch + 1,
                    f"header stamp went back {back:.3f} s (policy reset: memory cleared, new timeline)", back,
                )
            return SampleDecision(
                Verdict.REJECT, stamp_s, self.epoch,
                f"header stamp went back {back:.3f} s before the last kept frame (policy reject)", back,
            )
        if delta < self.interval_s - self.tolerance_s or (self.interval_s == 0.0 and delta < 0.0):
            return SampleDecision(Verdict.SKIP, stamp_s, self.epoch)
        return SampleDecision(Verdict.KEEP, stamp_s, self.epoch)

    def commit(self, decision: SampleDecision) -> None:
        """Record a kept frame (call after it was decoded successfully)."""
        if not decision.keep:
            return
        self.epoch = max(self.epoch, decision.epoch)
        self.last_kept_s = decision.stamp_s

    def offer(self, stamp_s: float) -> SampleDecision:
        """:meth:`evaluate` then :meth:`commit`, for callers with nothing to decode."""
        decision = self.evaluate(stamp_s)
        self.commit(decision)
        return decision

    def reset(self) -> None:
        """Start a new timeline: the next frame is kept whatever its stamp (epoch + 1)."""
        self.epoch += 1
        self.last_kept_s = None


def cdr_header_stamp(data: bytes) -> float:
    """Header stamp (s) of a CDR-serialized message that starts with a ``std_msgs/Header``
    (``sensor_msgs/Image``, ``CompressedImage``...), read without deserializing the message.

    Layout: a 4-byte encapsulation header (byte 1: 0 big-endian, 1 little-endian), then
    ``stamp.sec`` (int32) and ``stamp.nanosec`` (uint32). Lets the node skip frames it will not
    sample without paying for the conversion of their pixels into Python objects.

    Raises:
        ValueError: fewer than 12 bytes, or an unknown encapsulation.
    """
    if len(data) < 12:
        raise ValueError(f"serialized message too short for a header: {len(data)} bytes")
    if data[0] != 0 or data[1] not in (0, 1):
        raise ValueError(f"unsupported CDR encapsulation {bytes(data[:2]).hex()}")
    sec, nanosec = struct.unpack_from("<iI" if data[1] == 1 else ">iI", data, 4)
    return float(sec) + float(nanosec) * 1e-9
