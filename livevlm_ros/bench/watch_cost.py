"""``livevlm_bench --watch-cost``: what watches, evidence and the memory view cost.

Per model (the tiny random-weight configs and the SmolVLM-256M layout by default), on the real car
video, every number the best of ``repeats`` runs, each with its baseline measured in the same run:

* **ingest rate with 0, 1 and 4 active watches**: frames per second through ``LiveVLMStream.ingest``
  with the node worker's scheduling (:func:`~livevlm_ros.ros.watches.evaluate_due` at every clip
  boundary, ``period_s = 0``: the most frequent setting), four *different* conditions, and four
  watches sharing one condition (one evaluation per clip);
* **watch evaluation time against memory size**: ``evaluate_condition`` (one question prefill, nothing
  decoded) after 1/4, 1/2 and all of the frames, next to the Ask TTFT of the same question;
* **Ask TTFT with evidence off and on** (``evidence=4``: one attention row per layer);
* **memory view**: the worker's snapshot (``timeline()`` + ring retention, on the worker's path),
  the rendering (off it, in the node's timer thread), its CPU share at the default 1 s status
  period, and the JPEG thumbnail encode per frame (in the image callback);
* **thumbnail ring bytes**: bytes per thumbnail and the ring's size at the node's default bound.

Random weights: p_yes values are noise; only times and sizes mean something.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from livevlm_ros.engine import EngineConfig, LiveVLMStream
from livevlm_ros.io.memory_view import StreamView, render_memory_view
from livevlm_ros.io.thumbnails import Thumbnail, ThumbnailRing, encode_thumbnail
from livevlm_ros.ros.watches import WatchSpec, WatchTracker, evaluate_due

from .frames import FrameSource

__all__ = ["WatchCostSettings", "measure_model", "markdown", "CONDITIONS"]

CONDITIONS = ("Is a car in view?", "Is a person in view?", "Is the road wet?", "Is a red car in view?")
QUESTION = "Is a car in view?"
#: The node's default thumbnail bound (parameter thumbnail_ring_bytes) and status period (s).
RING_BYTES = 2_000_000
STATUS_PERIOD_S = 1.0


@dataclass(frozen=True)
class WatchCostSettings:
    """frames: frames ingested per run; clip_frames / budget_tokens: the engine's; repeats: best of."""

    frames: int = 32
    clip_frames: int = 4
    budget_tokens: Optional[int] = None
    repeats: int = 3
    evidence: int = 4


def _best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def _ingest_seconds(model, source: FrameSource, config: EngineConfig, frames: int, conditions: Sequence[str],
                    evidence: int) -> tuple:
    """Wall seconds to ingest ``frames`` frames with a watch per condition evaluated at each clip; evaluations."""
    stream = LiveVLMStream(model, config)
    trackers = [WatchTracker(WatchSpec(c, "bench", evidence=evidence)) for c in conditions]
    calls = 0
    started = time.perf_counter()
    for rgb, t in source.stream(frames):
        stream.ingest(rgb, t)
        if trackers and not stream.pending_frames:
            calls += evaluate_due(stream, trackers, frames_prefilled=stream.stats().frames_ingested, newest_stamp=t)
    stream.flush()
    return time.perf_counter() - started, calls


def measure_model(name: str, model, source: FrameSource, settings: WatchCostSettings) -> dict:
    """Every cost for one model (see the module docstring); JSON-able."""
    config = EngineConfig(clip_frames=settings.clip_frames, budget_tokens=settings.budget_tokens)
    n, reps = settings.frames, settings.repeats
    row: dict = {"model": name, "frames": n, "clip_frames": settings.clip_frames, "repeats": reps}
    with torch.inference_mode():
        _ingest_seconds(model, source, config, settings.clip_frames, (), 0)  # warm-up
        ingest = {}
        for label, conditions in (("0", ()), ("1", CONDITIONS[:1]), ("4", CONDITIONS), ("4 shared", (QUESTION,) * 4)):
            runs = [_ingest_seconds(model, source, config, n, conditions, settings.evidence) for _ in range(reps)]
            seconds, calls = min(runs)
            ingest[label] = {"fps": n / seconds, "seconds": seconds, "evaluations": calls}
        row["ingest"] = ingest

        stream = LiveVLMStream(model, config)
        ring = ThumbnailRing(RING_BYTES)
        encode_s, snapshot_s, sizes = [], [], {}
        checkpoints = sorted({max(settings.clip_frames, n // 4), max(settings.clip_frames, n // 2), n})
        for index, (rgb, t) in enumerate(source.stream(n)):
            started = time.perf_counter()
            jpeg = encode_thumbnail(rgb)
            encode_s.append(time.perf_counter() - started)
            ring.put(Thumbnail(index, t, jpeg))
            stream.ingest(rgb, t)
            if not stream.pending_frames:
                started = time.perf_counter()
                ring.retain_timeline(stream.timeline().token_times, index + 1)
                snapshot_s.append(time.perf_counter() - started)
            if index + 1 in checkpoints:
                stream.flush()
                sizes[index + 1] = _question_costs(stream, reps, settings.evidence)
        row["by_memory"] = [{"frames": k, **v} for k, v in sorted(sizes.items())]
        row["thumbnail_encode_ms"] = 1e3 * float(np.median(encode_s))
        row["snapshot_ms"] = 1e3 * float(np.median(snapshot_s)) if snapshot_s else None
        result = stream.ask(QUESTION, max_new_tokens=1, evidence=settings.evidence)
        view = StreamView(name, stream.timeline(), [e.time for e in result.evidence], ring.items())
        render_memory_view([view])  # warm-up (font cache)
        wall, cpu = [], []
        for _ in range(reps):
            w0, c0 = time.perf_counter(), time.process_time()
            image = render_memory_view([view])
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        row["render_ms"] = 1e3 * min(wall)
        row["render_cpu_ms"] = 1e3 * min(cpu)
        row["render_cpu_share"] = min(cpu) / STATUS_PERIOD_S
        row["view_size"] = list(image.shape)
        row["ring"] = {"bytes": ring.nbytes, "thumbnails": len(ring), "bound": RING_BYTES,
                       "bytes_per_thumbnail": ring.nbytes / max(1, len(ring)),
                       "frames_in_memory": len(set(stream.timeline().token_times))}
        row["memory_tokens"] = stream.stats().tokens
    return row


def _question_costs(stream: LiveVLMStream, reps: int, evidence: int) -> dict:
    """Best-of watch evaluation, Ask TTFT without and with evidence, at the current memory size."""
    evaluate = _best(lambda: stream.evaluate_condition(QUESTION).elapsed_s, reps)
    evaluate_ev = _best(lambda: stream.evaluate_condition(QUESTION, evidence=evidence).elapsed_s, reps)
    ttft_off = ttft_on = float("inf")
    for _ in range(reps):  # interleaved: both see the same machine state
        ttft_off = min(ttft_off, stream.ask(QUESTION, max_new_tokens=1).ttft_s)
        ttft_on = min(ttft_on, stream.ask(QUESTION, max_new_tokens=1, evidence=evidence).ttft_s)
    return {"memory_tokens": stream.stats().tokens, "evaluate_ms": 1e3 * evaluate,
            "evaluate_evidence_ms": 1e3 * evaluate_ev, "ttft_ms": 1e3 * ttft_off, "ttft_evidence_ms": 1e3 * ttft_on}


def markdown(rows: List[dict], meta: dict) -> str:
    """The tables of docs/BENCHMARKS.md's watch-cost section."""
    out = [f"Machine: {meta.get('machine', '?')}; {meta.get('source', '')}; best of {rows[0]['repeats'] if rows else '?'}"
           f" runs; random weights (p_yes is noise, only times and sizes mean something).", ""]
    out += ["| model | frames | ingest fps, 0 watches | 1 watch | 4 watches | 4 sharing one condition | "
            "evaluations (4) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        i = r["ingest"]
        out.append(f"| {r['model']} | {r['frames']} | {i['0']['fps']:.2f} | {i['1']['fps']:.2f} "
                   f"({i['1']['fps'] / i['0']['fps']:.0%}) | {i['4']['fps']:.2f} ({i['4']['fps'] / i['0']['fps']:.0%}) | "
                   f"{i['4 shared']['fps']:.2f} ({i['4 shared']['fps'] / i['0']['fps']:.0%}) | {i['4']['evaluations']} |")
    out += ["", "| model | frames in | memory tokens | watch evaluation ms | with evidence ms | Ask TTFT ms | "
            "Ask TTFT with evidence ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for m in r["by_memory"]:
            out.append(f"| {r['model']} | {m['frames']} | {m['memory_tokens']} | {m['evaluate_ms']:.1f} | "
                       f"{m['evaluate_evidence_ms']:.1f} | {m['ttft_ms']:.1f} | {m['ttft_evidence_ms']:.1f} |")
    out += ["", "| model | thumbnail encode ms/frame | worker snapshot ms/clip | memory_view render ms (wall / CPU) | "
            "CPU share at 1 Hz | ring bytes (thumbnails) | bytes/thumbnail |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        g = r["ring"]
        out.append(f"| {r['model']} | {r['thumbnail_encode_ms']:.2f} | {r['snapshot_ms']:.2f} | "
                   f"{r['render_ms']:.0f} / {r['render_cpu_ms']:.0f} | {r['render_cpu_share']:.1%} | "
                   f"{g['bytes']:,} ({g['thumbnails']}) | {g['bytes_per_thumbnail']:,.0f} |")
    return "\n".join(out) + "\n"


def run(models: Sequence[str], load: Callable[[str], object], out_dir: str, settings: WatchCostSettings,
        source: FrameSource, machine: str) -> int:
    """Measure every model, write ``watch_cost.json`` / ``watch_cost.md`` in ``out_dir``, print the tables."""
    rows, meta = [], {"machine": machine, "source": source.describe(), "settings": asdict(settings)}
    os.makedirs(out_dir, exist_ok=True)
    for name in models:
        started = time.perf_counter()
        model = load(name)
        rows.append(measure_model(name, model, source, settings))
        rows[-1]["wall_s"] = time.perf_counter() - started
        del model
        with open(os.path.join(out_dir, "watch_cost.json"), "w", encoding="utf-8") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=1)
    table = markdown(rows, meta)
    with open(os.path.join(out_dir, "watch_cost.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    print(table)
    return 0
