"""Aggregate the study's records into tables (JSON + markdown) and plots (matplotlib, Agg).

Every accuracy carries a 95% cluster-bootstrap interval over streams (:mod:`.stats`); paired
differences (against full KV and against sliding, same questions) say whether a gap is real.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from . import stats
from .arms import MEMORY_ARMS, RETRIEVAL_ARMS, arm_name
from .streams import OPTIONS_PER_QUESTION, POSITIONS

#: Table order: memory arms, each with its retrieval arms.
ORDER = tuple(arm_name(m.name, r.name) for m in MEMORY_ARMS for r in RETRIEVAL_ARMS)
#: Arms the README plot and headline table show (others are in the full tables).
HEADLINE = ("full", "random", "sliding", "topk", "vsb-memory", "vsb", "vsb+par", "vsb+par-attn")
#: The arms item 8's targets are about (VSB with stream buckets + PaR: the paper's, the engine default, and the
#: candidate scorings), and the baselines they must beat on early/middle events.
TARGET_ARMS = ("vsb+par", "vsb+par-default", "vsb+par-attn", "vsb+par-max-floor")
BASELINES = ("sliding", "topk", "random")
#: Arms every other arm is compared with, question by question.
REFERENCES = ("full", "vsb") + BASELINES


def _by(records: list, *keys) -> dict:
    groups = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in keys)].append(r)
    return groups


def _estimate(rows: list, field: str) -> dict:
    values = [r[field] for r in rows if r.get(field) is not None and not _nan(r[field])]
    clusters = [r["seed"] for r in rows if r.get(field) is not None and not _nan(r[field])]
    return stats.bootstrap(values, clusters).to_dict()


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _paired(rows_a: list, rows_b: list, field: str = "correct") -> Optional[dict]:
    """``a - b`` over the questions both arms answered (matched by stream and question)."""
    b = {(r["seed"], r["question"]): r[field] for r in rows_b}
    pairs = [(r[field], b[(r["seed"], r["question"])], r["seed"]) for r in rows_a if (r["seed"], r["question"]) in b]
    if not pairs:
        return None
    left, right, seeds = zip(*pairs)
    return stats.paired_difference(left, right, seeds).to_dict()


def summarize(result: dict) -> dict:
    """Per length and arm: accuracy (overall and by position), margin, greedy accuracy, context recall,
    PaR page diagnosis, paired differences vs full KV and vs sliding; per memory arm: retention by layer
    and the memory age histogram."""
    questions, retention = result["questions"], result["retention"]
    out = {"chance": 1.0 / OPTIONS_PER_QUESTION, "lengths": {}}
    for (length,), rows in sorted(_by(questions, "length").items()):
        arms = {arm: mine for (arm,), mine in _by(rows, "arm").items()}
        table = {}
        for arm, arm_rows in arms.items():
            entry = {"memory": arm_rows[0]["memory"], "retrieval": arm_rows[0]["retrieval"],
                     "accuracy": _estimate(arm_rows, "correct"), "margin": _estimate(arm_rows, "margin"),
                     "greedy": _estimate(arm_rows, "greedy_correct"), "recall": _estimate(arm_rows, "recall")}
            for position in POSITIONS:
                mine = [r for r in arm_rows if r["position"] == position]
                entry[position] = _estimate(mine, "correct")
                entry[f"recall_{position}"] = _estimate(mine, "recall")
                for ref in REFERENCES:
                    if ref in arms and arm != ref:
                        theirs = [r for r in arms[ref] if r["position"] == position]
                        entry[f"vs_{ref}_{position}"] = _paired(mine, theirs)
            for ref in REFERENCES:
                if ref in arms and arm != ref:
                    entry[f"vs_{ref}"] = _paired(arm_rows, arms[ref])
            if "page_hit" in arm_rows[0]:
                entry["pages"] = _page_summary(arm_rows)
            table[arm] = entry
        out["lengths"][length] = {"arms": table, "sizes": result.get("sizes", {}).get(length),
                                  "retention": _retention_summary([r for r in retention if r["length"] == length]),
                                  "streams": len({r["seed"] for r in rows})}
    return out


def _page_summary(rows: list) -> dict:
    """Mean over questions (and layers) of the PaR page diagnosis (see ``probes.page_diagnosis``)."""
    def mean_of(name, transform=None):
        values = []
        for r in rows:
            for i, v in enumerate(r.get(f"page_{name}") or []):
                if not _nan(v):
                    values.append(transform(v, r, i) if transform else v)
        return float(np.mean(values)) if values else None

    biases = np.array([r["page_bias"] for r in rows if r.get("page_bias")], dtype=float)
    bias = None
    if biases.size:
        finite = np.isfinite(biases)
        sums = np.where(finite, biases, 0.0).sum(axis=0)
        counts = finite.sum(axis=0)
        bias = [float(x) for x in np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)]
    return {"hit": mean_of("hit"), "chance": mean_of("chance"), "purity": mean_of("purity"), "bias": bias,
            "event_pages": mean_of("event_pages"), "pages": mean_of("pages"), "kept": mean_of("kept"),
            "best_rank_share": mean_of("best_rank", lambda v, r, i: v / max(1, r["page_pages"][i]))}


def _retention_summary(rows: list) -> dict:
    out = {}
    for (memory,), mine in _by(rows, "memory").items():
        entry = {}
        for position in POSITIONS:
            layers = np.array([r["per_layer"] for r in mine if r["position"] == position])
            if layers.size:
                per_layer = layers.mean(axis=0)
                entry[position] = {"mean": float(per_layer.mean()), "min_layer": float(per_layer.min()),
                                   "max_layer": float(per_layer.max()), "per_layer": [float(x) for x in per_layer]}
        ages = np.array([r["ages"] for r in mine if r["position"] == "ages"])
        if ages.size:
            hist = ages.mean(axis=0)
            entry["ages"] = [float(x) for x in hist / max(hist.sum(), 1e-9)]
        out[memory] = entry
    return out


# ------------------------------------------------------------------ markdown
def _pct(e: Optional[dict]) -> str:
    if not e or e.get("n", 0) == 0 or _nan(e["mean"]):
        return "-"
    return f"{100 * e['mean']:.0f} [{100 * e['low']:.0f}, {100 * e['high']:.0f}]"


def _diff(e: Optional[dict]) -> str:
    if not e or e.get("n", 0) == 0:
        return "-"
    mark = "" if (e["low"] <= 0 <= e["high"]) else " *"
    return f"{100 * e['mean']:+.0f} [{100 * e['low']:+.0f}, {100 * e['high']:+.0f}]{mark}"


def _num(e: Optional[dict]) -> str:
    if not e or e.get("n", 0) == 0 or _nan(e["mean"]):
        return "-"
    return f"{e['mean']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}]"


def compact_table(summary: dict, length: str, arms_order: Sequence[str] = ORDER) -> str:
    """One length's headline table for the docs: accuracy overall and by position [95% CI], paired gaps vs full
    KV and vs VSB without retrieval, and questions per arm (``n``)."""
    arms = summary["lengths"][length]["arms"]
    lines = ["| arm | overall | early | middle | late | vs full (paired) | vs vsb (paired) | n |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in [a for a in arms_order if a in arms]:
        e = arms[arm]
        lines.append(f"| {arm} | {_pct(e['accuracy'])} | {_pct(e['early'])} | {_pct(e['middle'])} | "
                     f"{_pct(e['late'])} | {_diff(e.get('vs_full'))} | {_diff(e.get('vs_vsb'))} | "
                     f"{e['accuracy'].get('n', 0)} |")
    return "\n".join(lines)


def markdown(summary: dict, meta: dict, arms_order: Optional[Sequence[str]] = None) -> str:
    """The study's tables: accuracy by position with CIs, paired gaps, PaR diagnosis, retention, targets."""
    lines = ["## Fidelity study (TEXT PROXY: captions, not images)", ""]
    lines += [meta.get("description", ""), ""]
    for length, block in summary["lengths"].items():
        arms = block["arms"]
        order = [a for a in (arms_order or arms) if a in arms] + [a for a in arms if a not in (arms_order or arms)]
        size = block.get("sizes") or {}
        lines += [f"### Streams {length}: {block['streams']} streams x 3 questions per arm; "
                  f"~{size.get('stream_tokens', 0):.0f} stream tokens, budget {size.get('budget_tokens')} tokens, "
                  f"clip {size.get('clip_frames')} frames; chance {100 * summary['chance']:.0f}%", "",
                  "Accuracy % (option log-likelihood) [95% CI]; `*` = paired CI excludes 0.", "",
                  "| arm | overall | early | middle | late | vs full | vs sliding | greedy exact | gold margin (nats) "
                  "| event tokens in context |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for arm in order:
            e = arms[arm]
            lines.append(f"| {arm} | {_pct(e['accuracy'])} | {_pct(e['early'])} | {_pct(e['middle'])} | "
                         f"{_pct(e['late'])} | {_diff(e.get('vs_full'))} | {_diff(e.get('vs_sliding'))} | "
                         f"{_pct(e['greedy'])} | {_num(e['margin'])} | {_pct(e['recall'])} |")
        lines += ["", "Paired gaps by event position (points, [95% CI]):", "",
                  "| arm | vs full early | middle | late | vs sliding early | middle | late | vs vsb early | middle "
                  "| late |", "|---|---|---|---|---|---|---|---|---|---|"]
        for arm in order:
            e = arms[arm]
            cells = [_diff(e.get(f"vs_{ref}_{p}")) for ref in ("full", "sliding", "vsb") for p in POSITIONS]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        pages = [(a, arms[a]["pages"]) for a in order if arms[a].get("pages")]
        if pages:
            lines += ["", "PaR page diagnosis (means over questions and layers): `hit` = an event page was "
                      "retrieved; `chance` = the same if the kept pages were drawn at random; `purity` = the event's "
                      "share of the tokens of the pages holding it; `rank` = the best event page's rank / pages "
                      "(0 = best); `bias` = mean z-score of the page scores in each fifth of memory, oldest "
                      "first (0 0 0 0 0: no preference by age).", "",
                      "| arm | hit | chance | purity | event pages | pages | kept | rank | bias |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for arm, p in pages:
                bias = " ".join("." if math.isnan(x) else f"{x:+.1f}" for x in p["bias"]) if p.get("bias") else "-"
                lines.append(f"| {arm} | {_f(p['hit'])} | {_f(p.get('chance'))} | {_f(p['purity'])} | "
                             f"{_f(p['event_pages'], 1)} | {_f(p['pages'], 1)} | {_f(p.get('kept'), 1)} | "
                             f"{_f(p['best_rank_share'])} | {bias} |")
        ret = block["retention"]
        lines += ["", "Event tokens retained in memory (Fig. 4 metric; share of the event's tokens, mean over "
                  "layers [lowest layer, highest layer]) and memory age (share of long-term tokens in the oldest / "
                  "newest tenth of the stream):", "",
                  "| memory | early | middle | late | oldest tenth | newest tenth |", "|---|---|---|---|---|---|"]
        for memory, entry in ret.items():
            cells = []
            for p in POSITIONS:
                x = entry.get(p)
                cells.append("-" if not x else f"{100 * x['mean']:.0f}% [{100 * x['min_layer']:.0f}, "
                                               f"{100 * x['max_layer']:.0f}]")
            ages = entry.get("ages") or [float("nan")] * 10
            lines.append(f"| {memory} | " + " | ".join(cells) + f" | {100 * ages[-1]:.0f}% | {100 * ages[0]:.0f}% |")
        lines += [""]
    return "\n".join(lines)


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def targets(summary: dict) -> list:
    """Item 7-8's targets per length, for each of :data:`TARGET_ARMS` present: dicts with the gap, whether it is
    met, and whether its CI is clear of the threshold (within 10 points of full KV; above sliding, top-k and
    random on early and middle events; at least VSB without retrieval at every event position)."""
    out = []
    for length, block in summary["lengths"].items():
        arms = block["arms"]
        for arm in TARGET_ARMS:
            if arm not in arms:
                continue
            e = arms[arm]
            gap = e.get("vs_full")
            if gap:
                met = gap["mean"] >= -0.10
                out.append({"length": length, "arm": arm, "target": "within 10 points of full KV overall",
                            "value": gap, "met": met, "sure": (gap["low"] >= -0.10) if met else (gap["high"] < -0.10)})
            for base in BASELINES:
                for p in ("early", "middle"):
                    d = e.get(f"vs_{base}_{p}")
                    if d:
                        out.append({"length": length, "arm": arm, "target": f"above {base} on {p} events", "value": d,
                                    "met": d["mean"] > 0, "sure": d["low"] > 0})
            for p in POSITIONS:
                d = e.get(f"vs_vsb_{p}")
                if d:
                    out.append({"length": length, "arm": arm, "target": f"at least VSB (no retrieval) on {p} events",
                                "value": d, "met": d["mean"] >= 0, "sure": d["low"] >= 0 if d["mean"] >= 0
                                else d["high"] < 0})
    return out


def targets_markdown(rows: list) -> str:
    lines = ["| streams | arm | target | gap (points) [95% CI] | met? |", "|---|---|---|---|---|"]
    for r in rows:
        verdict = ("yes" if r["met"] else "no") + ("" if r["sure"] else " (CI includes the threshold)")
        lines.append(f"| {r['length']} | {r['arm']} | {r['target']} | {_diff(r['value'])} | {verdict} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ plots
def plot(summary: dict, out_dir: str, prefix: str = "fidelity", arms: Sequence[str] = HEADLINE,
         model: str = "") -> list:
    """``<prefix>_accuracy_by_position.png`` (accuracy by event age per arm, CI bars), ``<prefix>_retention.png``
    (event tokens kept per layer) and ``<prefix>_ages.png`` (memory age histogram); ``model`` names the
    language model in the titles. Returns the paths."""
    who = f"{model}, " if model else ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(summary["lengths"])
    paths = []
    fig, axes = plt.subplots(1, len(lengths), figsize=(7 * len(lengths), 4.5), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        table = summary["lengths"][length]["arms"]
        shown = [a for a in arms if a in table]
        width = 0.8 / max(1, len(shown))
        for i, arm in enumerate(shown):
            means = [table[arm][p]["mean"] * 100 for p in POSITIONS]
            low = [max(0.0, (table[arm][p]["mean"] - table[arm][p]["low"]) * 100) for p in POSITIONS]
            high = [max(0.0, (table[arm][p]["high"] - table[arm][p]["mean"]) * 100) for p in POSITIONS]
            x = np.arange(len(POSITIONS)) + (i - (len(shown) - 1) / 2) * width
            ax.bar(x, means, width, yerr=[low, high], capsize=2, label=arm)
        ax.axhline(100 * summary["chance"], color="k", linestyle=":", linewidth=1, label="chance")
        ax.set_xticks(range(len(POSITIONS)), [f"{p} event" for p in POSITIONS])
        ax.set_ylabel("accuracy % (95% CI)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{who}streams {length} the budget (captions, not images)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    paths.append(os.path.join(out_dir, f"{prefix}_accuracy_by_position.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    memories = [a for a in ("random", "sliding", "topk", "vsb-memory", "vsb", "vsb/decay", "vsb/per-head")]
    fig, axes = plt.subplots(len(lengths), len(POSITIONS), figsize=(13, 3.3 * len(lengths)), squeeze=False)
    for row, length in zip(axes, lengths):
        ret = summary["lengths"][length]["retention"]
        for ax, position in zip(row, POSITIONS):
            for memory in memories:
                if memory in ret and position in ret[memory]:
                    ax.plot(100 * np.array(ret[memory][position]["per_layer"]), label=memory)
            ax.set_title(f"{who}{length}: {position} event")
            ax.set_xlabel("layer")
            ax.set_ylabel("event tokens kept %")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"{prefix}_retention.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 3.5), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        ret = summary["lengths"][length]["retention"]
        for memory in memories:
            if memory in ret and "ages" in ret[memory]:
                ax.plot(np.arange(10) * 10 + 5, 100 * np.array(ret[memory]["ages"]), marker="o", label=memory)
        ax.set_xlabel("token age, % of the stream (0 = newest)")
        ax.set_ylabel("share of long-term memory %")
        ax.set_title(f"memory age, streams {length}")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"{prefix}_ages.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
