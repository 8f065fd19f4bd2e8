"""Configuration of one LiveVLM stream (memory policy, VSB, PaR, decoding).

All sizes are in *tokens* of the language model unless the name says frames; all times
are stream seconds (the timestamps given to :meth:`LiveVLMStream.ingest`).
Values are validated on construction, so a bad parameter fails where it is set.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError

#: Memory policies. ``full``: keep every token (vanilla video LLM, grows without bound).
#: ``sliding``: prefix (attention sinks) + the most recent ``budget_tokens`` (StreamingLLM).
#: ``topk``: VSB's score, plain top-M without bucketing (the paper's ablation).
#: ``vsb``: Vision Sink Bucketing (LiveVLM).
#: ``rekv``: ReKV-style: a sliding window on the device, every older token offloaded to
#: host memory, the top frames retrieved per layer at question time.
MEMORY_POLICIES = ("full", "sliding", "topk", "vsb", "rekv")

#: Retrieval policies at question time. ``none``: attend to all of memory.
#: ``par``: Position-agnostic KV Retrieval on pre-RoPE keys. ``par-pe``: the same page
#: selection scored with RoPE-rotated keys and queries (the paper's ablation).
RETRIEVAL_POLICIES = ("none", "par", "par-pe")


#: The paper's long-term budget M (tokens), used when ``budget_tokens`` is None and it fits.
REFERENCE_BUDGET_TOKENS = 12000
#: Positions kept free for the question (tokens) when checking that a budget fits the context.
QUESTION_RESERVE_TOKENS = 128


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


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
        observation_tokens: r, the newest vision tokens whose attention scores the cache
            (VSB/top-k). ``None`` means the tokens of the clip's last frame.
        bucket_capacity: B, tokens each positional bucket may hold in VSB's coverage phase.
        saliency_share: share of M kept by plain saliency (VSB phase 1), in [0, 1].
        page_size: C, consecutive long-term tokens per retrieval page.
        retrieval_ratio: share of long-term pages retrieved per layer, in (0, 1].
        rekv_frames: frames retrieved per layer from host memory by ``rekv``.
        max_new_tokens: default answer length limit.
        max_question_chars: questions longer than this are rejected.
        system_prompt: optional system message placed in the prefix (``None``: model default).
    """

    clip_frames: int = 8
    memory: str = "vsb"
    retrieval: str = "par"
    budget_tokens: Optional[int] = None
    short_term_frames: int = 2
    observation_tokens: Optional[int] = None
    bucket_capacity: int = 1
    saliency_share: float = 0.5
    page_size: int = 16
    retrieval_ratio: float = 0.4
    rekv_frames: int = 8
    max_new_tokens: int = 64
    max_question_chars: int = 2000
    system_prompt: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.memory in MEMORY_POLICIES, f"memory must be one of {MEMORY_POLICIES}, got {self.memory!r}")
        _check(
            self.retrieval in RETRIEVAL_POLICIES,
            f"retrieval must be one of {RETRIEVAL_POLICIES}, got {self.retrieval!r}",
        )
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
        _check(self.bucket_capacity >= 1, f"bucket_capacity must be >= 1, got {self.bucket_capacity}")
        _check(0.0 <= self.saliency_share <= 1.0, f"saliency_share must be in [0, 1], got {self.saliency_share}")
        _check(self.page_size >= 1, f"page_size must be >= 1, got {self.page_size}")
        _check(
            0.0 < self.retrieval_ratio <= 1.0, f"retrieval_ratio must be in (0, 1], got {self.retrieval_ratio}"
        )
        _check(self.rekv_frames >= 1, f"rekv_frames must be >= 1, got {self.rekv_frames}")
        _check(1 <= self.max_new_tokens <= 4096, f"max_new_tokens must be in [1, 4096], got {self.max_new_tokens}")
        _check(self.max_question_chars >= 1, f"max_question_chars must be >= 1, got {self.max_question_chars}")

    def replace(self, **changes) -> "EngineConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


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
