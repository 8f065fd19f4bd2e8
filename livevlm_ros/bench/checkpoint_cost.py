"""``livevlm_bench --checkpoint-cost``: what a memory checkpoint costs, per 1,000 memory tokens.

For each model, a ``full``-policy stream (no eviction, so the memory holds exactly the tokens fed)
is filled to several lengths with frames given as random language-model embeddings of the model's
real tokens per frame (:meth:`LiveVLMStream.ingest_embeddings`: the vision tower is skipped, it
does not change the memory's layout). At each length it measures, best of ``repeats`` (and the
median):

* ``snapshot_s``: ``LiveVLMStream.checkpoint()``, the part the node's worker waits for (device-to-
  host copy of the memory);
* ``write_s``: :func:`~livevlm_ros.engine.persistence.save_checkpoint` (temporary file, fsync,
  rename) and the file's ``bytes``;
* ``load_s`` + ``restore_s``: :func:`~livevlm_ros.engine.persistence.load_checkpoint` and
  ``LiveVLMStream.restore`` (keys rotated again) into a fresh stream (safetensors maps the file, so
  the reading shows up in ``restore_s``: only their sum means something);

and two baselines in the same run: ``raw_write_s``, writing the same number of (random) bytes with one
``write`` + ``fsync`` (the disk itself), and ``clip_ingest_s``, one clip of real frames through
:meth:`LiveVLMStream.ingest` (vision tower + prefill), the pause the worker already has per clip.
Lengths: 20, 40, 60 and 80 % of the model's trained context unless given. Per model, a least-squares
line over the lengths gives bytes and milliseconds per 1,000 tokens.

Outputs: ``checkpoint_cost.json`` and ``checkpoint_cost.md`` in ``--out``; the table is printed.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from livevlm_ros.engine import EngineConfig, LiveVLMStream
from livevlm_ros.engine.persistence import load_checkpoint, save_checkpoint

DEFAULT_MODELS = ("tiny-llava-onevision", "tiny-smolvlm", "smolvlm-256m")
#: Memory lengths measured, as shares of the model's trained context (positions).
DEFAULT_SHARES = (0.2, 0.4, 0.6, 0.8)
CLIP_FRAMES = 8


def _times(fn: Callable[[], object], repeats: int) -> List[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def _raw_write(path: str, data: bytes) -> None:
    """The baseline: ``data`` (prepared outside the timing) written with one ``write`` and ``fsync``."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _tokens_per_frame(model) -> int:
    frame = np.zeros((216, 384, 3), np.uint8)
    with torch.inference_mode():
        return int(model.encode_frames([frame], [0.0])[0].embeds.shape[0])


def _clip_ingest_s(model, repeats: int) -> List[float]:
    """One clip of real (noise) frames through ``ingest``: vision tower + prefill."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (216, 384, 3), dtype=np.uint8) for _ in range(CLIP_FRAMES)]
    stream = LiveVLMStream(model, EngineConfig(memory="full", clip_frames=CLIP_FRAMES))
    t = [0.0]

    def clip():
        for frame in frames:
            stream.ingest(frame, t[0])
            t[0] += 0.5

    return _times(clip, repeats)


def measure_model(model, lengths: Optional[Sequence[int]], repeats: int, directory: str) -> dict:
    """Rows (one per memory length; default :data:`DEFAULT_SHARES` of the context) and the per-1,000-token fit."""
    per_frame = _tokens_per_frame(model)
    config = EngineConfig(memory="full", clip_frames=CLIP_FRAMES)
    stream = LiveVLMStream(model, config)
    generator = torch.Generator().manual_seed(0)
    rows, t = [], 0.0
    capacity = stream.stats().max_position_embeddings
    lengths = lengths or [int(share * capacity) for share in DEFAULT_SHARES]
    prefix = stream.stats().tokens
    fed = 0
    for target in sorted(set(lengths)):
        if target >= capacity - per_frame * CLIP_FRAMES:
            break
        while prefix + (fed + 1) * per_frame <= target:
            embeds = torch.randn(per_frame, model.hidden_size, generator=generator) * 0.02
            stream.ingest_embeddings(embeds, t)
            t, fed = t + 0.5, fed + 1
        stream.flush()
        tokens = stream.stats().tokens
        if rows and tokens == rows[-1]["tokens"]:
            continue
        snapshot = _times(stream.checkpoint, repeats)
        checkpoint = stream.checkpoint()
        path = os.path.join(directory, "bench.safetensors")
        write = _times(lambda: save_checkpoint(checkpoint, path), repeats)
        size = os.path.getsize(path)
        data = os.urandom(size)
        raw = _times(lambda: _raw_write(os.path.join(directory, "raw.bin"), data), repeats)
        del data
        load = _times(lambda: load_checkpoint(path), repeats)
        loaded = load_checkpoint(path)
        fresh = LiveVLMStream(model, config)
        restore = _times(lambda: fresh.restore(loaded), repeats)
        rows.append({"tokens": tokens, "frames": stream.stats().frames_ingested, "bytes": size,
                     **{f"{name}_s": min(v) for name, v in (("snapshot", snapshot), ("write", write),
                                                              ("raw_write", raw), ("load", load),
                                                              ("restore", restore))},
                     **{f"{name}_median_s": statistics.median(v) for name, v in (("snapshot", snapshot),
                                                                                 ("write", write),
                                                                                 ("load", load),
                                                                                 ("restore", restore))}})
        del fresh, loaded, checkpoint
    clip = _clip_ingest_s(model, max(2, repeats // 2))
    return {"model": model.name, "describe": model.describe(), "dtype": str(model.dtype).replace("torch.", ""),
            "device": str(model.device), "tokens_per_frame": per_frame, "rows": rows,
            "clip_ingest_s": min(clip), "clip_frames": CLIP_FRAMES, "fit": fit(rows)}


def fit(rows: List[dict]) -> dict:
    """Per measure: the least-squares line ``value = fixed + slope * tokens`` (``per_1000_tokens`` = 1000 x slope)
    and ``ratio_per_1000_tokens``, the largest checkpoint's value / its tokens x 1000 (fixed costs included)."""
    if len(rows) < 2:
        return {}
    x = np.array([r["tokens"] for r in rows], dtype=float)
    out = {}
    for key in ("bytes", "snapshot_s", "write_s", "raw_write_s", "load_s", "restore_s"):
        y = np.array([r[key] for r in rows], dtype=float)
        slope, intercept = np.polyfit(x, y, 1)
        out[key] = {"per_1000_tokens": float(slope * 1000), "fixed": float(intercept),
                    "ratio_per_1000_tokens": float(y[-1] / x[-1] * 1000)}
    return out


def markdown(results: List[dict], meta: dict) -> str:
    lines = [f"Checkpoint cost ({meta['machine']}; best of {meta['repeats']}, median in brackets; "
             f"{meta['directory_note']})", "",
             "| model | dtype | tokens | file MB | snapshot ms | write ms | raw write ms | load ms | restore ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for r in res["rows"]:
            lines.append(
                f"| {res['model']} | {res['dtype']} | {r['tokens']} | {r['bytes'] / 1e6:.2f} | "
                f"{r['snapshot_s'] * 1e3:.1f} ({r['snapshot_median_s'] * 1e3:.1f}) | "
                f"{r['write_s'] * 1e3:.1f} ({r['write_median_s'] * 1e3:.1f}) | {r['raw_write_s'] * 1e3:.1f} | "
                f"{r['load_s'] * 1e3:.1f} ({r['load_median_s'] * 1e3:.1f}) | "
                f"{r['restore_s'] * 1e3:.1f} ({r['restore_median_s'] * 1e3:.1f}) |")
    lines += ["", "Per 1,000 memory tokens: least-squares slope over the lengths above, and in brackets the largest "
              "checkpoint's cost / its tokens x 1,000 (fixed costs such as fsync included); the worker's pause "
              "(snapshot) against one clip's ingest:", "",
              "| model | MB / 1k tokens | snapshot ms / 1k | write ms / 1k | raw write ms / 1k | load+restore ms / 1k "
              "| largest snapshot ms | one clip ingest ms |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def both(f, *keys):
        slope = sum(f[k]["per_1000_tokens"] for k in keys) * 1e3
        ratio = sum(f[k]["ratio_per_1000_tokens"] for k in keys) * 1e3
        return f"{slope:.2f} ({ratio:.2f})"

    for res in results:
        f = res["fit"]
        if not f:
            continue
        lines.append(
            f"| {res['model']} ({res['dtype']}) | {f['bytes']['per_1000_tokens'] / 1e6:.3f} | {both(f, 'snapshot_s')} | "
            f"{both(f, 'write_s')} | {both(f, 'raw_write_s')} | {both(f, 'load_s', 'restore_s')} | "
            f"{res['rows'][-1]['snapshot_s'] * 1e3:.1f} ({res['rows'][-1]['tokens']} tokens) | "
            f"{res['clip_ingest_s'] * 1e3:.0f} ({res['clip_frames']} frames) |")
    return "\n".join(lines)


def run(models: Sequence[str], out_dir: str, device: str = "cpu", dtype: str = "float32",
        lengths: Optional[Sequence[int]] = None, repeats: int = 5, directory: Optional[str] = None) -> dict:
    """Measure every model; writes ``checkpoint_cost.json`` / ``.md`` to ``out_dir``; returns the JSON."""
    from . import report
    from .cli import load_model, machine_description

    os.makedirs(out_dir, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="livevlm_ckpt_bench_", dir=directory) as scratch:
        for name in models:
            model = load_model(name, device, dtype)
            results.append(measure_model(model, lengths, repeats, scratch))
            del model
        note = f"files written to {os.path.dirname(scratch)} ({_filesystem(scratch)})"
    meta = {"machine": machine_description(torch.device(device)), "repeats": repeats, "directory_note": note,
            "python": platform.python_version(), "torch_threads": torch.get_num_threads()}
    payload = {"meta": meta, "results": results}
    report.save_json(os.path.join(out_dir, "checkpoint_cost.json"), payload)
    table = markdown(results, meta)
    with open(os.path.join(out_dir, "checkpoint_cost.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    print(table)
    return payload


def _filesystem(path: str) -> str:
    """The file system type of ``path`` (from /proc/mounts), or ``?``."""
    try:
        best = ("", "?")
        real = os.path.realpath(path)
        with open("/proc/mounts") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) > 2 and real.startswith(parts[1]) and len(parts[1]) > len(best[0]):
                    best = (parts[1], parts[2])
        return best[1]
    except OSError:
        return "?"
