"""The arms of the fidelity study: a memory policy (what survives ingest) x a question-time retrieval.

Memory arms change how the stream is *ingested* (each needs its own pass over the stream);
retrieval arms change only how a question reads that memory, so every retrieval arm is asked on
the same ingested memory (``LiveVLMStream.set_question_settings``): their differences are
paired by construction. An arm's report name is ``memory`` or ``memory+retrieval``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from livevlm_ros.engine import EngineConfig


@dataclass(frozen=True)
class MemoryArm:
    """A named set of ingest-time :class:`EngineConfig` changes; ``retrievals``: the retrieval arms asked on
    it (``None``: all of the study's); ``greedy``: also decode free greedy answers without retrieval (PaR
    arms always decode one: their page diagnosis reads the answer's context)."""

    name: str
    changes: dict = field(default_factory=dict)
    note: str = ""
    retrievals: Optional[tuple] = None
    greedy: bool = False

    def config(self, base: EngineConfig) -> EngineConfig:
        return base.replace(retrieval="none", **self.changes)


@dataclass(frozen=True)
class RetrievalArm:
    """A named set of question-time settings (``LiveVLMStream.QUESTION_SETTINGS``); ``none`` reads all memory."""

    name: str
    changes: dict = field(default_factory=dict)
    note: str = ""


#: The policies the issue asks to compare (each with the retrieval arms asked on it; None: all), reference VSB (stream buckets, the engine default) included.
CORE_MEMORY = (
    MemoryArm("full", {"memory": "full"}, "every token (vanilla video LLM)", ("none", "par", "par-max"), True),
    MemoryArm("random", {"memory": "random"}, "uniform random keeping: the null baseline", ("none", "par")),
    MemoryArm("sliding", {"memory": "sliding"}, "prefix + newest tokens (StreamingLLM)", ("none", "par")),
    MemoryArm("topk", {"memory": "topk"}, "VSB's score, plain top-M", ("none", "par")),
    MemoryArm("vsb-memory", {"memory": "vsb", "vsb_buckets": "memory"}, "VSB, buckets over the memory index",
              ("none", "par", "par-max")),
    MemoryArm("vsb", {"memory": "vsb", "vsb_buckets": "stream"}, "VSB, buckets over stream positions (default)",
              None, True),
)
#: Importance-score options beyond the paper (item 7), each on VSB with stream buckets.
#: Asked without retrieval only: they change what memory keeps, which ``none`` reads in full.
SCORE_MEMORY = tuple(MemoryArm(name, {"memory": "vsb", **changes}, note, ("none",)) for name, changes, note in (
    ("vsb/decay", {"score_decay": 0.5}, "importance accumulated over clips, decay 0.5"),
    ("vsb/clip-window", {"score_window": "clip"}, "observation window = the whole newest clip"),
    ("vsb/max-heads", {"score_heads": "max"}, "max instead of mean over heads"),
    ("vsb/per-head", {"select_per_head": True}, "one kept set per KV head"),
    ("vsb/frames", {"keep_unit": "frame"}, "whole frames (captions) kept or dropped"),
))
MEMORY_ARMS = CORE_MEMORY + SCORE_MEMORY

#: ``par``: the paper's PaR (page means, ratio 0.4). ``par-max``: pages scored by their best token (the
#: candidate repair of "page means dilute one relevant token"); ``par-max-floor``: and at least 3 pages.
RETRIEVAL_ARMS = (
    RetrievalArm("none", {"retrieval": "none"}, "attend to all of memory"),
    RetrievalArm("par", {"retrieval": "par", "page_score": "mean", "retrieval_min_tokens": 0},
                 "the paper's PaR: pooled question query . page mean key, top 40% of pages"),
    RetrievalArm("par-max", {"retrieval": "par", "page_score": "max", "retrieval_min_tokens": 0},
                 "PaR scoring pages by their best token (pooled question query . pre-RoPE key)"),
    RetrievalArm("par-attn", {"retrieval": "par", "page_score": "attention", "retrieval_min_tokens": 0},
                 "PaR scoring pages by the attention mass of the question's own tokens (per-head softmax, pre-RoPE)"),
    RetrievalArm("par-contrast", {"retrieval": "par", "page_score": "contrast", "retrieval_min_tokens": 0},
                 "PaR with the template's pooled query subtracted from the question's (removes position bias)"),
    RetrievalArm("par-default", {"retrieval": "par", "page_score": "mean",
                                 "retrieval_min_tokens": EngineConfig().retrieval_min_tokens},
                 "the engine default: the paper's PaR, but memories under retrieval_min_tokens are read whole"),
    RetrievalArm("par-max-floor", {"retrieval": "par", "page_score": "max", "retrieval_min_tokens": 48},
                 "par-max, retrieving at least 48 long-term tokens (3 pages)"),
)


def arm_name(memory: str, retrieval: str) -> str:
    return memory if retrieval == "none" else f"{memory}+{retrieval}"


def select(arms: tuple, names, kind: str = "arms") -> tuple:
    """The items of ``arms`` (anything with a ``name``: arms, stream lengths) named in ``names`` (all for
    ``None``), in ``arms`` order; ``kind`` names them in the error."""
    if names is None:
        return arms
    known = {a.name for a in arms}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; expected some of {sorted(known)}")
    return tuple(a for a in arms if a.name in names)
