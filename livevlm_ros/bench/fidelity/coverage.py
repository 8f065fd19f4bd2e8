"""The VSB coverage simulation of issue 7 (pure tensors, no model): where in the stream memory sits.

Budget ``M`` tokens, frames of ``frame_tokens`` tokens, clips of ``clip_frames`` frames, ``clips``
compressions with uniform random importance scores, bucket capacity B = 1, saliency share 0.5.
After each clip the long-term region (memory + new clip) is cut back to M with
:func:`~livevlm_ros.engine.compression.keep_vision_sink_buckets`, buckets over the memory index
(the old reading) or over stream positions (the fix). Reported: the share of the final memory in
each quarter of the stream, oldest first.
"""

from __future__ import annotations

import torch

from livevlm_ros.engine.compression import keep_top_k, keep_vision_sink_buckets


def simulate(buckets: str, budget: int = 1200, frame_tokens: int = 20, clip_frames: int = 8, clips: int = 100,
             seed: int = 0, quarters: int = 4) -> list:
    """Share of the final memory in each of ``quarters`` equal parts of the stream, oldest first.

    Args:
        buckets: ``"stream"``, ``"memory"`` (VSB bucket basis), or ``"topk"`` (no buckets).
    """
    generator = torch.Generator().manual_seed(seed)
    positions = torch.empty(1, 0, dtype=torch.long)
    clip = frame_tokens * clip_frames
    for index in range(clips):
        new = torch.arange(index * clip, (index + 1) * clip)[None]
        positions = torch.cat([positions, new], dim=1)
        if positions.shape[1] <= budget:
            continue
        scores = torch.rand(positions.shape, generator=generator)
        if buckets == "topk":
            keep = keep_top_k(scores, budget)
        else:
            keep = keep_vision_sink_buckets(scores, budget, 1, 0.5, positions if buckets == "stream" else None)
        positions = positions.gather(1, keep)
    total = clips * clip
    quarter = (positions[0] * quarters // total).clamp(max=quarters - 1)
    counts = torch.bincount(quarter, minlength=quarters).double()
    return [float(x) for x in counts / counts.sum()]


def coverage_table() -> dict:
    """The issue's setting (M 1,200, 20-token frames, 8-frame clips, 100 clips) for each bucket basis."""
    return {basis: simulate(basis) for basis in ("memory", "stream", "topk")}


def coverage_markdown(table: dict) -> str:
    lines = ["| selection | Q1 (oldest) | Q2 | Q3 | Q4 (newest) |", "|---|---|---|---|---|"]
    names = {"memory": "VSB, buckets over the memory index (before)", "stream": "VSB, buckets over stream positions "
             "(after, default)", "topk": "top-k (no buckets)"}
    for basis, shares in table.items():
        lines.append(f"| {names[basis]} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")
    return "\n".join(lines)
