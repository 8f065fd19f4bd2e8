"""Keep frames at ``sample_fps`` by their *timestamps* (never by wall time): the one sampler of
every entry point. The node samples header stamps with it in its image callbacks, and
``livevlm_offline`` / the frame sources sample video, bag and folder times with it, so a bag
replayed live into the node and the same bag run offline keep the same frames.

**Slot grid.** Time is divided into slots of ``1/sample_fps`` seconds anchored at the first kept
frame; a frame is kept when it is the first one at or past the next due slot (minus
``tolerance_s``, which absorbs jitter of camera stamps). So the average rate is ``sample_fps``
even when the source rate is not a multiple of it: 12.5 fps sampled at 2 fps keeps 2 frames a
second (20 in 10 s), where "at least 1/fps after the last kept frame" would keep 1.79 (18).
After a gap of more than one slot the grid restarts at the first frame after it (no burst).
``sample_fps = 0`` keeps every frame whose stamp does not go backwards.

**Stamps going backwards** (a looping bag, a restarted driver, a simulation reset) follow a
:class:`JumpPolicy`:

* ``reset``: the frame is kept and starts a new *epoch*: the caller clears that stream's memory
  before ingesting it (the engine refuses timestamps earlier than the previous frame);
* ``reject``: frames are dropped with a reason until stamps pass the last kept one again (what
  the offline sources do; they count and report them).

A jump back by no more than ``tolerance_s`` is jitter, not a new timeline: that frame is skipped
like one that came too soon. Two-phase: :meth:`FrameSampler.evaluate` decides without changing
state and :meth:`FrameSampler.commit` records a kept frame once the caller decoded it, so a
corrupt frame does not delay the next good one. Not thread-safe: one caller at a time.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Optional

__all__ = ["DEFAULT_TOLERANCE_S", "JumpPolicy", "Verdict", "SampleDecision", "FrameSampler"]

#: Default jitter tolerance (s); capped at half the sampling interval.
DEFAULT_TOLERANCE_S = 0.005


class JumpPolicy(str, enum.Enum):
    """What to do with a frame whose stamp is earlier than the last kept one."""

    RESET = "reset"
    REJECT = "reject"


class Verdict(str, enum.Enum):
    """Outcome of :meth:`FrameSampler.evaluate`."""

    KEEP = "keep"  # sampled: decode it and hand it on
    SKIP = "skip"  # before the next due slot (normal rate reduction, not an error)
    REJECT = "reject"  # bad stamp: counted as rejected, with a reason


@dataclass(frozen=True)
class SampleDecision:
    """The sampler's decision for one frame.

    Attributes:
        verdict: keep, skip or reject.
        stamp_s: the frame's timestamp (s).
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
    """Rate sampler and stamp checker of one stream (see the module docstring).

    Args:
        sample_fps: frames per second of stamp time to keep; 0 keeps every frame.
        policy: :class:`JumpPolicy` (or its string) for stamps going backwards.
        tolerance_s: jitter tolerance (s); capped at half the sampling interval.
        require_stamps: reject stamps <= 0 (live topics: the publisher did not set
            ``header.stamp``); False where 0 is a valid first time (videos, image folders).

    Attributes:
        last_kept_s: stamp of the last kept (committed) frame, None before any.
        next_due_s: start of the next slot (s), None before any frame or with ``sample_fps`` 0.
        epoch: current timeline number.
    """

    def __init__(self, sample_fps: float, policy: str | JumpPolicy = JumpPolicy.RESET,
                 tolerance_s: float = DEFAULT_TOLERANCE_S, *, require_stamps: bool = False) -> None:
        self.policy = JumpPolicy(policy)
        self.require_stamps = bool(require_stamps)
        self.epoch = 0
        self.last_kept_s: Optional[float] = None
        self.next_due_s: Optional[float] = None
        self._tolerance_request = 0.0
        self.interval_s = 0.0
        self.tolerance_s = 0.0
        self.set_rate(sample_fps, tolerance_s)

    def set_rate(self, sample_fps: float, tolerance_s: Optional[float] = None) -> None:
        """Change the sampling rate (fps) and optionally the jitter tolerance (s); the grid
        restarts at the next kept frame."""
        if not (math.isfinite(sample_fps) and sample_fps >= 0.0):
            raise ValueError(f"sample_fps must be finite and >= 0, got {sample_fps!r}")
        if tolerance_s is not None:
            if not (math.isfinite(tolerance_s) and tolerance_s >= 0.0):
                raise ValueError(f"tolerance_s must be finite and >= 0, got {tolerance_s!r}")
            self._tolerance_request = float(tolerance_s)
        self.interval_s = 1.0 / sample_fps if sample_fps > 0 else 0.0
        cap = self.interval_s / 2 if self.interval_s > 0 else self._tolerance_request
        self.tolerance_s = min(self._tolerance_request, cap)
        if self.last_kept_s is not None:
            self.next_due_s = self.last_kept_s + self.interval_s if self.interval_s else None

    def evaluate(self, stamp_s: float) -> SampleDecision:
        """Decide about a frame stamped ``stamp_s`` (s); changes no state."""
        if not math.isfinite(stamp_s):
            return SampleDecision(Verdict.REJECT, stamp_s, self.epoch, f"stamp is not finite ({stamp_s})")
        if self.require_stamps and stamp_s <= 0.0:
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
                    f"stamp went back {back:.3f} s (policy reset: memory cleared, new timeline)", back,
                )
            return SampleDecision(
                Verdict.REJECT, stamp_s, self.epoch,
                f"stamp went back {back:.3f} s before the last kept frame (policy reject)", back,
            )
        if delta < 0.0 or (self.next_due_s is not None and stamp_s < self.next_due_s - self.tolerance_s):
            return SampleDecision(Verdict.SKIP, stamp_s, self.epoch)
        return SampleDecision(Verdict.KEEP, stamp_s, self.epoch)

    def commit(self, decision: SampleDecision) -> None:
        """Record a kept frame (call after it was decoded successfully)."""
        if not decision.keep:
            return
        t = decision.stamp_s
        restart = (decision.epoch > self.epoch or self.next_due_s is None
                   or t >= self.next_due_s + self.interval_s)  # new timeline, first frame, or a gap
        self.epoch = max(self.epoch, decision.epoch)
        self.last_kept_s = t
        if not self.interval_s:
            self.next_due_s = None
        elif restart:
            self.next_due_s = t + self.interval_s
        else:
            self.next_due_s += self.interval_s

    def offer(self, stamp_s: float) -> SampleDecision:
        """:meth:`evaluate` then :meth:`commit`, for callers with nothing to decode."""
        decision = self.evaluate(stamp_s)
        self.commit(decision)
        return decision

    def resume(self, last_kept_s: float) -> None:
        """Continue a timeline whose last kept frame was stamped ``last_kept_s`` (s), e.g. a memory restored
        from a checkpoint: later frames are sampled on from there, an earlier one is a jump back (policy)."""
        self.commit(SampleDecision(Verdict.KEEP, float(last_kept_s), self.epoch))

    def reset(self) -> None:
        """Start a new timeline: the next frame is kept whatever its stamp (epoch + 1)."""
        self.epoch += 1
        self.last_kept_s = None
        self.next_due_s = None

    def expected_count(self, duration_s: Optional[float], native_frames: Optional[int]) -> Optional[int]:
        """Estimated frames kept from a source spanning ``duration_s`` s with ``native_frames``
        frames (either may be None when unknown): for progress bars."""
        if not self.interval_s or duration_s is None:
            return native_frames
        estimate = int(math.floor(duration_s / self.interval_s + 1e-6)) + 1
        return estimate if native_frames is None else min(estimate, native_frames)
