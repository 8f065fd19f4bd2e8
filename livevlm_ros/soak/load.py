"""Load plans of a soak run (pure: numpy and Pillow, no ROS): what each camera publishes and
which questions the clients ask, decided up front from a seed so a run can be replayed.

* :class:`CameraPlan`: frame ``k`` of a camera is published at ``k / rate_hz`` seconds after the
  start; a seeded ``malformed_fraction`` of frames is corrupt (kinds cycle through
  :data:`MALFORMED_KINDS`), and from ``jump_at_s`` on the header stamps run ``jump_back_s``
  behind (a bag looping back in time, once).
* :class:`FrameBank`: a few pre-rendered 640x480 RGB frames per camera, as raw ``rgb8`` bytes or
  as JPEG, so publishing at 30 Hz costs a copy, not an encode.
* :class:`QuestionPlan`: one question every ``period_s`` per client, for a random stream with a
  random ``last_seconds`` (0 = no limit with probability ``p_unlimited``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["MALFORMED_KINDS", "FrameSpec", "CameraPlan", "FrameBank", "Payload", "malformed_payload",
           "QuestionSpec", "QuestionPlan", "QUESTIONS", "due_questions"]

#: Kinds of corrupt frames, per transport. raw: data shorter than step * height, an encoding the
#: node does not know, a 0x0 image; compressed: truncated JPEG, random bytes, an unknown format.
MALFORMED_KINDS = {
    "raw": ("truncated", "bad_encoding", "zero_size"),
    "compressed": ("truncated", "garbage", "bad_format"),
}
TRANSPORTS = tuple(MALFORMED_KINDS)


@dataclass(frozen=True)
class FrameSpec:
    """Frame ``index`` of a camera.

    Attributes:
        t_s: publish time, seconds after the start (``index / rate_hz``).
        stamp_s: header stamp relative to the start stamp (``t_s`` before the jump,
            ``t_s - jump_back_s`` after it).
        malformed: None for a good frame, else one of ``MALFORMED_KINDS[transport]``.
    """

    index: int
    t_s: float
    stamp_s: float
    malformed: Optional[str]


@dataclass(frozen=True)
class CameraPlan:
    """What one camera publishes (see the module docstring).

    Attributes:
        name: the node's stream name.
        transport: ``raw`` (sensor_msgs/Image) or ``compressed`` (sensor_msgs/CompressedImage, JPEG).
        rate_hz: frames per second (> 0).
        malformed_fraction: share of corrupt frames, in [0, 1).
        jump_at_s: publish time (s) of the first frame stamped ``jump_back_s`` back; None: no jump.
        jump_back_s: how far the stamps go back (s, > 0).
        seed: seed of the malformed-frame draw.
    """

    name: str
    transport: str
    rate_hz: float = 30.0
    malformed_fraction: float = 0.05
    jump_at_s: Optional[float] = None
    jump_back_s: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {self.rate_hz}")
        if not 0.0 <= self.malformed_fraction < 1.0:
            raise ValueError(f"malformed_fraction must be in [0, 1), got {self.malformed_fraction}")
        if not self.jump_back_s > 0:
            raise ValueError(f"jump_back_s must be > 0, got {self.jump_back_s}")
        if self.jump_at_s is not None and self.jump_at_s < 0:
            raise ValueError(f"jump_at_s must be >= 0 or None, got {self.jump_at_s}")

    def frames(self, duration_s: float) -> List[FrameSpec]:
        """Every frame published in ``[0, duration_s)``, in order."""
        count = int(np.ceil(duration_s * self.rate_hz - 1e-9))
        rng = np.random.default_rng(self.seed)
        bad = rng.random(count) < self.malformed_fraction
        kinds = MALFORMED_KINDS[self.transport]
        out, n_bad = [], 0
        for k in range(count):
            t = k / self.rate_hz
            jumped = self.jump_at_s is not None and t >= self.jump_at_s
            kind = None
            if bad[k]:
                kind, n_bad = kinds[n_bad % len(kinds)], n_bad + 1
            out.append(FrameSpec(k, t, t - self.jump_back_s if jumped else t, kind))
        return out


@dataclass(frozen=True)
class Payload:
    """Message content of one frame: raw (``width``, ``height``, ``encoding``, ``step``, ``data``) or
    compressed (``format``, ``data``; the size fields unused)."""

    data: bytes
    encoding: str = ""
    width: int = 0
    height: int = 0
    step: int = 0
    format: str = ""


class FrameBank:
    """``count`` pre-rendered (height, width, 3) uint8 RGB frames: a bright square moving over a
    gradient, one position per frame; :meth:`payload` gives frame ``k`` (cycled) for a transport."""

    def __init__(self, transport: str, width: int = 640, height: int = 480, count: int = 30, quality: int = 80):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        self.transport, self.width, self.height = transport, width, height
        self._payloads = [self._encode(self._render(k, count), quality) for k in range(count)]

    def _render(self, k: int, count: int) -> np.ndarray:
        h, w = self.height, self.width
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        img[..., 2] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
        side = max(8, min(h, w) // 5)
        x = int((w - side) * k / max(1, count - 1))
        y = (h - side) // 2
        img[y:y + side, x:x + side] = (255, 255, 0)
        return img

    def _encode(self, rgb: np.ndarray, quality: int) -> Payload:
        if self.transport == "raw":
            return Payload(rgb.tobytes(), "rgb8", self.width, self.height, self.width * 3)
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
        return Payload(buf.getvalue(), format="jpeg")

    def payload(self, k: int) -> Payload:
        return self._payloads[k % len(self._payloads)]


def malformed_payload(good: Payload, kind: str, rng: np.random.Generator) -> Payload:
    """A corrupt version of ``good`` of the given kind (see :data:`MALFORMED_KINDS`)."""
    if kind == "truncated":
        return Payload(good.data[: len(good.data) // 3], good.encoding, good.width, good.height, good.step,
                       good.format)
    if kind == "bad_encoding":
        return Payload(good.data, "no_such_encoding", good.width, good.height, good.step)
    if kind == "zero_size":
        return Payload(b"", good.encoding, 0, 0, 0)
    if kind == "garbage":
        return Payload(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes(), format="jpeg")
    if kind == "bad_format":
        return Payload(good.data, format="no_such_format")
    raise ValueError(f"unknown malformed kind {kind!r}")


#: Questions the clients ask (random-weight tiny models answer noise: only the plumbing counts).
QUESTIONS = ("What do you see?", "Did anything move?", "What colour is the square?",
             "What happened recently?", "Is the view clear?")


@dataclass(frozen=True)
class QuestionSpec:
    """One question: asked at ``t_s`` (s after the start) by ``client`` about ``stream``;
    ``last_seconds`` > 0 limits it to that much recent stream time, 0 means no limit."""

    t_s: float
    client: str
    stream: str
    question: str
    last_seconds: float


@dataclass(frozen=True)
class QuestionPlan:
    """Each client asks one question every ``period_s``, the clients offset by ``period_s / n``.

    Attributes:
        clients: client names (e.g. ``("service", "action")``).
        streams: stream names the questions pick from (uniformly).
        period_s: seconds between two questions of one client (> 0).
        max_last_seconds: ``last_seconds`` is uniform in [1, max_last_seconds] ...
        p_unlimited: ... or 0 (no limit) with this probability.
        seed: seed of the draws.
    """

    clients: Tuple[str, ...]
    streams: Tuple[str, ...]
    period_s: float = 2.0
    max_last_seconds: float = 60.0
    p_unlimited: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.clients or not self.streams:
            raise ValueError("need at least one client and one stream")
        if not (self.period_s > 0 and self.max_last_seconds >= 1 and 0 <= self.p_unlimited <= 1):
            raise ValueError(f"invalid question plan: {self}")

    def questions(self, duration_s: float) -> List[QuestionSpec]:
        """Every question asked in ``[0, duration_s)``, ordered by time."""
        rng = np.random.default_rng(self.seed)
        out = []
        offset = self.period_s / len(self.clients)
        for k in range(int(np.ceil(duration_s / self.period_s))):
            for c, client in enumerate(self.clients):
                t = k * self.period_s + c * offset
                if t >= duration_s:
                    continue
                unlimited = rng.random() < self.p_unlimited
                last = 0.0 if unlimited else float(rng.uniform(1.0, self.max_last_seconds))
                stream = self.streams[int(rng.integers(len(self.streams)))]
                out.append(QuestionSpec(t, client, stream, QUESTIONS[int(rng.integers(len(QUESTIONS)))], last))
        return sorted(out, key=lambda q: q.t_s)


def due_questions(questions: List[QuestionSpec], start: int, now_s: float,
                  max_late_s: float) -> Tuple[List[QuestionSpec], int, int]:
    """The questions of a time-ordered plan due by ``now_s``, from index ``start``.

    Returns ``(to send, skipped, next index)``: a question more than ``max_late_s`` overdue (the
    asking process was stalled) is skipped, as a periodic timer fires once after a stall, not
    once per missed period.
    """
    send, skipped, k = [], 0, start
    while k < len(questions) and questions[k].t_s <= now_s:
        if now_s - questions[k].t_s > max_late_s:
            skipped += 1
        else:
            send.append(questions[k])
        k += 1
    return send, skipped, k
