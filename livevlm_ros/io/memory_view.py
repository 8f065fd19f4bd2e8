"""A picture of what each stream's memory holds: a timeline of stream time, rendered with matplotlib (Agg).

For each stream one row shows, over the stream time ingested so far (seconds since its first frame):

* bars: memory tokens retained per time bin (mean over layers);
* a shaded band: the short-term window (never compressed);
* orange bars: the tokens the last question retrieved (mean over layers);
* red lines: the evidence frames of the last answer;
* a few thumbnails of retained frames along the top, at their times.

Built from a :class:`StreamView` snapshot (CPU arrays), so rendering never touches the engine.
The result is an RGB ``uint8`` array: publish it as ``sensor_msgs/Image`` (rgb8) or save it as PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from livevlm_ros.engine.results import Timeline

from .thumbnails import Thumbnail

#: Time bins along each stream's timeline.
DEFAULT_BINS = 60
#: Thumbnails drawn per stream at most.
MAX_THUMBNAILS = 6


@dataclass
class StreamView:
    """A snapshot of one stream's memory for :func:`render_memory_view`.

    Attributes:
        name: stream name.
        timeline: the engine's :class:`~livevlm_ros.engine.results.Timeline` of the stream.
        evidence_times: stream times (s) of the last answer's evidence frames.
        thumbnails: thumbnails of retained frames (a few are drawn).
    """

    name: str
    timeline: Timeline
    evidence_times: Sequence[float] = ()
    thumbnails: Sequence[Thumbnail] = field(default_factory=list)


def _spread(thumbnails: Sequence[Thumbnail], count: int) -> list:
    """``count`` thumbnails evenly spread over the list (oldest to newest)."""
    if len(thumbnails) <= count:
        return list(thumbnails)
    picks = np.linspace(0, len(thumbnails) - 1, count).round().astype(int)
    return [thumbnails[i] for i in sorted(set(picks.tolist()))]


def render_memory_view(streams: Sequence[StreamView], width: int = 960, row_height: int = 260,
                       bins: int = DEFAULT_BINS) -> np.ndarray:
    """RGB uint8 ``(rows * row_height, width, 3)`` picture of every stream's memory (see the module doc)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = max(1, len(streams))
    dpi = 100
    figure = Figure(figsize=(width / dpi, rows * row_height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    row_frac = 1.0 / rows
    empty = Timeline(None, None, [], 1, None, None, None)
    for row, view in enumerate(streams or [StreamView("(no stream)", empty)]):
        bottom = 1.0 - (row + 1) * row_frac
        axes = figure.add_axes((0.07, bottom + 0.14 * row_frac, 0.9, 0.5 * row_frac))
        _draw_row(figure, axes, view, bins, bottom, row_frac)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _draw_row(figure, axes, view: StreamView, bins: int, bottom: float, row_frac: float) -> None:
    line = view.timeline
    start = line.first_time
    if start is None or line.last_time is None:
        axes.set_title(f"{view.name}: no frame yet", fontsize=9, loc="left")
        axes.set_xticks([])
        axes.set_yticks([])
        return
    span = max(line.last_time - start, 1e-3)
    edges = np.linspace(0.0, span, bins + 1)
    layers = max(1, line.layers)
    counts, _ = np.histogram(np.asarray(line.token_times, dtype=np.float64) - start, bins=edges)
    width = edges[1] - edges[0]
    axes.bar(edges[:-1], counts / layers, width=width, align="edge", color="#4c78a8", label="tokens in memory")
    if line.retrieved_times:
        retrieved, _ = np.histogram(np.asarray(line.retrieved_times, dtype=np.float64) - start, bins=edges)
        axes.bar(edges[:-1], retrieved / layers, width=width * 0.5, align="edge", color="#f58518",
                 label="retrieved by the last question")
    if line.short_term_start is not None:
        axes.axvspan(max(0.0, line.short_term_start - start), span, color="#54a24b", alpha=0.25,
                     label="short-term window")
    for i, t in enumerate(view.evidence_times):
        axes.axvline(t - start, color="#e45756", linewidth=1.5, label="evidence" if i == 0 else None)
    axes.set_xlim(0.0, span)
    axes.set_xlabel("stream time since the first frame (s)", fontsize=8)
    axes.set_ylabel("tokens / layer", fontsize=8)
    axes.tick_params(labelsize=7)
    total = len(line.token_times) / layers
    budget = f" (long-term budget {line.budget_tokens})" if line.budget_tokens else ""
    axes.set_title(f"{view.name}: {total:.0f} frame tokens per layer{budget}, {span:.1f} s of stream",
                   fontsize=9, loc="left")
    axes.legend(fontsize=7, loc="upper left", ncol=4, frameon=False)
    for thumb in _spread(view.thumbnails, MAX_THUMBNAILS):
        x = 0.07 + 0.9 * min(max((thumb.stamp_s - start) / span, 0.0), 1.0)
        inset = figure.add_axes((x - 0.035, bottom + 0.7 * row_frac, 0.07, 0.27 * row_frac))
        inset.imshow(thumb.decode())
        inset.set_axis_off()
