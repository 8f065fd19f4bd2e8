"""``livevlm_bench --fidelity``: run the study, write ``fidelity.json`` / ``fidelity.md`` / PNGs.

Presets: :data:`FULL` (the documented run) and :data:`QUICK` (CI smoke: < 5 min on 2 cores).
Outputs in ``out``: ``fidelity_records.json`` (every question of every arm), ``fidelity.json``
(summary with CIs, targets, coverage simulation), ``fidelity.md``, ``fidelity_*.png``; rewritten
after each stream, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from typing import Optional

from .. import report as bench_report
from . import arms, coverage, models, report, runner
from .streams import EVENT_CAPTIONS, OPTIONS_PER_QUESTION, make_stream

FULL = runner.StudySettings(
    seeds=tuple(range(40)),
    lengths=(runner.StreamLength("5x", 48, 0.2), runner.StreamLength("10x", 96, 0.1)),
    long_plan={"full": ("none",), "random": ("none",), "sliding": ("none",), "topk": ("none",),
               "vsb-memory": ("none", "par"), "vsb": ("none", "par", "par-max", "par-max-floor")},
)
#: The core comparison only (5x streams, the issue's six policies, PaR where it is compared): what a
#: contended CPU finishes first; its records merge with FULL's (same arms, same names).
CORE = runner.StudySettings(
    seeds=tuple(range(40)),
    lengths=(runner.StreamLength("5x", 48, 0.2),),
    memory_arms=tuple(replace(a, retrievals={"full": ("none", "par"), "vsb-memory": ("none", "par"),
                                             "vsb": ("none", "par", "par-attn", "par-default")}.get(a.name, ("none",)))
                      for a in arms.CORE_MEMORY),
)
#: Full KV and VSB memory under every retrieval arm that matters for item 7 (the paper's PaR, the engine
#: default, attention-mass and contrast scoring), on 5x and 10x streams: its records replace the ``full*`` and
#: ``vsb*`` rows of a FULL run (``--fidelity-merge FULL_DIR THIS_DIR``).
RETRIEVAL = runner.StudySettings(
    seeds=tuple(range(60)),
    lengths=FULL.lengths,
    memory_arms=tuple(replace(a, retrievals=("none", "par", "par-attn", "par-contrast", "par-default"))
                      for a in arms.select(arms.CORE_MEMORY, ("full", "vsb"))),
)
#: Long memories for PaR: 5x streams 4 times longer (192 frames, 16-frame events), so the budget (20 %)
#: spans ~18 pages instead of ~5 and the paper's ratio keeps ~8; still under the engine's 1,024-token floor,
#: so ``par-default`` reads it whole. Null (random), full KV and VSB under each retrieval.
PAGES = runner.StudySettings(
    seeds=tuple(range(40)),
    lengths=(runner.StreamLength("5x-192", 192, 0.2),),
    event_frames=16,
    memory_arms=tuple(replace(a, retrievals={"vsb": ("none", "par", "par-attn", "par-contrast", "par-default"),
                                             "full": ("none", "par", "par-contrast")}.get(a.name, ("none",)))
                      for a in arms.select(arms.CORE_MEMORY, ("full", "random", "sliding", "vsb"))),
)
#: The importance-score options (item 7) beside their reference, VSB with stream buckets, on 5x streams
#: without retrieval (they change what memory keeps): paired with CORE's records by seed when merged.
OPTIONS = runner.StudySettings(
    seeds=tuple(range(40)),
    lengths=(runner.StreamLength("5x", 48, 0.2),),
    memory_arms=tuple(replace(a, retrievals=("none",))
                      for a in arms.select(arms.MEMORY_ARMS, ("vsb",) + tuple(a.name for a in arms.SCORE_MEMORY))),
)
PRESETS = {"full": FULL, "core": CORE, "retrieval": RETRIEVAL, "pages": PAGES, "options": OPTIONS}
QUICK = runner.StudySettings(
    seeds=tuple(range(2)),
    lengths=(runner.StreamLength("5x", 48, 0.2),),
    memory_arms=arms.select(arms.MEMORY_ARMS, ("full", "sliding", "vsb")),
)


def describe(settings: runner.StudySettings, model_name: str, weights: str) -> str:
    sample = make_stream(0, settings.lengths[0].frames, settings.event_frames)
    return (f"Model: {weights}. TEXT PROXY of video: each frame is one scene caption's tokens "
            f"(`ingest_embeddings`), NOT an image. Each stream holds 3 events (early / middle / late third), "
            f"each an object of one colour seen over {settings.event_frames} consecutive frames in "
            f"{len(EVENT_CAPTIONS)} paraphrases (e.g. {sample.captions[sample.events[0].first]!r}, "
            f"{sample.captions[sample.events[0].first + 1]!r}); the other frames are fillers without colours. "
            f"One question per event (\"{sample.questions[0].text}\"), all asked from the same memory. Score: "
            f"the {OPTIONS_PER_QUESTION} colour options' log-likelihood after the answer stem \"The <object> was\" "
            f"(gold + the other events' colours + random), plus the free greedy answer's first colour word. "
            f"Budget = a share of the stream's tokens, clip about half the budget, short-term "
            f"{settings.short_term_frames} frames, PaR pages of {settings.page_size} tokens, ratio 0.4. "
            f"95% CIs: bootstrap over streams (2000 resamples); paired gaps on the same questions.")


def study_settings(preset: str = "full", quick: bool = False, seeds: Optional[int] = None, seed_start: int = 0,
                   lengths=None, retrievals=None, memories=None, shard: tuple = (0, 1)) -> runner.StudySettings:
    """The settings :func:`run` asks: the preset (or QUICK), narrowed to ``seeds`` streams from ``seed_start``,
    the named lengths / retrieval arms / memory arms, and the shard's seeds. Unknown names raise ValueError."""
    settings = QUICK if quick else PRESETS[preset]
    if seeds or seed_start:
        settings = replace(settings, seeds=tuple(range(seed_start, seed_start + (seeds or len(settings.seeds)))))
    if lengths:
        settings = replace(settings, lengths=arms.select(tuple(settings.lengths), lengths, kind="lengths"))
    if retrievals:
        settings = replace(settings, retrieval_arms=arms.select(arms.RETRIEVAL_ARMS, retrievals))
    if memories:
        settings = replace(settings, memory_arms=arms.select(tuple(settings.memory_arms), memories, kind="memory arms"))
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be i/k with 0 <= i < k, got {index}/{count}")
    return replace(settings, seeds=tuple(s for s in settings.seeds if s % count == index))


def run(out_dir: str, quick: bool = False, seeds: Optional[int] = None, model_names=(models.SMOLLM2,),
        qwen_gguf: str = "", progress: bool = True, command: str = "", shard: tuple = (0, 1),
        preset: str = "full", seed_start: int = 0, lengths=None, retrievals=None, memories=None) -> dict:
    """The study for each model in ``model_names``; returns ``{model: summary}`` and writes ``out_dir``.

    Args:
        shard: ``(i, k)``: only the streams whose seed is ``i`` modulo ``k`` (run ``k`` processes, then
            :func:`merge` their output directories).
        preset: a key of :data:`PRESETS` (ignored with ``quick``); seed_start: the first stream's seed.
        lengths: only the preset's stream lengths of these names (``None``: all).
        retrievals: only these retrieval arms (``None``: the preset's).
        memories: only the preset's memory arms of these names (``None``: all).
    """
    os.makedirs(out_dir, exist_ok=True)
    settings = study_settings(preset, quick, seeds, seed_start, lengths, retrievals, memories, shard)
    results = {}
    table = coverage.coverage_table()
    for name in model_names:
        started = time.perf_counter()
        model = models.load(name, qwen_gguf=qwen_gguf)
        load_s = time.perf_counter() - started
        prefix = "fidelity" if name == models.SMOLLM2 else f"fidelity_{name}"
        meta = {"command": command, "model": name, "weights": model.describe_weights, "load_s": load_s,
                "settings": settings.describe(), "description": describe(settings, name, model.describe_weights),
                "coverage_simulation": table}
        bar = _bar(progress, runner.total_ingests(settings), name)

        def checkpoint(result, meta=meta, prefix=prefix):
            write(out_dir, prefix, result, meta)

        result = runner.run_study(model, settings, on_progress=bar.update if bar else None, on_checkpoint=checkpoint)
        if bar:
            bar.close()
        results[name] = write(out_dir, prefix, result, meta)
        del model
    return results


def merge(directories, out_dir: str) -> list:
    """Merge studies' records into one study in ``out_dir``; returns the prefixes merged.

    Shards (disjoint seeds) add up; a record that a later directory also holds (same length, stream, arm and
    question; for retention the same memory arm and event) is replaced by the later one, so a rerun of some
    arms (e.g. ``--fidelity-preset retrieval``) updates a full study. The first directory's meta is kept.
    """
    import json

    os.makedirs(out_dir, exist_ok=True)
    prefixes = sorted({name[:-len("_records.json")] for d in directories for name in os.listdir(d)
                       if name.endswith("_records.json")})
    for prefix in prefixes:
        questions, retention, sizes, wall, meta = {}, {}, {}, 0.0, None
        for directory in directories:
            path = os.path.join(directory, f"{prefix}_records.json")
            if not os.path.exists(path):
                continue
            with open(path, encoding="utf-8") as handle:
                part = json.load(handle)
            with open(os.path.join(directory, f"{prefix}.json"), encoding="utf-8") as handle:
                meta = meta or json.load(handle)["meta"]
            questions.update({(q["length"], q["seed"], q["arm"], q["question"]): q for q in part["questions"]})
            retention.update({(r["length"], r["seed"], r["memory"], r["position"]): r for r in part["retention"]})
            sizes.update(part["sizes"])
            wall = max(wall, part.get("wall_s") or 0.0)
        merged = {"questions": list(questions.values()), "retention": list(retention.values()), "sizes": sizes,
                  "wall_s": wall}
        write(out_dir, prefix, merged, meta)
    return prefixes


def write(out_dir: str, prefix: str, result: dict, meta: dict) -> dict:
    """Records, summary (with targets), markdown and plots of one model's study."""
    os.makedirs(out_dir, exist_ok=True)
    summary = report.summarize(result)
    summary["targets"] = report.targets(summary)
    summary["meta"] = meta
    summary["wall_s"] = result.get("wall_s")
    bench_report.save_json(os.path.join(out_dir, f"{prefix}_records.json"), result)
    bench_report.save_json(os.path.join(out_dir, f"{prefix}.json"), summary)
    text = report.markdown(summary, meta, report.ORDER)
    text += "\n### Targets (item 8)\n\n" + report.targets_markdown(summary["targets"]) + "\n"
    text += "\n### VSB coverage simulation (M 1,200, 20-token frames, 8-frame clips, 100 clips, random scores, " \
            "B = 1)\n\n" + coverage.coverage_markdown(meta["coverage_simulation"]) + "\n"
    with open(os.path.join(out_dir, f"{prefix}.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    try:
        report.plot(summary, out_dir, prefix, model=meta.get("model", ""))
    except ImportError as exc:  # matplotlib missing: tables still written
        print(f"livevlm_bench: no fidelity plots ({exc})", file=sys.stderr)
    return summary


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"fidelity {desc}", unit="memory", dynamic_ncols=True, mininterval=5.0,
                file=sys.stderr)
