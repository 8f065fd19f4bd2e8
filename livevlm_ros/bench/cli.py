"""``livevlm_bench``: the engine's memory policies side by side (cost), and the fidelity study (accuracy).

Examples::

    livevlm_bench --quick --out bench_out                      # tiny models, < 2 min on 2 CPU cores
    livevlm_bench --out bench_out --frames 16 32 --time-budget-s 300     # real layouts, CPU
    livevlm_bench --out $OUT --device cuda --dtype bfloat16 --time-budget-s 240
    livevlm_bench --fidelity --out bench_out                   # fidelity study, real SmolLM2 (text proxy)
    livevlm_bench --fidelity --quick --out bench_out           # its CI smoke version (< 5 min)
    livevlm_bench --fidelity-demo                              # watch real SmolLM2 answer from compressed memory
    livevlm_bench --replot bench_out                           # results.md + PNGs from results.json
    livevlm_bench --checkpoint-cost --out bench_out            # memory checkpoint size / write / restore
    livevlm_bench --watch-cost --out bench_out                 # watches, evidence, memory view (tiny + SmolVLM-256M)

Outputs in ``--out``: ``results.json`` (list of rows, see :mod:`.sweep`), ``results.md``,
``meta.json`` (settings, machine, per-policy outcome, targets), ``*.png``; with ``--fidelity``,
``fidelity*.json`` / ``fidelity.md`` / ``fidelity_*.png`` (see :mod:`.fidelity.study`). They are
rewritten as the run goes, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch

from livevlm_ros.engine import TINY_MODELS, EngineConfig, load_video_llm

from . import report
from .fidelity.study import PRESETS as FIDELITY_PRESETS
from .frames import DEFAULT_VIDEO, FrameSource
from .layouts import LAYOUTS, build_layout
from .policies import POLICY_NAMES
from .sweep import ANSWER_TOKENS, QUESTION, SweepSettings, run_sweep

DEFAULT_FRAMES = (64, 128, 256, 512, 1024, 2048)
GIB = 2**30
MIB = 2**20


@dataclass(frozen=True)
class ModeDefaults:
    """Per-mode defaults; every field has a command-line override."""

    models: tuple
    dtype: str
    budget_tokens: Optional[int]
    rekv_frames: int
    frame_size: tuple
    full_kv_cap_bytes: int
    threads: Optional[int]


#: ``--quick``: tiny random models; a 256-token budget (16 tiny-LLaVA frames) fills by 64 frames;
#: the 6 MiB cap puts full KV out of memory from 1024 (tiny-LLaVA) / 512 (tiny-SmolVLM) frames.
#: One thread: tiny kernels gain nothing from two and are steadier on a shared machine.
QUICK = ModeDefaults(models=TINY_MODELS, dtype="float32", budget_tokens=256, rekv_frames=4, frame_size=(64, 64),
                     full_kv_cap_bytes=6 * MIB, threads=1)
#: Full run: the real layouts, budget ``None`` = the engine's automatic budget: the paper's M = 12,000
#: tokens where it fits the trained context (LLaVA-OV-0.5B), about 7,200 for SmolVLM-256M (8,192
#: positions). The 2 GiB cap mirrors the
#: paper's setting (7B model on a 24 GB GPU: ~10 GB left for KV, ~900 LLaVA-OV frames): LLaVA-OV-0.5B
#: (2.4 MB/frame) runs out after ~870 frames, SmolVLM-256M (1.7 MB/frame) after ~1200.
FULL = ModeDefaults(models=LAYOUTS, dtype="bfloat16", budget_tokens=None, rekv_frames=8, frame_size=(384, 216),
                    full_kv_cap_bytes=2 * GIB, threads=None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livevlm_bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny random-weight models, CPU smoke benchmark (< 2 min)")
    p.add_argument("--out", default="bench_out", help="output directory (default: bench_out)")
    p.add_argument("--models", nargs="+", choices=TINY_MODELS + LAYOUTS, help="models (default: by mode)")
    p.add_argument("--frames", nargs="+", type=int, default=list(DEFAULT_FRAMES), help="checkpoint lengths")
    p.add_argument("--policies", nargs="+", choices=POLICY_NAMES, default=list(POLICY_NAMES))
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: float32 quick, bfloat16")
    p.add_argument("--full-kv-cap-bytes", type=int, help="full KV beyond this many device KV bytes is reported "
                   f"OOM (default: {QUICK.full_kv_cap_bytes} quick, {FULL.full_kv_cap_bytes} otherwise)")
    p.add_argument("--time-budget-s", type=float, help="wall seconds per model sweep; stops gracefully")
    p.add_argument("--budget-tokens", type=int, help="memory budget M in tokens (sliding/ReKV: device window; "
                   "default: 256 quick, else the engine's automatic budget)")
    p.add_argument("--budget-frames", type=float, help="memory budget as frames of each model (overrides "
                   "--budget-tokens; e.g. 61 = the paper's 12,000 tokens for LLaVA-OV)")
    p.add_argument("--clip-frames", type=int, default=8, help="frames prefilled together (default 8)")
    p.add_argument("--rekv-frames", type=int, help="frames ReKV retrieves per layer")
    p.add_argument("--repeats", type=int, default=3, help="asks per checkpoint; times are the best (default 3)")
    p.add_argument("--frame-size", nargs=2, type=int, metavar=("W", "H"), help="decoded frame size in pixels")
    p.add_argument("--fps", type=float, default=2.0, help="video sampling rate (frames per second)")
    p.add_argument("--video", default=DEFAULT_VIDEO, help="video file (synthetic noise frames if missing)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: 1 quick, torch's default otherwise)")
    fid = p.add_mutually_exclusive_group()
    fid.add_argument("--fidelity", action="store_true",
                     help="run the fidelity study (real SmolLM2 on captioned streams, a text proxy) instead of the "
                          "cost sweep; with --quick its CI smoke version")
    fid.add_argument("--no-fidelity", dest="fidelity", action="store_false", help="the cost sweep (default)")
    fid.add_argument("--fidelity-demo", action="store_true",
                     help="print real SmolLM2's answers about early/middle/late events from compressed memory beside "
                          "the ground truth and full KV (captions, not images)")
    p.add_argument("--fidelity-seeds", type=int, help="streams per length (default 40, 2 with --quick)")
    p.add_argument("--fidelity-models", nargs="+", choices=("smollm2", "qwen2"), default=["smollm2"],
                   help="language models of the fidelity study (qwen2 needs --fidelity-qwen-gguf)")
    p.add_argument("--fidelity-qwen-gguf", default="", help="path of the Qwen2.5-Coder-0.5B-Instruct GGUF")
    p.add_argument("--fidelity-shard", default="0/1", metavar="I/K",
                   help="only the streams whose seed is I modulo K (run K processes, then --fidelity-merge)")
    p.add_argument("--fidelity-preset", choices=tuple(FIDELITY_PRESETS), default="full",
                   help="full: every arm on 5x and 10x streams; core: the six policies on 5x streams only; "
                        "retrieval: VSB under each PaR variant (5x, 10x); pages: 4x longer 5x streams, so PaR "
                        "chooses among ~18 pages; options: VSB and its importance-score options on 5x streams")
    p.add_argument("--fidelity-seed-start", type=int, default=0, help="seed of the first stream (default 0)")
    p.add_argument("--fidelity-lengths", nargs="+", metavar="NAME", help="only these stream lengths of the preset "
                   "(e.g. 5x)")
    p.add_argument("--fidelity-retrievals", nargs="+", metavar="ARM",
                   help="only these retrieval arms (none, par, par-attn, par-contrast, par-default, ...)")
    p.add_argument("--fidelity-memories", nargs="+", metavar="ARM",
                   help="only these memory arms of the preset (full, random, sliding, topk, vsb-memory, vsb, vsb/...)")
    p.add_argument("--fidelity-merge", nargs="+", metavar="DIR", help="merge fidelity shard directories into --out")
    p.add_argument("--attention-memory", action="store_true",
                   help="only measure the peak extra memory of one clip prefill in one layer at LLaVA-OV-0.5B shapes "
                        "(the dense-mask path against the engine's; CPU, fp32 and bf16)")
    p.add_argument("--checkpoint-cost", action="store_true",
                   help="only measure memory checkpoints: file size, snapshot / write / load+restore time per 1,000 "
                        "memory tokens (tiny models and the SmolVLM-256M layout by default; see checkpoint_cost.py)")
    p.add_argument("--checkpoint-tokens", nargs="+", type=int, help="memory lengths (tokens) for --checkpoint-cost")
    p.add_argument("--checkpoint-dir", help="where --checkpoint-cost writes its files (default: the temp dir)")
    p.add_argument("--watch-cost", action="store_true",
                   help="cost of watches, evidence and the memory view (watch_cost.json/.md; see bench.watch_cost); "
                   "models default to the tiny ones and smolvlm-256m; --watch-frames frames per run")
    p.add_argument("--watch-frames", type=int, default=32, help="frames per --watch-cost ingest run (default 32)")
    p.add_argument("--watch-memory-frames", nargs="+", type=int, default=[16, 64, 128],
                   help="memory sizes (frames) for --watch-cost evaluation times (default 16 64 128)")
    p.add_argument("--watch-sustained-s", type=float, default=6.0,
                   help="seconds of --watch-cost ingest with and without the memory view rendering (default 6)")
    p.add_argument("--replot", metavar="DIR", help="rewrite results.md and the PNGs of DIR from its JSON files")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                   help="print before/after tables of two sets of runs (each DIR[,DIR...]) of different code")
    p.add_argument("--save-tokenizer", metavar="DIR", help="save the SmolLM2 tokenizer (for $LIVEVLM_BENCH_TOKENIZER)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _defaults(args) -> ModeDefaults:
    return QUICK if args.quick else FULL


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def load_model(name: str, device: str, dtype: str):
    """A tiny engine model or a full-size layout."""
    if name in TINY_MODELS:
        model = load_video_llm(name, device=device, dtype=dtype)
        model.lm_weights = "random (tiny test model)"
        return model
    return build_layout(name, device=device, dtype=dtype)


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, mininterval=2.0, file=sys.stderr)


def run_sweeps(args, out_dir: str, meta: dict) -> list:
    """Every model's sweep; outputs are rewritten after each model."""
    mode = _defaults(args)
    dtype = args.dtype or mode.dtype
    base = EngineConfig(clip_frames=args.clip_frames, budget_tokens=args.budget_tokens or mode.budget_tokens,
                        rekv_frames=args.rekv_frames or mode.rekv_frames)
    cap = args.full_kv_cap_bytes if args.full_kv_cap_bytes is not None else mode.full_kv_cap_bytes
    frames = FrameSource(args.video, fps=args.fps, size=tuple(args.frame_size or mode.frame_size))
    checkpoints = sorted(set(args.frames))
    meta.update(frames_source=frames.describe(), question=QUESTION, answer_tokens=ANSWER_TOKENS, asks=args.repeats,
                full_kv_cap_bytes=cap, engine_config=_config_text(base), dtype=dtype, outcomes={}, models={},
                targets={})
    rows = []
    for name in args.models or mode.models:
        started = time.perf_counter()
        model = load_model(name, args.device, dtype)
        meta["models"][name] = {"describe": model.describe(), "lm_weights": getattr(model, "lm_weights", "?"),
                                "load_s": time.perf_counter() - started}
        tokens_per_frame = frame_tokens(model, frames)
        config = base if not args.budget_frames else base.replace(
            budget_tokens=max(1, round(args.budget_frames * tokens_per_frame)))
        meta["models"][name].update(tokens_per_frame=tokens_per_frame, budget_tokens=config.budget_tokens)
        settings = SweepSettings(checkpoints, args.policies, config, cap, args.time_budget_s, repeats=args.repeats)
        bar = _progress(not args.no_progress, len(args.policies) * max(checkpoints), name)
        model_rows, outcomes = run_sweep(model, frames, settings, name, progress=bar.update if bar else None)
        if bar:
            bar.close()
        meta["models"][name]["sweep_s"] = time.perf_counter() - started - meta["models"][name]["load_s"]
        meta["models"][name]["budget_tokens"] = model_rows[0]["budget_tokens"] if model_rows else None
        meta["outcomes"][name] = [{"policy": o.policy, "frames_reached": o.frames_reached, "stopped": o.stopped}
                                  for o in outcomes]
        rows += model_rows
        meta["targets"][name] = report.evaluate_targets(rows, name)
        write_outputs(out_dir, rows, meta)
        del model
    return rows


def frame_tokens(model, frames: FrameSource) -> int:
    """Language-model tokens of one frame of ``model`` (vision tokens plus any per-frame text)."""
    frame, _ = next(frames.stream(1))
    with torch.inference_mode():
        return int(model.encode_frames([frame], [0.0])[0].embeds.shape[0])


def _config_text(config: EngineConfig) -> str:
    keys = ("clip_frames", "budget_tokens", "short_term_frames", "bucket_capacity", "saliency_share", "page_size",
            "retrieval_ratio", "rekv_frames")
    return ", ".join(f"{k}={getattr(config, k)}" for k in keys)


def write_outputs(out_dir: str, rows: list, meta: dict) -> None:
    """``results.json``, ``meta.json``, ``results.md`` and the PNGs (when matplotlib is there)."""
    os.makedirs(out_dir, exist_ok=True)
    if rows:
        try:
            report.plot(rows, out_dir)
        except ImportError as exc:
            meta["plot_note"] = f"no plots: {exc} (run `livevlm_bench --replot DIR` where matplotlib is installed)"
    report.save_json(os.path.join(out_dir, "results.json"), rows)
    report.save_json(os.path.join(out_dir, "meta.json"), meta)
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(report.markdown(rows, meta))


def replot(directory: str) -> None:
    def optional(name):
        path = os.path.join(directory, name)
        return report.load_rows(path) if os.path.exists(path) else None

    rows = optional("results.json") or []
    meta = optional("meta.json") or {}
    write_outputs(directory, rows, meta)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.replot:
        replot(args.replot)
        return 0
    if args.compare:
        from .compare import compare_markdown

        try:
            print(compare_markdown(*args.compare))
        except (OSError, ValueError) as exc:
            print(f"livevlm_bench --compare: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.save_tokenizer:
        from .layouts import save_tokenizer

        save_tokenizer(args.save_tokenizer)
        return 0
    if args.attention_memory:
        return attention_memory(args.out)
    if args.checkpoint_cost:
        from . import checkpoint_cost

        torch.set_num_threads(args.threads or torch.get_num_threads())
        checkpoint_cost.run(args.models or checkpoint_cost.DEFAULT_MODELS, args.out, device=args.device,
                            dtype=args.dtype or "float32", lengths=args.checkpoint_tokens,
                            repeats=args.repeats, directory=args.checkpoint_dir)
        return 0
    threads_before = torch.get_num_threads()
    threads = args.threads or _defaults(args).threads
    if threads:
        torch.set_num_threads(threads)
    try:
        if args.watch_cost:
            return watch_cost(args)
        run(args, argv)
    finally:
        torch.set_num_threads(threads_before)
    return 0


def watch_cost(args) -> int:
    """``--watch-cost``: see :mod:`.watch_cost`."""
    from . import watch_cost as wc
    from .layouts import SMOLVLM_256M

    dtype = args.dtype or "float32"
    frames = FrameSource(args.video, fps=args.fps, size=tuple(args.frame_size or FULL.frame_size))
    settings = wc.WatchCostSettings(frames=args.watch_frames, memory_frames=tuple(args.watch_memory_frames),
                                    clip_frames=args.clip_frames, budget_tokens=args.budget_tokens,
                                    repeats=args.repeats, sustained_s=args.watch_sustained_s)
    models = args.models or (TINY_MODELS + (SMOLVLM_256M,))
    return wc.run(models, lambda name: load_model(name, args.device, dtype), args.out, settings, frames,
                  machine_description(torch.device(args.device)))


def attention_memory(out_dir: str) -> int:
    """``attention_memory.json`` / ``.md`` in ``out_dir`` (see :mod:`.attention_memory`)."""
    from . import attention_memory as am

    rows = [am.measure(dtype=dtype) for dtype in (torch.float32, torch.bfloat16)]
    os.makedirs(out_dir, exist_ok=True)
    report.save_json(os.path.join(out_dir, "attention_memory.json"), rows)
    table = am.markdown(rows)
    with open(os.path.join(out_dir, "attention_memory.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    print(table)
    return 0


def run(args, argv=None) -> None:
    """The cost sweep, the fidelity study or its demo, for parsed arguments."""
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    command = "livevlm_bench " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.fidelity_demo:
        from .fidelity import demo

        demo.main(sys.stdout)
        return
    if args.fidelity_merge:
        from .fidelity import study

        study.merge(args.fidelity_merge, args.out)
        print(f"livevlm_bench: merged {len(args.fidelity_merge)} fidelity shards into {args.out}", file=sys.stderr)
        return
    if args.fidelity:
        from .fidelity import study

        index, _, count = args.fidelity_shard.partition("/")
        study.run(args.out, quick=args.quick, seeds=args.fidelity_seeds, model_names=args.fidelity_models,
                  qwen_gguf=args.fidelity_qwen_gguf, progress=not args.no_progress, command=command,
                  shard=(int(index), int(count or 1)), preset=args.fidelity_preset,
                  seed_start=args.fidelity_seed_start, lengths=args.fidelity_lengths,
                  retrievals=args.fidelity_retrievals, memories=args.fidelity_memories)
        print(f"livevlm_bench: wrote {args.out}/fidelity.json, fidelity.md and plots", file=sys.stderr)
        return
    started = time.perf_counter()
    device = torch.device(args.device)
    meta = {"command": command, "machine": machine_description(device), "device": str(device)}
    rows = run_sweeps(args, args.out, meta)
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    write_outputs(args.out, rows, meta)
    print(f"livevlm_bench: wrote {args.out}/results.json, results.md, meta.json and plots "
          f"({meta['wall_s']} s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
