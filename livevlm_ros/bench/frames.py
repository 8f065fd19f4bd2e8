"""Benchmark frames: the real car video, sampled at a fixed rate, looped to any length.

The clip (``car-detection.mp4``, 30 s) is read once with the project's
:class:`livevlm_ros.io.sources.VideoSource` at ``fps`` frames per second, each frame resized to
``size`` (so cheap models stay cheap), and kept in memory; longer streams loop over it with
strictly increasing timestamps (loop ``k`` adds ``k x`` the clip length). Without the file (or
PyAV) the frames are seeded noise, and :attr:`FrameSource.kind` says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from PIL import Image

#: The real recording of the project's shared test data (``$LIVEVLM_SHARED_DATA`` or
#: ``../shared/data`` next to the repository, as in the tests).
SHARED_DATA = Path(os.environ.get("LIVEVLM_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
DEFAULT_VIDEO = str(SHARED_DATA / "videos" / "car-detection.mp4")


class FrameSource:
    """RGB ``uint8`` frames and stream timestamps (s) for a benchmark.

    Args:
        path: video file; ``None`` or missing -> synthetic noise frames.
        fps: sampling rate (frames per second of stream time).
        size: ``(width, height)`` in pixels of every frame.
        seed: seed of the synthetic fallback.
    """

    def __init__(self, path: Optional[str] = DEFAULT_VIDEO, fps: float = 2.0, size: tuple = (384, 216),
                 seed: int = 0) -> None:
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))
        self.kind = "synthetic-noise"
        self.path = path
        frames = self._decode(path) if path and os.path.isfile(path) else None
        if frames:
            self.kind = f"video:{os.path.basename(path)}"
            self._frames = frames
        else:
            rng = np.random.default_rng(seed)
            self._frames = [rng.integers(0, 256, (self.size[1], self.size[0], 3), dtype=np.uint8) for _ in range(16)]
        self.clip_seconds = len(self._frames) / self.fps

    def _decode(self, path: str) -> Optional[list]:
        """Frames of the video sampled at :attr:`fps`, resized; ``None`` when PyAV is missing."""
        try:
            from livevlm_ros.io.sources import VideoSource

            video = VideoSource(path, fps=self.fps)
        except ImportError:
            return None
        return [np.asarray(Image.fromarray(rgb).resize(self.size, Image.BILINEAR)) for _, rgb in video]
    @property
    def unique_frames(self) -> int:
        return len(self._frames)

    def stream(self, count: int) -> Iterator[tuple[np.ndarray, float]]:
        """``count`` frames ``(rgb, timestamp_s)``, looping the clip; timestamps strictly increase."""
        for i in range(count):
            yield self._frames[i % len(self._frames)], i / self.fps

    def describe(self) -> str:
        return (f"{self.kind} ({self.unique_frames} distinct frames at {self.fps:g} fps, "
                f"{self.size[0]}x{self.size[1]} px, looped)")
