"""Plain result records returned by the engine (no tensors inside, safe to log or serialise)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class EvidenceFrame:
    """A frame an answer drew on.

    Attributes:
        frame: frame index (since the last reset). time: its stream time (s).
        mass: the share of the last prompt token's attention (mean over heads and layers) on its tokens.
    """

    frame: int
    time: float
    mass: float


@dataclass
class AskResult:
    """One answered question.

    Attributes:
        answer: decoded answer text (special tokens stripped).
        ttft_s: seconds from the call to the first answer token (includes flushing pending frames).
        total_s: seconds for the whole call.
        frames_seen: frames ingested into this stream so far (compressed or not).
        span_start / span_end: stream-time range (s) of the memory the answer could attend to
            (after the time window and retrieval), ``None`` when no frame was visible.
        memory_tokens: tokens held in memory (per layer) when the question came.
        context_tokens: tokens the answer attended to (prefix + retrieved + short-term), mean over layers.
        pages_retrieved / pages_total: PaR pages kept / available, mean over layers (0 without PaR).
        new_tokens: answer tokens generated.
        stop_reason: ``"eos"``, ``"length"`` or ``"cancelled"``.
        token_ids: the answer's token ids (end-of-sequence excluded).
        evidence: the frames the answer drew on most, by descending attention mass (empty unless asked
            for with ``evidence=N``); see :class:`EvidenceFrame`.
    """

    answer: str
    ttft_s: float
    total_s: float
    frames_seen: int
    span_start: Optional[float]
    span_end: Optional[float]
    memory_tokens: int
    context_tokens: float
    pages_retrieved: float
    pages_total: float
    new_tokens: int
    stop_reason: str
    token_ids: list = field(default_factory=list)
    evidence: list = field(default_factory=list)

    @property
    def cancelled(self) -> bool:
        return self.stop_reason == "cancelled"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ConditionResult:
    """One evaluation of a yes/no condition over the memory (nothing is decoded).

    Attributes:
        p_yes: probability of "yes" against "no" for the answer's first token, in [0, 1]
            (softmax over the two, each the log-sum-exp of the tokenizer's spellings of the word).
        yes_logit / no_logit: those two log-sum-exp logits.
        elapsed_s: seconds for the evaluation (question prefill included).
        frames_seen, span_start, span_end, memory_tokens: as in :class:`AskResult`.
        evidence: the frames the evaluation drew on most (see :class:`EvidenceFrame`).
    """

    p_yes: float
    yes_logit: float
    no_logit: float
    elapsed_s: float
    frames_seen: int
    span_start: Optional[float]
    span_end: Optional[float]
    memory_tokens: int
    evidence: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class MemoryStats:
    """State of one stream's memory.

    Attributes:
        tokens: tokens per layer held on the device (prefix + long-term + short-term).
        budget: long-term budget M (tokens), or ``None`` for the unbounded ``full`` policy.
        prefix_tokens / long_term_tokens / short_term_tokens: the three segments.
        frames_ingested: frames prefilled into the model since the last reset.
        frames_pending: frames buffered for the next clip, not yet prefilled.
        oldest_time / newest_time: stream-time range (s) of the frames with tokens in memory.
        max_position_id: largest position id used so far (prefill or decode), compacted.
        max_position_embeddings: the language model's trained context length.
        device_kv_bytes: bytes of key/value tensors on the model's device.
        host_kv_bytes: bytes of key/value tensors offloaded to host memory (``rekv`` only).
        coverage: 10 shares (sum 1, oldest first) of the long-term tokens whose frame time falls in
            each tenth of the stream time ingested so far (all zeros before the first compression
            target exists); how evenly memory spans the stream.
    """

    tokens: int
    budget: Optional[int]
    prefix_tokens: int
    long_term_tokens: int
    short_term_tokens: int
    frames_ingested: int
    frames_pending: int
    oldest_time: Optional[float]
    newest_time: Optional[float]
    max_position_id: int
    max_position_embeddings: int
    device_kv_bytes: int
    host_kv_bytes: int
    coverage: list = field(default_factory=lambda: [0.0] * 10)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Timeline:
    """Where a stream's memory sits in stream time (for the memory view); plain lists, JSON-able.

    Attributes:
        first_time / last_time: stream time (s) of the first and newest ingested frames (None: none yet).
        token_times: stream time (s) of every frame token held in memory, all layers pooled.
        layers: the number of layers pooled (divide counts by it for tokens per layer).
        short_term_start: stream time (s) of the first short-term frame, or None.
        retrieved_times: times of the tokens the last question attended to (all layers), or None.
        budget_tokens: long-term budget (tokens per layer), None for the unbounded ``full`` memory.
    """

    first_time: Optional[float]
    last_time: Optional[float]
    token_times: list
    layers: int
    short_term_start: Optional[float]
    retrieved_times: Optional[list]
    budget_tokens: Optional[int]
