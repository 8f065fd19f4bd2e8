"""``livevlm_offline`` evidence thumbnails and memory plots.

* ``--evidence-dir DIR``: each answer's evidence frames written as JPEG thumbnails
  (``DIR/ask003_frame00042.jpg``), their paths added to the answer's ``evidence`` entries;
* ``--memory-plot out.png``: the memory view (:func:`~livevlm_ros.io.memory_view.render_memory_view`,
  the picture the node publishes on ``~/memory_view``) at the end of the run;
* ``--memory-plot-dir DIR``: one such picture after each question (``DIR/ask003_12.50s.png``).

Thumbnails come from a :class:`~livevlm_ros.io.thumbnails.ThumbnailRing` that keeps only frames
still holding tokens in memory, as in the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from PIL import Image

from livevlm_ros.io.memory_view import StreamView, render_memory_view
from livevlm_ros.io.thumbnails import ThumbnailRing

__all__ = ["MemoryRecorder", "DEFAULT_RING_BYTES"]

#: Thumbnail bytes kept (the node's default ``thumbnail_ring_bytes``).
DEFAULT_RING_BYTES = 2_000_000


class MemoryRecorder:
    """Keeps thumbnails of the frames in memory; writes evidence thumbnails and memory plots.

    Args:
        evidence_dir / plot_dir: where evidence JPEGs / per-question plots go (None: not written).
        plot_path: the end-of-run plot (None: none).
        name: the stream's name in the plots.
    """

    def __init__(self, *, evidence_dir: Optional[str] = None, plot_dir: Optional[str] = None,
                 plot_path: Optional[str] = None, name: str = "camera", ring_bytes: int = DEFAULT_RING_BYTES) -> None:
        self.evidence_dir = Path(evidence_dir) if evidence_dir else None
        self.plot_dir = Path(plot_dir) if plot_dir else None
        self.plot_path = Path(plot_path) if plot_path else None
        self.name = name
        for folder in (self.evidence_dir, self.plot_dir, self.plot_path.parent if self.plot_path else None):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        self.ring = ThumbnailRing(ring_bytes) if self.active else None
        self.asks = 0
        self.last_evidence_times: List[float] = []

    @property
    def active(self) -> bool:
        return bool(self.evidence_dir or self.plot_dir or self.plot_path)

    def after_frame(self, stream, index: int, time_s: float, rgb) -> None:
        """Keep frame ``index``'s thumbnail; after a clip, forget frames whose tokens are gone."""
        if self.ring is None:
            return
        self.ring.add(index, time_s, rgb)
        if not stream.pending_frames:
            self.ring.retain_timeline(stream.timeline().token_times, index + 1)

    def after_answer(self, stream, entry: Dict[str, Any]) -> None:
        """Write the answer's evidence thumbnails and its memory plot; add their paths to ``entry``."""
        self.asks += 1
        evidence = entry.get("evidence") or []
        self.last_evidence_times = [e["time"] for e in evidence]
        if self.evidence_dir is not None:
            for item in evidence:
                thumb = self.ring.get(item["frame"])
                path = self.evidence_dir / f"ask{self.asks:03d}_frame{item['frame']:05d}.jpg"
                if thumb is not None:
                    path.write_bytes(thumb.jpeg)
                item["thumbnail"] = str(path) if thumb is not None else None
        if self.plot_dir is not None and stream.stats().frames_ingested:
            path = self.plot_dir / f"ask{self.asks:03d}_{entry['time']:.2f}s.png"
            self.save_plot(stream, path)
            entry["memory_plot"] = str(path)

    def save_plot(self, stream, path: Path) -> None:
        view = StreamView(self.name, stream.timeline(), self.last_evidence_times,
                          self.ring.items() if self.ring is not None else [])
        Image.fromarray(render_memory_view([view])).save(path)

    def finish(self, stream) -> Optional[str]:
        """The end-of-run plot (its path), if asked for."""
        if self.plot_path is None:
            return None
        self.save_plot(stream, self.plot_path)
        return str(self.plot_path)
