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

import gc
import json
import os
import threading
import time
from contextlib import contextmanager
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


@contextmanager
def _collector_paused():
    """Collect, then keep Python's garbage collector off (as ``timeit`` does) while a render is timed: a full
    collection of whatever else the process holds (0.6-0.66 s over ~470,000 objects inside pytest) would be
    billed to the render. The node freezes its heap after configure (``gc.freeze``), so its renders do not
    pay for those collections either."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class WatchCostSettings:
    """frames: frames ingested per ingest-rate run; memory_frames: memory sizes (frames) for the evaluation
    times, filled with ``distinct_frames`` real frames encoded once and fed as embeddings (the evaluation
    cost depends on the tokens held, not on the vision tower); clip_frames / budget_tokens: the engine's;
    repeats: best of; sustained_s: seconds of ingest with and without the memory view rendering at 1 Hz."""

    frames: int = 32
    memory_frames: tuple = (16, 64, 128)
    distinct_frames: int = 8
    clip_frames: int = 4
    budget_tokens: Optional[int] = None
    repeats: int = 3
    evidence: int = 4
    sustained_s: float = 6.0


def _best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


class _ViewRenderer:
    """Renders a memory view every ``period_s`` in a thread while running, as the node's timer does."""

    def __init__(self, view: StreamView, period_s: float = STATUS_PERIOD_S) -> None:
        self.view, self.period_s, self.renders = view, period_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.0 if self.renders == 0 else self.period_s):
            render_memory_view([self.view])
            self.renders += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _sustained_fps(model, source: FrameSource, config: EngineConfig, frames: int, view: Optional[StreamView],
                   min_s: float) -> tuple:
    """Frames per second over runs of ``frames`` frames (fresh streams) repeated for at least ``min_s`` s,
    with ``view`` rendered once per second in another thread meanwhile (None: no rendering); renders made."""
    total = seconds = 0.0
    renderer = _ViewRenderer(view) if view is not None else None
    if renderer:
        renderer.__enter__()
    try:
        while seconds < min_s:
            seconds += _ingest_seconds(model, source, config, frames, (), 0)[0]
            total += frames
    finally:
        if renderer:
            renderer.__exit__()
    return total / seconds, renderer.renders if renderer else 0


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
            ingest[label] = {"fps": n / seconds, "seconds": seconds, "evaluations": calls,
                             "fps_worst": n / max(r[0] for r in runs)}
        row["ingest"] = ingest
        sample = LiveVLMStream(model, config)
        for rgb, t in source.stream(n):
            sample.ingest(rgb, t)
        sample.flush()
        thumbs = ThumbnailRing(RING_BYTES)
        for index, (rgb, t) in enumerate(source.stream(min(n, 12))):
            thumbs.add(index, t, rgb)
        view = StreamView(name, sample.timeline(), [], thumbs.items())
        del sample
        plain_fps = view_fps = 0.0
        for _ in range(reps):  # alternating, best of each: both see the same machine state
            plain_fps = max(plain_fps, _sustained_fps(model, source, config, n, None, settings.sustained_s)[0])
            fps, renders = _sustained_fps(model, source, config, n, view, settings.sustained_s)
            view_fps = max(view_fps, fps)
        ingest["sustained, 0 watches"] = {"fps": plain_fps, "evaluations": 0}
        ingest["0 + view at 1 Hz"] = {"fps": view_fps, "evaluations": 0, "renders": renders,
                                      "baseline_fps": plain_fps}

        stream = LiveVLMStream(model, config)
        ring = ThumbnailRing(RING_BYTES)
        encode_s, snapshot_s, sizes = [], [], {}
        checkpoints = sorted(settings.memory_frames)
        distinct = list(source.stream(settings.distinct_frames))
        embedded = model.encode_frames([rgb for rgb, _ in distinct], [t for _, t in distinct])
        for index in range(checkpoints[-1]):
            rgb, t = distinct[index % len(distinct)][0], index / source.fps
            started = time.perf_counter()
            jpeg = encode_thumbnail(rgb)
            encode_s.append(time.perf_counter() - started)
            ring.put(Thumbnail(index, t, jpeg))
            frame = embedded[index % len(embedded)]
            stream.ingest_embeddings(frame.embeds, t, frame.vision)
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
        with _collector_paused():
            for _ in range(reps):
                w0, c0 = time.perf_counter(), time.thread_time()
                image = render_memory_view([view])
                wall.append(time.perf_counter() - w0)
                cpu.append(time.thread_time() - c0)
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
            "0 watches + memory view at 1 Hz (vs the same sustained run without) | evaluations (4) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        i = r["ingest"]
        cells = []
        for key in ("1", "4", "4 shared", "0 + view at 1 Hz"):
            base = i[key].get("baseline_fps", i["0"]["fps"]) if key in i else 1.0
            cells.append(f"{i[key]['fps']:.2f} ({i[key]['fps'] / base:.0%})" if key in i else "n/a")
        out.append(f"| {r['model']} | {r['frames']} | {i['0']['fps']:.2f} | " + " | ".join(cells)
                   + f" | {i['4']['evaluations']} |")
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
