"""One model's latency/memory sweep: every policy streams the same frames once, asked at checkpoints.

For each policy a fresh :class:`LiveVLMStream` ingests the frames in order; at each checkpoint
length (e.g. 64, 128, ... 2048 frames) it is asked one fixed question with a fixed 16-token
answer (EOS ignored). Asking leaves the memory unchanged (an engine guarantee), so a single pass
measures every length. Rows (one per policy and checkpoint) hold:

* ``ttft_s`` / ``answer_s``: seconds to the first answer token / to the whole 16-token answer,
  best of ``repeats`` asks.
* ``limit_s`` / ``limit_ratio``: seconds of one plain transformers forward of the question over a
  ``DynamicCache`` holding as many tokens as the answer attended to (best of ``repeats``), and
  ``ttft_s / limit_s``: the engine's overhead over that ideal (see :mod:`.limit`).
* ``ingest_ms_per_frame``: mean wall milliseconds per frame of the frames ingested since the
  previous checkpoint (vision tower + prefill + compression), device synchronised.
* ``device_kv_bytes`` / ``host_kv_bytes``: KV bytes on the model's device / offloaded to host (ReKV).
* ``peak_rss_bytes`` / ``peak_cuda_bytes``: peaks during that segment (ingest + question).
* overhead shares (fractions, not percent) of the segment's ingest time / of ``answer_s``.

``full`` is stopped once its KV would exceed ``full_kv_cap_bytes`` (the cap is checked before
each clip is prefilled, so it is never actually allocated); its remaining checkpoints are rows
with ``"oom": true``. A time budget stops a model's sweep gracefully between checkpoints.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from livevlm_ros.engine import EngineConfig, LiveVLMStream, StageTimer
from livevlm_ros.engine.timing import NO_TIMER

from .frames import FrameSource
from .instrument import PeakMemory, synchronize
from .limit import plain_forward_seconds
from .policies import policy_config, run_order, without_eos

#: The question asked at every checkpoint (answers of random-weight models are meaningless;
#: only their cost is measured).
QUESTION = "What happened on the road, and which cars passed by?"
ANSWER_TOKENS = 16


@dataclass
class SweepSettings:
    """What one sweep measures.

    Attributes:
        checkpoints: stream lengths (frames) at which each policy is asked, ascending.
        policies: benchmark policy names (see :mod:`.policies`).
        base_config: EngineConfig shared by all policies (budget, clip size, ...).
        full_kv_cap_bytes: device KV bytes beyond which ``full`` is reported out of memory.
        time_budget_s: wall seconds for the whole sweep of this model (``None``: unlimited).
        answer_tokens: fixed answer length (tokens).
        repeats: the question is asked this many times per checkpoint; times are the best of them
            (memory is unchanged by asking, so repeats only filter out interference).
    """

    checkpoints: Sequence[int]
    policies: Sequence[str]
    base_config: EngineConfig
    full_kv_cap_bytes: int
    time_budget_s: Optional[float] = None
    answer_tokens: int = ANSWER_TOKENS
    repeats: int = 3


@dataclass
class PolicyOutcome:
    """How far one policy got: ``stopped`` is ``"done"``, ``"oom"``, ``"time-budget"`` or ``"error: ..."``."""

    policy: str
    frames_reached: int = 0
    stopped: str = "done"
    rows: list = field(default_factory=list)


class _Deadline:
    """Splits the sweep's time budget over the policies still to run (unused time rolls over)."""

    def __init__(self, budget_s: Optional[float], policies: int) -> None:
        self.end = None if budget_s is None else time.perf_counter() + budget_s
        self.left = policies

    def next_policy(self) -> Optional[float]:
        """Wall-clock deadline (perf_counter s) for the next policy, or None."""
        self.left -= 1
        if self.end is None:
            return None
        now = time.perf_counter()
        return now + max(0.0, self.end - now) / (self.left + 1)


def common_budget(model, base: EngineConfig, policies) -> EngineConfig:
    """``base`` with one long-term budget for every policy: the smallest the engine resolves for them.

    With ``budget_tokens=None`` the engine picks the paper's 12,000 tokens, lowered to what fits the
    model's trained context (SmolLM2: 8,192 positions); ReKV reserves room for its retrieved frames,
    so policies could differ by a few frames. A common value keeps the comparison fair.
    """
    budgets = [LiveVLMStream(model, policy_config(p, base)).budget for p in policies if p != "full"]
    return base.replace(budget_tokens=min(budgets)) if budgets else base


def warm_up(model, frames: FrameSource, config: EngineConfig) -> None:
    """One clip and a 2-token answer on a throwaway stream (kernel initialisation stays out of the numbers)."""
    stream = LiveVLMStream(without_eos(model), config.replace(memory="full", retrieval="none"))
    for frame, t in frames.stream(config.clip_frames):
        stream.ingest(frame, t)
    stream.ask(QUESTION, max_new_tokens=2)


def run_sweep(model, frames: FrameSource, settings: SweepSettings, model_name: str,
              progress: Optional[Callable[[int], None]] = None) -> tuple[list, list]:
    """Measure every policy of ``settings`` on ``model``.

    Args:
        progress: called with the number of frames ingested (for a progress bar).
    Returns:
        ``(rows, outcomes)``: result rows (dicts) and one :class:`PolicyOutcome` per policy.
    """
    device = model.device
    settings = dataclasses.replace(settings, base_config=common_budget(model, settings.base_config, settings.policies))
    warm_up(model, frames, settings.base_config)
    deadline = _Deadline(settings.time_budget_s, len(settings.policies))
    outcomes = []
    for policy in run_order(settings.policies):
        outcome = _run_policy(model, frames, settings, policy, deadline.next_policy(), device, progress)
        for row in outcome.rows:
            row.update(model=model_name, device=str(device), dtype=str(model.dtype).replace("torch.", ""),
                       random_weights=bool(model.is_tiny), budget_tokens=settings.base_config.budget_tokens,
                       clip_frames=settings.base_config.clip_frames)
        outcomes.append(outcome)
    rows = [row for outcome in outcomes for row in outcome.rows]
    return rows, outcomes


class _PolicyRun:
    """State of one policy's pass over the frames."""

    def __init__(self, model, settings: SweepSettings, policy: str, device: torch.device) -> None:
        self.settings = settings
        self.policy = policy
        self.device = device
        self.config = policy_config(policy, settings.base_config)
        self.timer = StageTimer(device)
        self.stream = LiveVLMStream(without_eos(model), self.config, timer=self.timer)
        self.memory = PeakMemory(device)
        self.prefix_bytes = self.stream.stats().device_kv_bytes
        self.bytes_per_frame = None  # measured after the first clip
        self.ingest_s = 0.0
        self.segment_frames = 0
        self.last_ask_s = 0.0
        self.last_s_per_frame = None  # ingest seconds per frame of the last finished segment

    def would_exceed_cap(self, frames_after_clip: int) -> bool:
        """Whether ``full`` would hold more than the cap after prefilling up to ``frames_after_clip``."""
        if self.config.memory != "full" or self.bytes_per_frame is None:
            return False
        projected = self.prefix_bytes + self.bytes_per_frame * frames_after_clip
        return projected > self.settings.full_kv_cap_bytes

    def ingest(self, frame, timestamp: float) -> None:
        started = time.perf_counter()
        self.stream.ingest(frame, timestamp)
        synchronize(self.device)
        self.ingest_s += time.perf_counter() - started
        self.segment_frames += 1
        if self.bytes_per_frame is None and self.stream.pending_frames == 0:
            stats = self.stream.stats()
            self.bytes_per_frame = (stats.device_kv_bytes - self.prefix_bytes) / stats.frames_ingested

    def checkpoint(self, frames: int) -> dict:
        """Ask the fixed question; the row for this length (closes the segment)."""
        self.stream.flush()
        synchronize(self.device)
        ingest_sections = self.timer.take()
        # timed asks without the stage hook (on CUDA its synchronisation would add to the latency);
        # one more ask with it for the answer-phase shares
        self.stream.timer = NO_TIMER
        results = []
        for _ in range(max(1, self.settings.repeats)):
            results.append(self.stream.ask(QUESTION, max_new_tokens=self.settings.answer_tokens))
            synchronize(self.device)
        self.stream.timer = self.timer
        profiled = self.stream.ask(QUESTION, max_new_tokens=self.settings.answer_tokens)
        answer_sections = self.timer.take()
        result = min(results, key=lambda r: r.total_s)
        ttft_s = min(r.ttft_s for r in results)
        limit_s = plain_forward_seconds(self.stream.model, QUESTION, round(result.context_tokens),
                                        repeats=self.settings.repeats)
        self.last_ask_s = sum(r.total_s for r in results)
        stats = self.stream.stats()
        row = {
            "policy": self.policy,
            "frames": frames,
            "oom": False,
            "ttft_s": ttft_s,
            "limit_s": limit_s,
            "limit_ratio": ttft_s / limit_s if limit_s > 0 else None,
            "answer_s": result.total_s,
            "asks": len(results),
            "answer_tokens": result.new_tokens,
            "ingest_ms_per_frame": 1000.0 * self.ingest_s / max(1, self.segment_frames),
            "device_kv_bytes": stats.device_kv_bytes,
            "host_kv_bytes": stats.host_kv_bytes,
            "peak_rss_bytes": self.memory.peak_rss_bytes(),
            "rss_scope": self.memory.rss_scope,
            "peak_cuda_bytes": self.memory.peak_cuda_bytes(),
            "memory_tokens": stats.tokens,
            "context_tokens": result.context_tokens,
            "pages_retrieved": result.pages_retrieved,
            "pages_total": result.pages_total,
            "max_position_id": stats.max_position_id,
            "past_trained_context": stats.max_position_id >= stats.max_position_embeddings,
        }
        row.update(_shares(ingest_sections, self.ingest_s, answer_sections, profiled))
        self.last_s_per_frame = self.ingest_s / max(1, self.segment_frames)
        self.ingest_s, self.segment_frames = 0.0, 0
        self.memory.reset()
        return row


def _shares(ingest: dict, ingest_s: float, answer: dict, profiled) -> dict:
    """Stage times as fractions of the segment's ingest time and of one profiled answer."""
    def share(seconds: float, whole: float) -> float:
        return seconds / whole if whole > 0 else 0.0

    vsb_scoring = ingest.get("score", 0.0) + ingest.get("select", 0.0)
    return {
        "vsb_scoring_share": share(vsb_scoring, ingest_s),
        "obs_scores_share": share(ingest.get("score", 0.0), ingest_s),
        "select_share": share(ingest.get("select", 0.0), ingest_s),
        "compact_share": share(ingest.get("compact", 0.0), ingest_s),
        "page_means_share": share(ingest.get("page_means", 0.0), ingest_s),
        "retrieve_share_of_answer": share(answer.get("retrieve", 0.0), profiled.total_s),
        "retrieve_share_of_ttft": share(answer.get("retrieve", 0.0), profiled.ttft_s),
    }


def _oom_row(policy: str, frames: int) -> dict:
    return {"policy": policy, "frames": frames, "oom": True, "ttft_s": None, "answer_s": None,
            "ingest_ms_per_frame": None, "device_kv_bytes": None, "host_kv_bytes": None, "peak_rss_bytes": None}


def _run_policy(model, frames: FrameSource, settings: SweepSettings, policy: str, deadline: Optional[float],
                device: torch.device, progress) -> PolicyOutcome:
    outcome = PolicyOutcome(policy)
    run = _PolicyRun(model, settings, policy, device)
    checkpoints = sorted(set(settings.checkpoints))
    clip = run.config.clip_frames
    previous = 0
    with torch.inference_mode():
        run.memory.reset()
        for target in checkpoints:
            if _out_of_time(run, deadline, target - previous):
                outcome.stopped = "time-budget"
                break
            try:
                for index, (frame, t) in enumerate(itertools.islice(frames.stream(target), previous, None), previous):
                    if index % clip == 0 and run.would_exceed_cap(min(index + clip, target)):
                        raise MemoryError("full-KV cap")
                    run.ingest(frame, t)
                    if progress is not None:
                        progress(1)
                row = run.checkpoint(target)
            except (MemoryError, torch.OutOfMemoryError):
                outcome.stopped = "oom"
                outcome.rows.extend(_oom_row(policy, n) for n in checkpoints if n >= target)
                break
            except Exception as exc:  # one failing policy must not lose the others' rows
                outcome.stopped = f"error: {type(exc).__name__}: {exc}"
                print(f"livevlm_bench: {policy} failed at {target} frames: {outcome.stopped}", file=sys.stderr)
                break
            outcome.rows.append(row)
            outcome.frames_reached = previous = target
    del run
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return outcome


def _out_of_time(run: _PolicyRun, deadline: Optional[float], frames: int) -> bool:
    """Whether the next segment (``frames`` more frames and one answer) would end past ``deadline``.

    Estimated from the last segment's ingest rate and answer time (before the first checkpoint:
    only whether the deadline has already passed), so the budget is soft by about one segment.
    """
    if deadline is None:
        return False
    now = time.perf_counter()
    if run.last_s_per_frame is None:
        return now >= deadline
    return now + run.last_s_per_frame * frames + run.last_ask_s > deadline
