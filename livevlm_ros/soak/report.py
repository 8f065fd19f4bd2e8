"""The soak report: figures after warm-up from the samples and question records, the JSON
(``soak.json``) and the PNG plots (``soak.png`` overview, ``rss.png``), matplotlib Agg.

Units: seconds, MB (10**6 bytes), MB/min for the RSS slope.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence

from .stats import LinearFit, Thresholds, after_warmup, count_questions, linear_fit, percentiles, verdict

__all__ = ["rss_summary", "question_summary", "frame_age_summary", "build_report", "write_report", "plot"]


def rss_summary(t_s: Sequence[float], rss: Sequence[Optional[float]], warmup_s: float, target: float) -> Dict:
    """RSS figures after warm-up: least-squares slope (MB/min) with its standard error (also over
    the second half of those samples), and growth = max(RSS) - RSS at the first sample after
    warm-up (MB)."""
    pairs = [(t, r) for t, r in zip(t_s, rss, strict=True) if r is not None]
    ts, rs = after_warmup([t for t, _ in pairs], [r for _, r in pairs], warmup_s)
    out: Dict = {"first_mb": pairs[0][1] if pairs else None, "last_mb": pairs[-1][1] if pairs else None,
           "peak_mb": max((r for _, r in pairs), default=None), "samples_after_warmup": len(rs),
           "slope_mb_per_min": None, "slope_se_mb_per_min": None, "growth_after_warmup_mb": None,
           "slope_target_mb_per_min": target}
    if rs:
        out["growth_after_warmup_mb"] = max(rs) - rs[0]
    out["slope_mb_per_min"], out["slope_se_mb_per_min"] = _slope(ts, rs)
    # A leak keeps its slope in the second half; a warm-up step that outlasts --warmup does not.
    half = len(rs) // 2
    out["second_half_from_s"] = ts[half] if rs else None
    out["second_half_slope_mb_per_min"], out["second_half_slope_se_mb_per_min"] = _slope(ts[half:], rs[half:])
    return out


def _slope(ts: Sequence[float], rs: Sequence[float]) -> tuple:
    """``(slope, standard error)`` in MB/min of RSS samples (None where too few points)."""
    if len(rs) < 2:
        return None, None
    fit = linear_fit([t / 60.0 for t in ts], rs)
    return fit.slope, (None if fit.n < 3 else fit.slope_se)


def _fit_of(rss: Dict) -> Optional[LinearFit]:
    if rss["slope_mb_per_min"] is None:
        return None
    return LinearFit(rss["slope_mb_per_min"], rss["slope_se_mb_per_min"] or float("nan"), 0.0,
                     rss["samples_after_warmup"])


def question_summary(records: Sequence, t0: float, warmup_s: float) -> Dict:
    """Counts (all questions) and round-trip / node latency percentiles (answered, after warm-up)."""
    counts = count_questions([r.outcome for r in records])
    late = [r for r in records if r.sent_at - t0 >= warmup_s and r.outcome == "answered"]
    per_client = {}
    for client in sorted({r.spec.client for r in records}):
        c = count_questions([r.outcome for r in records if r.spec.client == client])
        per_client[client] = dict(vars(c))
    errors = Counter(r.error.split(":")[0][:80] for r in records if r.outcome == "errored")
    return {
        **vars(counts), "per_client": per_client, "error_kinds": dict(errors.most_common(5)),
        "round_trip_s": percentiles([r.round_trip_s for r in late]),
        "node_total_latency_s": percentiles([r.node_latency_s for r in late]),
        "answered_after_warmup": len(late),
    }


def frame_age_summary(ages: Sequence[tuple], warmup_s: float) -> Dict:
    """Newest-frame age percentiles after warm-up, per stream and pooled, from every status message."""
    late = [(name, age) for t, name, age in ages if t >= warmup_s]
    out = {"all": {**percentiles([a for _, a in late]), "n": len(late)}}
    for name in sorted({n for n, _ in late}):
        mine = [a for n, a in late if n == name]
        out[name] = {**percentiles(mine), "n": len(mine)}
    return out


def build_report(*, config: Dict, samples: List[Dict], records: Sequence, t0: float, ages: Sequence[tuple],
                 cameras: Dict, crashes: int, shutdown: Dict, watch: Dict, checkpoints: Dict,
                 thresholds: Thresholds, contention: Optional[Dict] = None) -> Dict:
    """The whole report (a JSON-able dict); ``verdict.passed`` decides the exit status."""
    warmup = config["warmup_s"]
    rss = rss_summary([s["t_s"] for s in samples], [s["rss_mb"] for s in samples], warmup,
                      thresholds.rss_slope_target_mb_per_min)
    questions = question_summary(records, t0, warmup)
    counts = count_questions([r.outcome for r in records])
    v = verdict(crashes=crashes, questions=counts, rss_growth_mb=rss["growth_after_warmup_mb"],
                rss_slope=_fit_of(rss), thresholds=thresholds)
    device = [s["device_memory_mb"] for s in samples if s["device_memory_mb"] is not None]
    return {
        "config": config,
        "thresholds": vars(thresholds),
        "verdict": {"passed": v.passed, "failures": v.failures, "rss_slope_target_met": v.slope_target_met},
        "crashes": crashes,
        "shutdown": shutdown,
        "contention": {**(contention or {}), **_load_summary(samples)},
        "rss": rss,
        "device_memory": ({"peak_mb": max(device), "last_mb": device[-1]} if device else "N/A"),
        "frame_age_s": frame_age_summary(ages, warmup),
        "questions": questions,
        "cameras": cameras,
        "watch": watch,
        "checkpoints": checkpoints,
        "samples": samples,
        "question_timeline": [[round(r.sent_at - t0, 2), None if r.round_trip_s is None else round(r.round_trip_s, 3),
                               r.spec.client, r.outcome] for r in records],
    }


#: Report entries with one row per sample / question: written one row per line.
_ROWS = ("samples", "question_timeline")


def _load_summary(samples: Sequence[Dict]) -> Dict:
    """1-min load average of the machine over the samples (the CPUs are shared)."""
    loads = [s["load1"] for s in samples if s.get("load1") is not None]
    return {"load1_mean": sum(loads) / len(loads), "load1_max": max(loads), "cpus": os.cpu_count()} if loads else {}


def write_report(out_dir: str, report: Dict) -> str:
    """``out_dir/soak.json``: floats rounded, the per-sample and per-question rows one per line."""
    report = _rounded(report)
    head = json.dumps({k: v for k, v in report.items() if k not in _ROWS}, indent=1)
    parts = [head[:-2]]  # without the closing "\n}"
    for key in _ROWS:
        if key in report:
            rows = ",\n".join("  " + json.dumps(row, separators=(",", ":")) for row in report[key])
            parts.append(f'"{key}": [\n{rows}\n ]')
    path = os.path.join(out_dir, "soak.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",\n ".join(parts) + "\n}\n")
    return path


def _rounded(value, digits: int = 4):
    """``value`` with every float rounded to ``digits`` decimals (a smaller JSON file)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def _shade_warmup(ax, warmup_s: float) -> None:
    ax.axvspan(0, warmup_s, color="0.9", lw=0)
    ax.grid(alpha=0.3)


def plot(out_dir: str, report: Dict) -> List[str]:
    """``soak.png`` (RSS, memory tokens, frame age, ask round trips, dropped/rejected, questions)
    and ``rss.png``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, warmup = report["samples"], report["config"]["warmup_s"]
    t = [s["t_s"] for s in samples]
    streams = sorted({name for s in samples for name in s["streams"]})
    rss = report["rss"]

    def rss_panel(ax):
        _shade_warmup(ax, warmup)
        ax.plot(t, [s["rss_mb"] for s in samples], ".-", label="node RSS")
        if rss["slope_mb_per_min"] is not None:
            ts, rs = after_warmup(t, [s["rss_mb"] for s in samples], warmup)
            fit = linear_fit([x / 60 for x in ts], rs)
            ax.plot(ts, [fit.intercept + fit.slope * x / 60 for x in ts], "r--",
                    label=f"fit {fit.slope:+.2f} MB/min")
        ax.set(title="node RSS (MB); grey: warm-up", xlabel="s")
        ax.legend(fontsize=8)

    paths = []
    fig, axes = plt.subplots(3, 2, figsize=(11, 9), dpi=72)
    rss_panel(axes[0, 0])
    for ax, key, title in ((axes[0, 1], "memory_tokens", "memory tokens per stream"),
                           (axes[1, 0], "newest_frame_age_s", "newest-frame age (s)")):
        _shade_warmup(ax, warmup)
        for name in streams:
            line, = ax.plot(t, [s["streams"].get(name, {}).get(key) for s in samples], ".-", label=name)
            jump = report.get("cameras", {}).get(name, {}).get("jump_at_s")
            if jump is not None:
                ax.axvline(jump, color=line.get_color(), ls=":", lw=1)
        ax.set(title=title + "; dotted: stamp jump", xlabel="s")
        ax.legend(fontsize=8)
    ax = axes[1, 1]
    _shade_warmup(ax, warmup)
    timeline = report["question_timeline"]
    for outcome, colour in (("answered", "tab:green"), ("errored", "tab:red")):
        pts = [(q[0], q[1]) for q in timeline if q[3] == outcome]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", color=colour, ms=3, label=outcome)
    ax.set(title="ask round trip (s)", xlabel="s sent")
    ax.legend(fontsize=8)
    ax = axes[2, 0]
    _shade_warmup(ax, warmup)
    for name in streams:
        for key, style in (("frames_dropped", "-"), ("frames_rejected", "--")):
            ax.plot(t, [s["streams"].get(name, {}).get(key) for s in samples], style,
                    label=f"{name} {key.split('_')[1]}")
    ax.set(title="frames dropped / rejected (cumulative)", xlabel="s")
    ax.legend(fontsize=7)
    ax = axes[2, 1]
    _shade_warmup(ax, warmup)
    for key in ("sent", "answered", "errored", "pending"):
        ax.plot(t, [s["questions"][key] for s in samples], ".-", label=key)
    ax.set(title="questions (cumulative)", xlabel="s")
    ax.legend(fontsize=8)
    fig.suptitle(f"livevlm_soak {report['config']['duration_s']:g} s: "
                 + ("PASS" if report["verdict"]["passed"] else "FAIL"))
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "soak.png"))
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=72)
    rss_panel(ax)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "rss.png"))
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths
