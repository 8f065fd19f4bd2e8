"""A synthetic camera scene with a known timeline, rendered with numpy (no files needed).

Coloured shapes cross a textured grey background one after another. Each shape enters the
view at one edge at ``t_enter`` and has fully left at the opposite edge at ``t_exit``, moving at
constant speed; it is (at least partly) visible exactly during ``(t_enter, t_exit)``.

Default timeline, for a scene of ``duration_s`` seconds (``D``; times scale with it, shown for
the default ``D = 24``):

========================  =====================  ==================
shape                      direction              visible (s)
========================  =====================  ==================
red circle                 left to right          0.08 D - 0.42 D (2 - 10)
blue square                top to bottom          0.33 D - 0.67 D (8 - 16)
green triangle             right to left          0.58 D - 0.92 D (14 - 22)
========================  =====================  ==================

So the view is empty at the start and the end, two shapes overlap twice (red + blue, then
blue + green). The seed only changes the background texture and each shape's lane (its
position across the direction of motion, reported in the descriptions); timing, colours and
directions are fixed. :meth:`SyntheticScene.events` returns the timeline as data, to print the
ground truth next to a model's answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .sources import FrameSource, LazyFrame

__all__ = ["COLOURS", "DIRECTIONS", "SceneEvent", "ShapeTrack", "SyntheticScene", "default_tracks"]

#: Colour names -> RGB.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "magenta": (200, 40, 200),
    "cyan": (20, 190, 200),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}

#: Direction -> (unit motion along x, along y), image axes (x right, y down).
DIRECTIONS: Dict[str, Tuple[int, int]] = {
    "left to right": (1, 0),
    "right to left": (-1, 0),
    "top to bottom": (0, 1),
    "bottom to top": (0, -1),
}

SHAPES = ("circle", "square", "triangle")


class SceneEvent(NamedTuple):
    """One entry of the ground-truth timeline: the shape is visible during (t_start, t_end) s."""

    t_start: float
    t_end: float
    description: str


@dataclass(frozen=True)
class ShapeTrack:
    """One shape crossing the view.

    Attributes:
        shape: ``"circle"``, ``"square"`` or ``"triangle"`` (pointing up).
        colour: a key of :data:`COLOURS`.
        direction: a key of :data:`DIRECTIONS`.
        t_enter / t_exit: seconds when the shape starts to enter / has fully left the view.
        size: side (diameter) as a fraction of ``min(width, height)``.
        lane: centre position across the motion, as a fraction of the view (0 = left/top edge);
            ``None``: drawn from the scene's seed in [0.25, 0.75].
    """

    shape: str
    colour: str
    direction: str
    t_enter: float
    t_exit: float
    size: float = 0.22
    lane: Optional[float] = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {tuple(COLOURS)}, got {self.colour!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {tuple(DIRECTIONS)}, got {self.direction!r}")
        if not self.t_exit > self.t_enter:
            raise ValueError(f"t_exit ({self.t_exit}) must be after t_enter ({self.t_enter})")
        if not 0 < self.size <= 1:
            raise ValueError(f"size must be in (0, 1], got {self.size}")


def default_tracks(duration_s: float = 24.0) -> List[ShapeTrack]:
    """The documented default timeline (module docstring), scaled to ``duration_s`` seconds."""
    d = float(duration_s)
    return [
        ShapeTrack("circle", "red", "left to right", 0.08 * d, 0.42 * d),
        ShapeTrack("square", "blue", "top to bottom", 1 / 3 * d, 2 / 3 * d),
        ShapeTrack("triangle", "green", "right to left", 0.58 * d, 0.92 * d),
    ]


def _mask(shape: str, side: int) -> np.ndarray:
    """Boolean ``(side, side)`` footprint of a shape."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    if shape == "circle":
        r = side / 2.0
        return (xx - r) ** 2 + (yy - r) ** 2 <= r * r
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    # triangle pointing up: apex at the top centre, base along the bottom row
    return np.abs(xx - side / 2.0) <= yy / 2.0


def _lane_words(direction: str, lane: float) -> str:
    horizontal = DIRECTIONS[direction][0] != 0
    if 0.4 <= lane <= 0.6:
        return "through the middle"
    if horizontal:
        return "in the upper part" if lane < 0.4 else "in the lower part"
    return "on the left side" if lane < 0.4 else "on the right side"


class _Sprite:
    """A track resolved to pixels: mask, colour, lane and start/end centre positions."""

    def __init__(self, track: ShapeTrack, lane: float, width: int, height: int) -> None:
        self.track = track
        self.lane = lane
        self.side = max(3, int(round(track.size * min(width, height))))
        self.mask = _mask(track.shape, self.side)
        self.colour = np.array(COLOURS[track.colour], dtype=np.uint8)
        dx, dy = DIRECTIONS[track.direction]
        half = self.side / 2.0
        span_x, span_y = width + self.side, height + self.side
        # centre at t_enter: just outside the entry edge; at t_exit: just outside the opposite edge
        if dx:
            self.start = ((-half if dx > 0 else width + half), lane * height)
            self.velocity = (dx * span_x / (track.t_exit - track.t_enter), 0.0)
        else:
            self.start = (lane * width, (-half if dy > 0 else height + half))
            self.velocity = (0.0, dy * span_y / (track.t_exit - track.t_enter))

    def description(self) -> str:
        t = self.track
        return f"a {t.colour} {t.shape} moves from {t.direction} {_lane_words(t.direction, self.lane)}"

    def visible(self, t: float) -> bool:
        return self.track.t_enter < t < self.track.t_exit

    def draw(self, frame: np.ndarray, t: float) -> None:
        """Paint the shape at time ``t`` into ``frame`` ((H, W, 3) uint8), clipped to the view."""
        elapsed = t - self.track.t_enter
        cx = self.start[0] + self.velocity[0] * elapsed
        cy = self.start[1] + self.velocity[1] * elapsed
        x0 = int(math.floor(cx - self.side / 2.0))
        y0 = int(math.floor(cy - self.side / 2.0))
        height, width = frame.shape[:2]
        fx0, fy0 = max(x0, 0), max(y0, 0)
        fx1, fy1 = min(x0 + self.side, width), min(y0 + self.side, height)
        if fx0 >= fx1 or fy0 >= fy1:
            return
        mask = self.mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        frame[fy0:fy1, fx0:fx1][mask] = self.colour


class SyntheticScene(FrameSource):
    """Deterministic synthetic video: ``(timestamp_s, rgb)`` frames at ``fps`` for ``duration_s``.

    Frames are stamped ``k / fps`` for ``k = 0 .. round(duration_s * fps) - 1``; each is a new
    ``(height, width, 3)`` uint8 RGB array. Iterate it like any :class:`FrameSource`, or call
    :meth:`render` for any time.

    Args:
        width, height: frame size in pixels.
        fps: frames per second of the rendered stream.
        duration_s: stream length in seconds.
        seed: background texture and lanes of tracks without a fixed ``lane``.
        tracks: the shapes; default :func:`default_tracks` ``(duration_s)``.
    """

    def __init__(
        self,
        width: int = 384,
        height: int = 384,
        fps: float = 2.0,
        duration_s: float = 24.0,
        seed: int = 0,
        tracks: Optional[Sequence[ShapeTrack]] = None,
    ) -> None:
        if width < 8 or height < 8:
            raise ValueError(f"scene must be at least 8x8 pixels, got {width}x{height}")
        if not (fps > 0 and duration_s > 0):
            raise ValueError(f"fps and duration_s must be positive, got fps={fps}, duration_s={duration_s}")
        super().__init__(fps)
        self.width, self.height, self.seed = int(width), int(height), int(seed)
        self.native_frames = max(1, int(round(duration_s * fps)))
        self.duration_s = (self.native_frames - 1) / fps
        self.name = f"synthetic scene {self.width}x{self.height} @ {fps} fps, {duration_s} s, seed {seed}"
        rng = np.random.default_rng(self.seed)
        self.background = self._background(rng)
        tracks = list(default_tracks(duration_s) if tracks is None else tracks)
        self.sprites = [
            _Sprite(t, t.lane if t.lane is not None else float(rng.uniform(0.25, 0.75)), self.width, self.height)
            for t in tracks
        ]

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Grey floor: a vertical gradient plus a seeded coarse noise texture, (H, W, 3) uint8."""
        gradient = np.linspace(90.0, 140.0, self.height, dtype=np.float32)[:, None]
        coarse = rng.normal(0.0, 8.0, size=(self.height // 8 + 1, self.width // 8 + 1)).astype(np.float32)
        texture = np.kron(coarse, np.ones((8, 8), dtype=np.float32))[: self.height, : self.width]
        grey = np.clip(gradient + texture, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)

    def render(self, t: float) -> np.ndarray:
        """The frame at ``t`` seconds: a new ``(height, width, 3)`` uint8 RGB array."""
        frame = self.background.copy()
        for sprite in self.sprites:
            if sprite.visible(t):
                sprite.draw(frame, t)
        return frame

    def _lazy_frames(self) -> Iterator[LazyFrame]:
        for k in range(self.native_frames):
            t = k / self.fps
            yield t, (lambda t=t: self.render(t))

    def events(self) -> List[SceneEvent]:
        """The ground truth: one :class:`SceneEvent` per shape, sorted by start time."""
        return sorted(SceneEvent(s.track.t_enter, s.track.t_exit, s.description()) for s in self.sprites)

    def visible_at(self, t: float) -> List[str]:
        """Descriptions of the shapes (partly) visible at ``t`` seconds."""
        return [s.description() for s in self.sprites if s.visible(t)]

    def describe(self) -> str:
        """The timeline as text, one line per event (``"  2.0 - 10.0 s  a red circle ..."``)."""
        return "\n".join(f"{e.t_start:6.1f} - {e.t_end:5.1f} s  {e.description}" for e in self.events())
