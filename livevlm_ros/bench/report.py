"""Benchmark outputs: ``results.json`` rows, ``results.md`` tables, ratios, targets and PNG plots.

Units in the markdown: seconds (s), milliseconds (ms), mebibytes (MiB = 2**20 bytes); shares in
percent of the phase they belong to (ingest or answer). Ratios are ``baseline / policy`` for
times (higher = faster) and ``baseline / policy`` for bytes (higher = smaller).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from .policies import POLICY_NAMES

MIB = float(2**20)
RATIO_FRAMES = 256

#: The targets of the issue (benchmark numbers, not test assertions).
TTFT_VS_FULL = 5.0
TTFT_VS_REKV = 2.0
TTFT_GROWTH_2048_VS_128 = 1.25
FLAT_TOLERANCE = 0.01
VSB_SCORING_SHARE = 0.03
#: VSB+PaR TTFT over one plain transformers forward of the question over the same retained length.
LIMIT_RATIO = 1.2


def save_json(path: str, payload) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1, sort_keys=False)
        handle.write("\n")


def load_rows(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def models_of(rows: list) -> list:
    seen = []
    for row in rows:
        if row.get("model") not in seen:
            seen.append(row.get("model"))
    return seen


def _find(rows: list, model: str, policy: str, frames: int) -> Optional[dict]:
    for row in rows:
        if row.get("model") == model and row["policy"] == policy and row["frames"] == frames and not row["oom"]:
            return row
    return None


def _fmt(value, scale: float = 1.0, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value / scale:.{digits}f}{suffix}"


def _ordered(rows: list, model: str) -> list:
    mine = [r for r in rows if r.get("model") == model]
    return sorted(mine, key=lambda r: (POLICY_NAMES.index(r["policy"]), r["frames"]))


def results_table(rows: list, model: str) -> str:
    """Markdown table of one model's rows (policy x frames)."""
    cuda = any(r.get("peak_cuda_bytes") for r in rows if r.get("model") == model)
    head = ["policy", "frames", "TTFT s", "16-tok answer s", "ingest ms/frame", "device KV MiB", "host KV MiB",
            "peak RSS MiB"] + (["peak CUDA MiB"] if cuda else []) + ["VSB scoring % ingest", "retrieval % answer",
                                                                    "limit ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _ordered(rows, model):
        if r["oom"]:
            cells = [r["policy"], str(r["frames"]), "OOM (cap)"] + ["-"] * (len(head) - 3)
        else:
            cells = [r["policy"], str(r["frames"]), _fmt(r["ttft_s"], digits=3), _fmt(r["answer_s"], digits=3),
                     _fmt(r["ingest_ms_per_frame"], digits=1), _fmt(r["device_kv_bytes"], MIB),
                     _fmt(r["host_kv_bytes"], MIB), _fmt(r["peak_rss_bytes"], MIB, 0)]
            if cuda:
                cells.append(_fmt(r.get("peak_cuda_bytes"), MIB, 0))
            cells += [_fmt(100 * r.get("vsb_scoring_share", 0.0), digits=2),
                      _fmt(100 * r.get("retrieve_share_of_answer", 0.0), digits=2),
                      _fmt(r.get("limit_ratio"), digits=2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_frames(rows: list, model: str, wanted: int = RATIO_FRAMES) -> Optional[int]:
    """``wanted`` if ReKV and VSB+PaR were measured there, else the largest length ≤ wanted where they were."""
    lengths = sorted({r["frames"] for r in rows if r.get("model") == model and not r["oom"]
                      and r["policy"] == "vsb+par"})
    for frames in sorted((n for n in lengths if n <= wanted), reverse=True):
        if _find(rows, model, "rekv", frames):
            return frames
    return None


def ratio_table(rows: list, model: str) -> tuple[str, Optional[int]]:
    """Markdown table of ratios against ``full`` and ``rekv`` at :data:`RATIO_FRAMES` frames."""
    frames = ratio_frames(rows, model)
    if frames is None:
        return "(no length with both ReKV and VSB+PaR measured)", None
    full, rekv = _find(rows, model, "full", frames), _find(rows, model, "rekv", frames)
    head = ["policy", "TTFT s", "TTFT speed-up vs full", "TTFT speed-up vs ReKV", "answer speed-up vs full",
            "device KV vs full (x smaller)", "device+host KV vs ReKV (x smaller)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for policy in POLICY_NAMES:
        r = _find(rows, model, policy, frames)
        if r is None:
            continue

        def ratio(base, key, own=r):
            return None if base is None or not own.get(key) else base[key] / own[key]

        total = (r["device_kv_bytes"] or 0) + (r["host_kv_bytes"] or 0)
        rekv_total = None if rekv is None else rekv["device_kv_bytes"] + rekv["host_kv_bytes"]
        cells = [policy, _fmt(r["ttft_s"], digits=3), _fmt(ratio(full, "ttft_s"), suffix="x"),
                 _fmt(ratio(rekv, "ttft_s"), suffix="x"), _fmt(ratio(full, "answer_s"), suffix="x"),
                 _fmt(ratio(full, "device_kv_bytes"), suffix="x"),
                 _fmt(None if rekv_total is None or not total else rekv_total / total, suffix="x")]
        lines.append("| " + " | ".join(cells) + " |")
    note = "" if full else f"\n\nFull KV has no row at {frames} frames (out of memory or not reached)."
    return "\n".join(lines) + note, frames


def evaluate_targets(rows: list, model: str) -> list:
    """The issue's targets for VSB+PaR on ``model``: dicts ``{target, value, threshold, met, note}``."""
    out = []
    frames = ratio_frames(rows, model)
    star = _find(rows, model, "vsb+par", frames) if frames else None
    for base_name, threshold in (("full", TTFT_VS_FULL), ("rekv", TTFT_VS_REKV)):
        base = _find(rows, model, base_name, frames) if frames else None
        value = base["ttft_s"] / star["ttft_s"] if base and star else None
        out.append(_target(f"VSB+PaR TTFT speed-up vs {base_name} at {frames or RATIO_FRAMES} frames", value,
                           threshold, value is not None and value >= threshold, "higher is better"))
    lengths = sorted(r["frames"] for r in rows if r.get("model") == model and r["policy"] == "vsb+par"
                     and not r["oom"])
    first = _find(rows, model, "vsb+par", 128)
    last = _find(rows, model, "vsb+par", lengths[-1]) if lengths else None
    value = last["ttft_s"] / first["ttft_s"] if first and last and lengths[-1] > 128 else None
    out.append(_target(f"VSB+PaR TTFT at {lengths[-1] if lengths else '?'} frames / at 128 frames", value,
                       TTFT_GROWTH_2048_VS_128, value is not None and value <= TTFT_GROWTH_2048_VS_128,
                       "target is 2048 vs 128; lower is better"))
    out.append(_flatness(rows, model))
    limits = [r["limit_ratio"] for r in rows if r.get("model") == model and r["policy"] == "vsb+par"
              and not r["oom"] and r.get("limit_ratio") is not None]
    value = max(limits) if limits else None
    out.append(_target("VSB+PaR TTFT / one plain transformers forward over the same retained length, worst row",
                       value, LIMIT_RATIO, value is not None and value <= LIMIT_RATIO, "lower is better"))
    value = scoring_share_of_run(rows, model)
    out.append(_target("VSB scoring (observation scores + bucketing) share of VSB+PaR's ingest time over the run",
                       value, VSB_SCORING_SHARE, value is not None and value < VSB_SCORING_SHARE,
                       "time-weighted over every segment; lower is better"))
    return out


def scoring_share_of_run(rows: list, model: str, policy: str = "vsb+par") -> Optional[float]:
    """VSB scoring seconds / ingest seconds of ``policy`` over all its segments (each row is the
    segment of frames since the previous checkpoint), or None without rows."""
    mine = sorted((r for r in rows if r.get("model") == model and r["policy"] == policy and not r["oom"]
                   and r.get("vsb_scoring_share") is not None), key=lambda r: r["frames"])
    ingest = scoring = 0.0
    previous = 0
    for r in mine:
        seconds = r["ingest_ms_per_frame"] * (r["frames"] - previous) / 1e3
        ingest, scoring, previous = ingest + seconds, scoring + r["vsb_scoring_share"] * seconds, r["frames"]
    return scoring / ingest if ingest > 0 else None


def _flatness(rows: list, model: str) -> dict:
    """Device KV bytes of VSB+PaR over the rows after the budget is full: max/min - 1."""
    mine = [r for r in _ordered(rows, model) if r["policy"] == "vsb+par" and not r["oom"]]
    budget = mine[0].get("budget_tokens") if mine else None
    full_rows = [r for r in mine if budget and r["memory_tokens"] >= budget]
    if len(full_rows) < 2:
        return _target("VSB+PaR device KV flat once the budget is full (max/min - 1)", None, FLAT_TOLERANCE, False,
                       "fewer than two lengths with a full budget")
    sizes = [r["device_kv_bytes"] for r in full_rows]
    value = max(sizes) / min(sizes) - 1.0
    return _target("VSB+PaR device KV flat once the budget is full (max/min - 1)", value, FLAT_TOLERANCE,
                   value <= FLAT_TOLERANCE, f"{full_rows[0]['frames']}-{full_rows[-1]['frames']} frames")


def _target(name: str, value, threshold, met: bool, note: str) -> dict:
    return {"target": name, "value": value, "threshold": threshold, "met": bool(met), "note": note}


def targets_table(targets: list) -> str:
    lines = ["| target | measured | threshold | met |", "|---|---|---|---|"]
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(f"| {t['target']} ({t['note']}) | {value} | {t['threshold']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines)


def markdown(rows: list, meta: dict) -> str:
    """The whole ``results.md``."""
    parts = ["# livevlm_bench results", "", _meta_lines(meta)]
    for model in models_of(rows):
        ratios, frames = ratio_table(rows, model)
        info = meta.get("models", {}).get(model, {})
        about = "; ".join(f"{k}: {info[k]}" for k in ("describe", "lm_weights", "tokens_per_frame", "budget_tokens",
                                                       "load_s", "sweep_s") if k in info)
        parts += [f"## {model}", "", about, "", results_table(rows, model), "",
                  f"### Ratios at {frames or RATIO_FRAMES} frames", "", ratios, "",
                  "### Targets (VSB+PaR)", "", targets_table(evaluate_targets(rows, model)), ""]
        outcome_lines = [f"- {o['policy']}: reached {o['frames_reached']} frames, stopped: {o['stopped']}"
                         for o in meta.get("outcomes", {}).get(model, [])]
        if outcome_lines:
            parts += ["Sweep status:", ""] + outcome_lines + [""]
    parts += ["Plots: " + ", ".join(f"`{name}`" for name in PLOTS), ""]
    return "\n".join(parts)


def _meta_lines(meta: dict) -> str:
    keys = ("command", "machine", "device", "dtype", "frames_source", "question", "answer_tokens", "asks",
            "full_kv_cap_bytes", "engine_config", "wall_s", "notes")
    return "\n".join(f"- **{k}**: {meta[k]}" for k in keys if k in meta)


PLOTS = ("latency_vs_frames.png", "memory_vs_frames.png", "ingest_vs_frames.png")


def plot(rows: list, out_dir: str) -> list:
    """Write :data:`PLOTS` (matplotlib Agg); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("latency_vs_frames.png", [("ttft_s", "time to first token (s)", 1.0),
                                   ("answer_s", "16-token answer (s)", 1.0)]),
        ("memory_vs_frames.png", [("device_kv_bytes", "device KV (MiB)", MIB),
                                  ("host_kv_bytes", "host KV (MiB)", MIB),
                                  ("peak_rss_bytes", "peak process RSS (MiB)", MIB)]
         + ([("peak_cuda_bytes", "peak CUDA memory (MiB)", MIB)] if any(r.get("peak_cuda_bytes") for r in rows)
            else [])),
        ("ingest_vs_frames.png", [("ingest_ms_per_frame", "ingest (ms / frame)", 1.0)]),
    )
    models = models_of(rows)
    paths = []
    for filename, metrics in panels:
        fig, axes = plt.subplots(len(models), len(metrics), figsize=(5 * len(metrics), 3.6 * len(models)),
                                 squeeze=False)
        for i, model in enumerate(models):
            for j, (key, label, scale) in enumerate(metrics):
                _panel(axes[i][j], rows, model, key, label, scale)
        for row in axes:
            row[0].legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, filename)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _panel(ax, rows: list, model: str, key: str, label: str, scale: float) -> None:
    for policy in POLICY_NAMES:
        mine = [r for r in _ordered(rows, model) if r["policy"] == policy]
        points = [(r["frames"], r[key] / scale) for r in mine if not r["oom"] and r.get(key) is not None]
        if points:
            line, = ax.plot(*zip(*points), marker="o", markersize=3, label=policy,
                            color=f"C{POLICY_NAMES.index(policy)}")  # one colour per policy in every plot
            oom = [r["frames"] for r in mine if r["oom"]]
            if oom:
                ax.axvline(oom[0], color=line.get_color(), linestyle=":", linewidth=1)
                ax.annotate(f"{policy} OOM", (oom[0], 0.97), xycoords=("data", "axes fraction"), fontsize=7,
                            rotation=90, va="top", ha="right", color=line.get_color())
    ax.set_xscale("log", base=2)
    if key not in ("host_kv_bytes",):
        ax.set_yscale("log")
    ax.set_xlabel("frames streamed")
    ax.set_ylabel(label)
    ax.set_title(f"{model}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
