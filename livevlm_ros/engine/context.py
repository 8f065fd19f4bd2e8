"""What each layer attends to when answering: prefix + retrieved long-term memory + short-term memory.

:class:`ContextBuilder` is created once per question. Its sizes (:class:`ContextPlan`) are host
arithmetic, so every layer's context has the same number of slots and nothing is read back from
the device before the first answer token. Per layer it picks the long-term tokens (PaR pages, or
all of them), restricts everything to the question's time window, and, for ReKV-style memories,
fetches the best offloaded frames from host RAM (a host read that design needs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from . import retrieval
from .answer_cache import Context
from .config import EngineConfig
from .decoder import LayerInput, RotaryTable
from .kv_memory import KVMemory
from .timing import NO_TIMER


@dataclass(frozen=True)
class TimeWindow:
    """Stream-time window ``[since, until]`` (s) a question may use; ``None`` ends are open."""

    since: Optional[float] = None
    until: Optional[float] = None

    @property
    def open(self) -> bool:
        return self.since is None and self.until is None

    def contains(self, stamps: torch.Tensor) -> torch.Tensor:
        """Mask of ``stamps`` (float64, any shape) inside the window; nan (prefix text) is outside."""
        low = -math.inf if self.since is None else self.since
        high = math.inf if self.until is None else self.until
        return (stamps >= low) & (stamps <= high)


@dataclass(frozen=True)
class ContextPlan:
    """Host-side sizes of one question's per-layer context (tokens; the same in every layer).

    Attributes:
        prefix / long_term_end / total: memory boundaries (prefix, start of short-term, length).
        pages_total / pages_kept: PaR pages available / retrieved per layer (0 / 0 without PaR).
        host_slots: slots for frames fetched from host memory (ReKV-style), padded.
    """

    prefix: int
    long_term_end: int
    total: int
    page_size: int
    pages_total: int
    pages_kept: int
    host_slots: int

    @property
    def long_term_slots(self) -> int:
        if self.pages_total:
            return self.pages_kept * self.page_size
        return self.long_term_end - self.prefix

    @property
    def slots(self) -> int:
        return self.total - (self.long_term_end - self.prefix) + self.long_term_slots + self.host_slots

    @property
    def exact(self) -> bool:
        """Every slot always holds a token (no short last page, no host padding): positions are ``0..K-1``."""
        short_page = self.pages_total and (self.long_term_end - self.prefix) % self.page_size
        return not short_page and not self.host_slots


def plan_context(memory: KVMemory, config: EngineConfig, long_term_end: int, retrieves: bool,
                 host_slots: int) -> ContextPlan:
    """Sizes of the context of a question asked now."""
    long_term = long_term_end - memory.prefix_len
    pages = math.ceil(long_term / config.page_size) if retrieves and long_term > 0 else 0
    floor = math.ceil(config.retrieval_min_tokens / config.page_size)
    kept = min(pages, max(1, floor, math.ceil(config.retrieval_ratio * pages))) if pages else 0
    return ContextPlan(memory.prefix_len, long_term_end, memory.length, config.page_size, pages, kept, host_slots)


class ContextBuilder:
    """Builds each layer's :class:`Context` during the question's pass.

    Args:
        plan: the sizes (see :func:`plan_context`).
        page_means: ``[L, kv_heads, pages, d]`` float32 PaR page representatives, or None without PaR.
        own: ``[q]`` bool: the question's own tokens (PaR pools over them).
        question_positions: ``[q]`` int64 stream positions of the question tokens (PaR-PE rotates at them).
        host_frames: ReKV-style only: slots of the offloaded frames inside the window.
        timer: a :class:`~livevlm_ros.engine.timing.StageTimer` (section ``retrieve``), or none.
        record: keep each layer's PaR page ``scores`` and ``chosen`` pages in :attr:`records` (device tensors).
    """

    def __init__(self, memory: KVMemory, config: EngineConfig, rotary: RotaryTable, plan: ContextPlan,
                 window: TimeWindow, *, page_means: Optional[torch.Tensor], own: torch.Tensor,
                 question_positions: torch.Tensor, host_frames: Optional[list] = None, timer=NO_TIMER,
                 record: bool = False) -> None:
        self.memory = memory
        self.config = config
        self.rotary = rotary
        self.plan = plan
        self.window = window
        self.page_means = page_means
        self.own = own
        self.weights = retrieval.question_weights(own, memory.dtype)
        self.template_weights = (retrieval.question_weights(~own, memory.dtype)
                                 if config.page_score == "contrast" else None)
        self.question_positions = question_positions
        self.host_frames = host_frames or []
        self.timer = timer
        self.records: Optional[list] = [] if record else None
        device = memory.device
        self.visible = None if window.open else window.contains(memory.timestamp) | (memory.frame_index < 0)
        self._prefix = torch.arange(plan.prefix, device=device)
        self._short = torch.arange(plan.long_term_end, plan.total, device=device)
        self._page_offsets = torch.arange(config.page_size, device=device)
        self._host_means = memory.host.frame_means() if self.host_frames else None

    def visible_frame_tokens(self) -> torch.Tensor:
        """``[1]`` int64 device count of frame tokens the window leaves visible (device + host)."""
        memory = self.memory
        host = sum(memory.host.frame_end[s] - memory.host.frame_start[s] for s in self.host_frames)
        if self.visible is None:
            device_count = torch.tensor(memory.length - memory.prefix_len, device=memory.device)
        else:
            device_count = (self.visible[0, 0] & (memory.frame_index[0, 0] >= 0)).sum()
        return (device_count + host).reshape(1)

    def __call__(self, layer: int, inp: LayerInput) -> Context:
        with self.timer.section("retrieve"):
            return self._build(layer, inp)

    def _build(self, layer: int, inp: LayerInput) -> Context:
        """One layer's context. Index tensors are ``[K]`` when every KV head keeps the same tokens (one set per
        layer), ``[kv_heads, K]`` with ``select_per_head``; gathers follow suit."""
        memory, plan = self.memory, self.plan
        per_head = self.config.select_per_head
        long_term, exists = self._long_term(layer, inp.queries)
        lead = long_term.shape[:-1]
        index = torch.cat([self._prefix.expand(*lead, -1), long_term, self._short.expand(*lead, -1)], dim=-1)
        if per_head:
            gather = index[..., None].expand(-1, -1, memory.head_dim)
            keys, values = memory.keys[layer].gather(1, gather), memory.values[layer].gather(1, gather)
            times, frames = memory.timestamp[layer].gather(1, index), memory.frame_index[layer].gather(1, index)
        else:
            keys, values = memory.keys[layer].index_select(1, index), memory.values[layer].index_select(1, index)
            times = memory.timestamp[layer, 0].index_select(0, index)
            frames = memory.frame_index[layer, 0].index_select(0, index)
        valid = None
        if exists is not None:
            valid = torch.ones(index.shape, dtype=torch.bool, device=memory.device)
            valid[..., plan.prefix:plan.prefix + exists.shape[-1]] = exists
        if self.visible is not None:
            visible = (self.visible[layer].gather(1, index) if per_head
                       else self.visible[layer, 0].index_select(0, index))
            valid = visible if valid is None else valid & visible
        dense = valid is None and not plan.host_slots
        if valid is None:
            valid = torch.ones(index.shape, dtype=torch.bool, device=memory.device)
        if plan.host_slots:
            keys, values, valid, times, frames = self._with_host_frames(layer, inp.queries, keys, values, valid,
                                                                        times, frames)
        return Context(keys, values, valid, times, frames, dense=dense)

    def _long_term(self, layer: int, queries: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Memory indices (``[slots]`` or ``[kv_heads, slots]``) of the long-term tokens this layer uses, and which
        of them exist (``None``: all)."""
        memory, plan, cfg = self.memory, self.plan, self.config
        heads, device = memory.num_kv_heads, memory.device
        n = plan.long_term_end - plan.prefix
        if not plan.pages_total:
            offsets = torch.arange(plan.prefix, plan.long_term_end, device=device)
            return (offsets.expand(heads, -1) if cfg.select_per_head else offsets), None
        if cfg.retrieval == "par-pe":  # ablation: queries rotated at the question's stream positions
            queries = self.rotary.rotate_at(queries, self.question_positions.expand(queries.shape[0], -1))
        pooled = retrieval.pooled_query(queries, heads, self.weights)
        if cfg.page_score == "contrast":  # linear: q_question . m - q_template . m = (q_question - q_template) . m
            pooled = pooled - retrieval.pooled_query(queries, heads, self.template_weights)
        region = slice(plan.prefix, plan.long_term_end)
        lanes = None
        if self.visible is not None:
            lanes = self.visible[layer, :, region] if cfg.select_per_head else self.visible[layer, 0, region]
        if cfg.page_score in ("max", "attention"):
            keys = memory.keys[layer][:, region]
            if cfg.retrieval == "par-pe":
                keys = self.rotary.rotate_at(keys, memory.position[layer][:, region])
            if cfg.page_score == "max":
                scores = retrieval.page_max_scores(pooled, keys, cfg.page_size, cfg.select_per_head, lanes)
            else:
                scores = retrieval.page_attention_scores(queries, keys, cfg.page_size, self.weights,
                                                         cfg.select_per_head, lanes)
        else:
            scores = retrieval.score_groups(pooled, self.page_means[layer], per_head=cfg.select_per_head)
            if lanes is not None:
                scores = scores.masked_fill(~retrieval.pages_with_visible_tokens(lanes, cfg.page_size), -torch.inf)
        chosen = retrieval.top_groups(scores, count=plan.pages_kept)
        if self.records is not None:
            self.records.append({"scores": scores, "chosen": chosen})
        offsets, exists = retrieval.tokens_of_pages(chosen, cfg.page_size, n, self._page_offsets)
        return plan.prefix + offsets, (None if plan.exact else exists)

    def _with_host_frames(self, layer, queries, keys, values, valid, times, frames):
        """Insert the best offloaded frames (ReKV-style) after the prefix, padded to ``plan.host_slots``."""
        memory, plan = self.memory, self.plan
        heads, device = memory.num_kv_heads, memory.device
        slots, lead = plan.host_slots, valid.shape[:-1]
        host_keys = keys.new_zeros(heads, slots, memory.head_dim)
        host_values = torch.zeros_like(host_keys)
        host_valid = torch.zeros(*lead, slots, dtype=torch.bool, device=device)
        host_times = torch.full((*lead, slots), torch.nan, dtype=torch.float64, device=device)
        host_frames = torch.full((*lead, slots), -1, dtype=torch.long, device=device)
        if self.host_frames:
            means = self._host_means[layer][:, self.host_frames]
            scores = retrieval.score_groups(retrieval.pooled_query(queries, heads, self.weights), means)
            best = retrieval.top_groups(scores, count=min(self.config.rekv_frames, len(self.host_frames)))
            chosen = [self.host_frames[i] for i in best.tolist()]  # host read: the frames live in host RAM
            k, v, t = memory.host.gather(layer, chosen)
            m = k.shape[1]
            host_keys[:, :m], host_values[:, :m], host_valid[..., :m], host_times[..., :m] = k, v, True, t
            ids = [memory.host.frame_ids[c] for c in chosen for _ in range(memory.host.frame_end[c]
                                                                          - memory.host.frame_start[c])]
            host_frames[..., :m] = torch.tensor(ids, device=device)
        p = plan.prefix
        return (torch.cat([keys[:, :p], host_keys, keys[:, p:]], dim=1),
                torch.cat([values[:, :p], host_values, values[:, p:]], dim=1),
                torch.cat([valid[..., :p], host_valid, valid[..., p:]], dim=-1),
                torch.cat([times[..., :p], host_times, times[..., p:]], dim=-1),
                torch.cat([frames[..., :p], host_frames, frames[..., p:]], dim=-1))
