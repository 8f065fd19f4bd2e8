"""Configuration of one LiveVLM stream (memory policy, importance scores, VSB, PaR, decoding).

All sizes are in *tokens* of the language model unless the name says frames; all times
are stream seconds (the timestamps given to :meth:`LiveVLMStream.ingest`).
Values are validated on construction, so a bad parameter fails where it is set.
This module imports neither torch nor rclpy (the ROS parameter layer reads it).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError

#: Memory policies, each one class in :mod:`livevlm_ros.engine.policies` (registered by name).
#: ``full``: keep every token (vanilla video LLM, grows without bound).
#: ``sliding``: prefix (attention sinks) + the most recent ``budget_tokens`` (StreamingLLM).
#: ``random``: keep a uniformly random subset (the null baseline of the fidelity benchmark).
#: ``topk``: VSB's score, plain top-M without bucketing (the paper's ablation).
#: ``vsb``: Vision Sink Bucketing (LiveVLM).
#: ``rekv``: ReKV-style: a sliding window on the device, every older token offloaded to
#: host memory, the top frames retrieved per layer at question time.
MEMORY_POLICIES = ("full", "sliding", "random", "topk", "vsb", "rekv")

#: Retrieval policies at question time. ``none``: attend to all of memory.
#: ``par``: Position-agnostic KV Retrieval on pre-RoPE keys. ``par-pe``: the same page
#: selection scored with keys rotated at their original stream positions (the paper's ablation).
RETRIEVAL_POLICIES = ("none", "par", "par-pe")

#: What VSB's coverage buckets split. ``stream``: the original stream positions the long-term
#: memory spans (coverage of the whole stream). ``memory``: the compacted memory index (ablation).
VSB_BUCKETS = ("stream", "memory")
#: Observation window of the importance score: the clip's last frame, or the whole newest clip.
SCORE_WINDOWS = ("frame", "clip")
#: How the importance score aggregates attention heads.
SCORE_HEADS = ("mean", "max")
#: Unit of eviction: single tokens, or whole frames (caption phrases in a text proxy).
KEEP_UNITS = ("token", "frame")
#: How PaR scores a page: ``mean``: the pooled question query . the page's mean key (the paper);
#: ``max``: the page's best token, max over its tokens of the pooled query . key; ``attention``: the
#: attention mass (per-head softmax over the long-term tokens) the question's own tokens give the page;
#: ``contrast``: the page mean key against the question's pooled query minus the chat template's (the
#: template tokens around the question attend like any question does, so their share is position bias).
PAGE_SCORES = ("mean", "max", "attention", "contrast")

#: The allowed values of every choice field of :class:`EngineConfig` (one table for the engine,
#: the command-line options and the ROS parameter descriptors).
FIELD_CHOICES = {
    "memory": MEMORY_POLICIES,
    "retrieval": RETRIEVAL_POLICIES,
    "vsb_buckets": VSB_BUCKETS,
    "score_window": SCORE_WINDOWS,
    "score_heads": SCORE_HEADS,
    "keep_unit": KEEP_UNITS,
    "page_score": PAGE_SCORES,
}

#: PaR's floor (tokens): long-term memories up to this size are read whole. Page scores prefer old pages
#: (mean z-score +1.1..+1.3 in the oldest fifth of memory) and on 4-5-page memories the paper's ratio keeps 2,
#: so late events lost 8-18 points (docs/BENCHMARKS.md, fidelity); reading 1,024 tokens instead of 410 adds
#: ~600 tokens of attention per answer token. At the paper's M = 12,000 (4,800 retrieved)
#: and SmolVLM-256M's 7,202 (2,880) the ratio alone decides.
DEFAULT_RETRIEVAL_MIN_TOKENS = 1024
#: The paper's long-term budget M (tokens), used when ``budget_tokens`` is None and it fits.
REFERENCE_BUDGET_TOKENS = 12000
#: Positions kept free for the question (tokens) when checking that a budget fits the context.
QUESTION_RESERVE_TOKENS = 128
#: Largest answer a request may ask for (tokens).
MAX_NEW_TOKENS_LIMIT = 4096


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_choice(name: str, value: str, choices: tuple) -> None:
    _check(value in choices, f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one stream's memory, compression, retrieval and decoding.

    Attributes:
        clip_frames: frames prefilled together (the paper uses 32; smaller is fresher).
        memory: one of :data:`MEMORY_POLICIES`.
        retrieval: one of :data:`RETRIEVAL_POLICIES` (ignored by ``rekv``, which retrieves frames).
        budget_tokens: long-term memory budget M (tokens per layer). For ``sliding`` and
            ``rekv`` it is the size of the on-device recent window. ``None``: the paper's
            12,000, lowered to what fits the model's trained context (see ``LiveVLMStream.budget``).
        short_term_frames: W, the most recent frames kept uncompressed.
        observation_tokens: r, the newest tokens whose attention scores the cache (VSB/top-k);
            ``None``: all tokens of the observation window.
        score_window: the importance score's observation window: ``frame`` (the clip's last
            frame, the paper's choice) or ``clip`` (every token of the newest clip).
        score_heads: aggregation of the score over attention heads: ``mean`` or ``max``.
        score_decay: 0 scores tokens by the newest clip's attention only (the paper); d in (0, 1)
            accumulates importance over clips, S = d * S + s_new.
        select_per_head: keep a token set per KV head instead of one per layer.
        keep_unit: ``token`` or ``frame`` (whole frames kept or dropped, scored by their mean).
        vsb_buckets: one of :data:`VSB_BUCKETS`: what VSB's coverage buckets split.
        bucket_capacity: B, tokens each coverage bucket may hold in VSB's coverage phase.
        saliency_share: share of M kept by plain saliency (VSB phase 1), in [0, 1].
        page_size: C, consecutive long-term tokens per retrieval page.
        retrieval_ratio: share of long-term pages retrieved per layer, in (0, 1].
        page_score: one of :data:`PAGE_SCORES`: ``mean`` scores a page by its mean key (the paper),
            ``max`` by its best-matching token, so one relevant token is not averaged away by the
            unrelated tokens that compaction packed into the same page; ``attention`` by the attention
            mass the question's own tokens give its tokens (per-head softmax, pre-RoPE); ``contrast``
            by its mean key against the question's pooled query minus the template tokens' pooled query.
        retrieval_min_tokens: PaR retrieves at least this many long-term tokens per layer (whole pages;
            all of them when the long-term memory is smaller): a floor for short memories, where a
            ratio of a few pages loses what the answer needs while reading them all costs little.
            0: the ratio alone (the paper). Default :data:`DEFAULT_RETRIEVAL_MIN_TOKENS`.
        rekv_frames: frames retrieved per layer from host memory by ``rekv``.
        max_new_tokens: default answer length limit.
        max_question_chars: questions longer than this are rejected.
        system_prompt: optional system message placed in the prefix (``None``: model default).
        seed: seed of the ``random`` policy's choices.
    """

    clip_frames: int = 8
    memory: str = "vsb"
    retrieval: str = "par"
    budget_tokens: Optional[int] = None
    short_term_frames: int = 2
    observation_tokens: Optional[int] = None
    score_window: str = "frame"
    score_heads: str = "mean"
    score_decay: float = 0.0
    select_per_head: bool = False
    keep_unit: str = "token"
    vsb_buckets: str = "stream"
    bucket_capacity: int = 1
    saliency_share: float = 0.5
    page_size: int = 16
    retrieval_ratio: float = 0.4
    page_score: str = "mean"
    retrieval_min_tokens: int = DEFAULT_RETRIEVAL_MIN_TOKENS
    rekv_frames: int = 8
    max_new_tokens: int = 64
    max_question_chars: int = 2000
    system_prompt: Optional[str] = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name, choices in FIELD_CHOICES.items():
            _check_choice(name, getattr(self, name), choices)
        _check(1 <= self.clip_frames <= 1024, f"clip_frames must be in [1, 1024], got {self.clip_frames}")
        _check(
            self.budget_tokens is None or self.budget_tokens >= 1,
            f"budget_tokens must be None (auto) or >= 1, got {self.budget_tokens}",
        )
        _check(self.short_term_frames >= 0, f"short_term_frames must be >= 0, got {self.short_term_frames}")
        _check(
            self.observation_tokens is None or self.observation_tokens >= 1,
            f"observation_tokens must be None or >= 1, got {self.observation_tokens}",
        )
        _check(0.0 <= self.score_decay < 1.0, f"score_decay must be in [0, 1), got {self.score_decay}")
        _check(self.bucket_capacity >= 1, f"bucket_capacity must be >= 1, got {self.bucket_capacity}")
        _check(0.0 <= self.saliency_share <= 1.0, f"saliency_share must be in [0, 1], got {self.saliency_share}")
        _check(self.page_size >= 1, f"page_size must be >= 1, got {self.page_size}")
        _check(
            0.0 < self.retrieval_ratio <= 1.0, f"retrieval_ratio must be in (0, 1], got {self.retrieval_ratio}"
        )
        _check(self.retrieval_min_tokens >= 0, f"retrieval_min_tokens must be >= 0, got {self.retrieval_min_tokens}")
        _check(self.rekv_frames >= 1, f"rekv_frames must be >= 1, got {self.rekv_frames}")
        _check(
            1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT,
            f"max_new_tokens must be in [1, {MAX_NEW_TOKENS_LIMIT}], got {self.max_new_tokens}",
        )
        _check(self.max_question_chars >= 1, f"max_question_chars must be >= 1, got {self.max_question_chars}")
        _check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")

    def replace(self, **changes) -> "EngineConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def bounded(self) -> bool:
        """True unless the memory grows without bound (``full``)."""
        return self.memory != "full"


def field_descriptions() -> dict[str, str]:
    """``{field: description}`` of every EngineConfig field, from its docstring's "Attributes:" section.

    Shared by the command-line options and the ROS parameter descriptors, so each parameter is
    documented once, here.
    """
    docs: dict[str, list[str]] = {}
    current: Optional[list[str]] = None
    for line in (EngineConfig.__doc__ or "").split("Attributes:", 1)[-1].splitlines():
        match = re.match(r"^\s{8}(\w+)(?:\s*/\s*\w+)*:\s*(.*)$", line)
        if match:
            current = docs.setdefault(match.group(1), [match.group(2)])
        elif current is not None and line.strip():
            current.append(line.strip())
    return {
        name: re.sub(r"``|:\w+:`([^`]*)`", r"\1", " ".join(words)).replace("`", "")
        for name, words in docs.items()
    }
