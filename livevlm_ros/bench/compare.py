"""Before/after tables from two sets of ``livevlm_bench`` runs of different code on the same machine.

``livevlm_bench --compare BEFORE_DIR[,BEFORE_DIR2...] AFTER_DIR[,AFTER_DIR2...]`` reads each side's
``results.json`` files, takes each row's best (lowest) time over the side's runs, and prints one
markdown table per model: TTFT, answer time and ingest ms/frame before and after, and the speed-up
(before / after). Several runs per side, run alternately (A B A B), also give each side's spread
(worst / best), so a reader can see which differences are inside the noise.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from .policies import POLICY_NAMES
from .report import load_rows

#: Row fields compared (lower is better), with their column titles and display scale.
COMPARED = (("ttft_s", "TTFT ms", 1e-3), ("answer_s", "16-tok answer ms", 1e-3),
            ("ingest_ms_per_frame", "ingest ms/frame", 1.0))


def _runs(spec: str) -> list[list[dict]]:
    """The rows of each run directory in the comma-separated ``spec``."""
    runs = []
    for directory in filter(None, spec.split(",")):
        path = os.path.join(directory, "results.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no results.json (is {directory!r} a livevlm_bench --out directory?)")
        runs.append(load_rows(path))
    return runs


def _by_key(runs: list[list[dict]]) -> dict:
    """``{(model, policy, frames): [row of each run that measured it]}`` (out-of-memory rows left out)."""
    table: dict = {}
    for rows in runs:
        for row in rows:
            if not row.get("oom"):
                table.setdefault((row["model"], row["policy"], row["frames"]), []).append(row)
    return table


def best_and_spread(rows: Sequence[dict], key: str) -> tuple[Optional[float], Optional[float]]:
    """The lowest ``key`` over ``rows`` and worst / best (None when not measured)."""
    values = [row[key] for row in rows if row.get(key) is not None]
    if not values:
        return None, None
    best = min(values)
    return best, (max(values) / best if best > 0 else None)


def _cell(value: Optional[float], scale: float) -> str:
    return "-" if value is None else f"{value / scale:.2f}"


def _speedup(before: Optional[float], after: Optional[float]) -> str:
    return "-" if not before or not after else f"{before / after:.2f}x"


def compare_markdown(before_spec: str, after_spec: str) -> str:
    """Markdown tables, one per model measured on both sides."""
    before_runs, after_runs = _runs(before_spec), _runs(after_spec)
    before, after = _by_key(before_runs), _by_key(after_runs)
    shared = sorted(set(before) & set(after), key=lambda k: (k[0], POLICY_NAMES.index(k[1]), k[2]))
    if not shared:
        return "(no row was measured on both sides)"
    lines = [f"Before: {len(before_runs)} run(s) ({before_spec}); after: {len(after_runs)} run(s) ({after_spec}). "
             "Each cell is the best over a side's runs; `spread` is worst / best over the runs of that side "
             "(1.00 with one run)."]
    for model in sorted({k[0] for k in shared}):
        head = ["policy", "frames"]
        for _, title, _ in COMPARED:
            head += [f"{title} before", f"{title} after", "speed-up"]
        head += ["TTFT spread before", "TTFT spread after"]
        lines += ["", f"**{model}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key in (k for k in shared if k[0] == model):
            cells = [key[1], str(key[2])]
            for field, _, scale in COMPARED:
                b, _ = best_and_spread(before[key], field)
                a, _ = best_and_spread(after[key], field)
                cells += [_cell(b, scale), _cell(a, scale), _speedup(b, a)]
            for side in (before, after):
                _, spread = best_and_spread(side[key], "ttft_s")
                cells.append("-" if spread is None else f"{spread:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
