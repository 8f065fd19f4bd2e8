"""Run the fidelity study: every stream x memory arm ingested once, every retrieval arm asked on it.

Returns plain records (lists of dicts) that :mod:`.report` aggregates; ``on_progress`` is called
after each ingested memory, and ``on_checkpoint`` with the records so far after each stream, so an
interrupted run keeps what it measured.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from livevlm_ros.engine import EngineConfig

from . import probes
from .arms import MEMORY_ARMS, RETRIEVAL_ARMS, MemoryArm, RetrievalArm, arm_name
from .streams import make_stream


@dataclass(frozen=True)
class StreamLength:
    """A stream length and its budget: ``frames`` captions, ``budget_share`` of its tokens as budget M."""

    name: str
    frames: int
    budget_share: float


@dataclass
class StudySettings:
    """Streams (seeds), lengths, arms and engine sizes of one study.

    Attributes:
        clip_share: clip size as a share of the budget (the paper: about half).
        short_term_frames: W, frames kept uncompressed (the engine default).
    """

    seeds: Sequence[int] = tuple(range(40))
    lengths: Sequence[StreamLength] = (StreamLength("5x", 48, 0.2), StreamLength("10x", 96, 0.1))
    event_frames: int = 4
    memory_arms: Sequence[MemoryArm] = MEMORY_ARMS
    retrieval_arms: Sequence[RetrievalArm] = RETRIEVAL_ARMS
    #: On the longer streams (every length after the first): memory arm -> the retrieval arms asked on it
    #: (None: the same arms as the first length).
    long_plan: Optional[dict] = None
    clip_share: float = 0.5
    short_term_frames: int = 2
    page_size: int = 16

    def describe(self) -> dict:
        return {"seeds": list(self.seeds), "lengths": [vars(x) for x in self.lengths],
                "event_frames": self.event_frames, "memory_arms": [a.name for a in self.memory_arms],
                "retrieval_arms": {a.name: a.changes for a in self.retrieval_arms},
                "long_plan": self.long_plan,
                "clip_share": self.clip_share, "short_term_frames": self.short_term_frames,
                "page_size": self.page_size}


def engine_sizes(model, length: StreamLength, settings: StudySettings, seed: int = 0) -> dict:
    """Budget (tokens) and clip (frames) of ``length``, from the mean stream tokens of a sample stream."""
    sample = make_stream(seed, length.frames, settings.event_frames)
    counts = probes.frame_token_counts(model, sample)
    tokens = sum(counts)
    budget = max(settings.page_size, round(length.budget_share * tokens))
    per_frame = tokens / len(counts)
    clip = max(1, round(settings.clip_share * budget / per_frame))
    return {"stream_tokens": tokens, "budget_tokens": budget, "clip_frames": clip, "tokens_per_frame": per_frame}


def plan(settings: StudySettings, index: int) -> list:
    """``[(memory arm, [retrieval arms])]`` asked on streams of ``settings.lengths[index]``."""
    pairs = []
    for memory_arm in settings.memory_arms:
        names = memory_arm.retrievals
        if index > 0 and settings.long_plan is not None:
            if memory_arm.name not in settings.long_plan:
                continue
            names = settings.long_plan[memory_arm.name]
        chosen = [r for r in settings.retrieval_arms if names is None or r.name in names]
        pairs.append((memory_arm, chosen))
    return pairs


def total_ingests(settings: StudySettings) -> int:
    return len(settings.seeds) * sum(len(plan(settings, i)) for i in range(len(settings.lengths)))


def run_study(model, settings: StudySettings, on_progress: Optional[Callable[[int], None]] = None,
              on_checkpoint: Optional[Callable[[dict], None]] = None) -> dict:
    """Every arm on every stream; returns ``{"questions": [...], "retention": [...], "sizes": {...}}``."""
    questions, retention, sizes = [], [], {}
    started = time.perf_counter()
    for index, length in enumerate(settings.lengths):
        sizes[length.name] = engine_sizes(model, length, settings)
    for seed in settings.seeds:
        for index, length in enumerate(settings.lengths):
            size = sizes[length.name]
            base = EngineConfig(budget_tokens=size["budget_tokens"], clip_frames=size["clip_frames"],
                                short_term_frames=settings.short_term_frames, page_size=settings.page_size,
                                max_new_tokens=probes.GREEDY_TOKENS, seed=seed)
            stream_def = make_stream(seed, length.frames, settings.event_frames)
            counts = probes.frame_token_counts(model, stream_def)
            for memory_arm, retrieval_arms in plan(settings, index):
                stream = probes.ingest(model, memory_arm.config(base), stream_def)
                kept = probes.retention(stream, stream_def, counts)
                for event, per_layer in zip(stream_def.events, kept.per_layer):
                    retention.append({"length": length.name, "seed": seed, "memory": memory_arm.name,
                                      "position": event.position, "per_layer": per_layer})
                retention.append({"length": length.name, "seed": seed, "memory": memory_arm.name,
                                  "position": "ages", "ages": kept.ages})
                stream.record_retrieval = True
                for retrieval_arm in retrieval_arms:
                    stream.set_question_settings(**retrieval_arm.changes)
                    retrieves = retrieval_arm.changes.get("retrieval", "none") != "none"
                    for q_index, question in enumerate(stream_def.questions):
                        row = probes.score_question(stream, question, greedy=memory_arm.greedy or retrieves)
                        diagnosis = probes.page_diagnosis(stream, question, settings.page_size) if retrieves else {}
                        recall = row.pop("recall", [])
                        questions.append({
                            "length": length.name, "seed": seed, "question": q_index,
                            "position": question.event.position, "memory": memory_arm.name,
                            "retrieval": retrieval_arm.name, "arm": arm_name(memory_arm.name, retrieval_arm.name),
                            "greedy_correct": None, **row, "recall": _finite_mean(recall),
                            "recall_per_layer": recall,
                            **{f"page_{k}": v for k, v in diagnosis.items()},
                        })
                if on_progress is not None:
                    on_progress(1)
        if on_checkpoint is not None:
            on_checkpoint({"questions": questions, "retention": retention, "sizes": sizes,
                           "wall_s": time.perf_counter() - started})
    return {"questions": questions, "retention": retention, "sizes": sizes, "wall_s": time.perf_counter() - started}


def _finite_mean(values: list) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")
