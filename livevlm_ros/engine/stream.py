"""LiveVLM on one video stream: encode frames as they arrive, answer questions from memory.

Encoding phase (:meth:`LiveVLMStream.ingest`): frames are buffered into clips; each clip goes
through the vision tower and is prefilled on top of the memory (it attends to all of memory
and causally to itself). Then the memory policy keeps the long-term memory within budget
(VSB by default) using the attention the clip's newest tokens paid to it.

Response phase (:meth:`LiveVLMStream.ask`): the question is prefilled layer by layer; in each
layer the retrieval policy (PaR by default) picks long-term pages with the question's
pre-RoPE queries; [prefix + retrieved pages + short-term memory + question] are rotated with
compacted positions and attended; then the answer is decoded. The memory is only read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from . import compression, retrieval
from .answer_cache import AnswerCache
from .config import QUESTION_RESERVE_TOKENS, REFERENCE_BUDGET_TOKENS, EngineConfig
from .decoder import RotaryTable, attend, finish, logits_of, observation_scores, project
from .errors import ConfigError, EmptyMemoryError, InvalidFrameError, InvalidQuestionError, TimestampError
from .kv_memory import KVMemory
from .models.base import VideoLLM, check_frame
from .results import AskResult, MemoryStats
from .text_stream import IncrementalDecoder


@dataclass
class _Context:
    """What one layer attends to when answering: pre-RoPE keys, values and their stream times."""

    keys: torch.Tensor  # [kv_heads, C, d]
    values: torch.Tensor  # [kv_heads, C, d]
    times: torch.Tensor  # [C] float64, nan for prefix text
    pages_retrieved: int = 0
    pages_total: int = 0


@dataclass
class _AskStats:
    context_tokens: list = field(default_factory=list)
    pages_retrieved: list = field(default_factory=list)
    pages_total: list = field(default_factory=list)
    span_start: float = math.inf
    span_end: float = -math.inf

    def add(self, context: _Context) -> None:
        self.context_tokens.append(context.keys.shape[1])
        self.pages_retrieved.append(context.pages_retrieved)
        self.pages_total.append(context.pages_total)
        frame_times = context.times[~torch.isnan(context.times)]
        if frame_times.numel():
            self.span_start = min(self.span_start, float(frame_times.min()))
            self.span_end = max(self.span_end, float(frame_times.max()))


@dataclass(frozen=True)
class _TimeWindow:
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


def _mean(values: list) -> float:
    return float(sum(values) / len(values)) if values else 0.0


class LiveVLMStream:
    """Streaming memory and question answering for one camera stream.

    Not thread-safe: one thread calls it. Several streams may share one :class:`VideoLLM`
    (the model is only read), called one at a time.

    Args:
        model: a loaded video LLM (see :func:`load_video_llm`).
        config: memory, compression, retrieval and decoding parameters.
    """

    def __init__(self, model: VideoLLM, config: Optional[EngineConfig] = None) -> None:
        self.model = model
        self.config = config or EngineConfig()
        self._rotary = RotaryTable(model.rotary_emb, model.device, model.dtype)
        self._scale = model.layers[0].self_attn.scaling
        self._memory = self._new_memory(model.device)
        self._host = self._new_memory(torch.device("cpu")) if self.config.memory == "rekv" else None
        self._pending: list[tuple[np.ndarray, float]] = []
        self._frames_ingested = 0
        self._first_time: Optional[float] = None
        self._last_time: Optional[float] = None
        with torch.inference_mode():
            self._write_prefix()
        self.budget = self._resolve_budget()

    def _resolve_budget(self) -> int:
        """Long-term budget M (tokens) such that no position ever passes the model's trained context.

        Positions peak either while a clip is prefilled on a full memory,
        prefix + M + (short-term + clip frames) x tokens/frame, or while answering,
        prefix + M + short-term (+ ReKV's retrieved frames) + question reserve + max_new_tokens.
        """
        cfg, model = self.config, self.model
        per_frame, prefix = model.max_tokens_per_frame, self._memory.prefix_len
        ingest_peak = prefix + (cfg.short_term_frames + cfg.clip_frames) * per_frame
        answer_peak = prefix + cfg.short_term_frames * per_frame + QUESTION_RESERVE_TOKENS + cfg.max_new_tokens
        if cfg.memory == "rekv":
            answer_peak += cfg.rekv_frames * per_frame
        room = model.max_position_embeddings - max(ingest_peak, answer_peak)
        if cfg.memory == "full":
            return cfg.budget_tokens or REFERENCE_BUDGET_TOKENS  # unused: full memory never compresses
        wanted = cfg.budget_tokens or min(REFERENCE_BUDGET_TOKENS, room)
        if wanted < 1 or wanted > room:
            raise ConfigError(
                f"budget_tokens={cfg.budget_tokens or 'auto'} does not fit {model.name}'s trained context of "
                f"{model.max_position_embeddings} positions: besides the budget, prefilling needs {ingest_peak} "
                f"(prefix + (short_term_frames + clip_frames) x {per_frame} tokens/frame) and answering "
                f"{answer_peak} (prefix, short-term, question reserve, max_new_tokens); at most {max(room, 0)} "
                "long-term tokens fit. Lower the budget, clip_frames, short_term_frames or max_new_tokens."
            )
        return wanted

    def _new_memory(self, device: torch.device) -> KVMemory:
        m = self.model
        return KVMemory(m.num_layers, m.num_kv_heads, m.head_dim, device=device, dtype=m.dtype)

    # ================================================================== ingest
    def ingest(self, frame: np.ndarray, timestamp: float) -> None:
        """Add one frame; prefills a clip once ``clip_frames`` frames are buffered.

        Args:
            frame: RGB ``uint8`` ``(H, W, 3)``; copied, so the caller may reuse its buffer.
            timestamp: stream time (s), finite, not earlier than the previous frame's.

        Raises:
            InvalidFrameError, TimestampError: memory and buffer unchanged.
        """
        check_frame(frame)
        self._buffer(frame.copy(), timestamp)

    def ingest_embeddings(self, embeds: torch.Tensor, timestamp: float) -> None:
        """Add one "frame" given directly as language-model input embeddings ``[n, hidden]``.

        For proxies and tests that bypass the vision tower (e.g. a frame made of caption tokens).
        It is buffered, prefilled and compressed exactly like an image frame.
        """
        if embeds.ndim != 2 or embeds.shape[1] != self.model.hidden_size or embeds.shape[0] == 0:
            raise InvalidFrameError(
                f"embeddings must have shape [n > 0, {self.model.hidden_size}], got {tuple(embeds.shape)}"
            )
        self._buffer(embeds.detach().to(device=self.model.device, dtype=self.model.dtype), timestamp)

    def _buffer(self, item, timestamp: float) -> None:
        self._check_timestamp(timestamp)
        self._pending.append((item, float(timestamp)))
        if self._first_time is None:
            self._first_time = float(timestamp)
        self._last_time = float(timestamp)
        if len(self._pending) >= self.config.clip_frames:
            self.flush()

    def _check_timestamp(self, timestamp: float) -> None:
        if not isinstance(timestamp, (int, float, np.floating, np.integer)) or not math.isfinite(timestamp):
            raise TimestampError(f"timestamp must be a finite number of seconds, got {timestamp!r}")
        if self._last_time is not None and timestamp < self._last_time:
            raise TimestampError(
                f"timestamp {timestamp:.6f} s is earlier than the previous frame's {self._last_time:.6f} s; "
                "reset the stream to start over"
            )

    def flush(self) -> int:
        """Prefill the buffered frames now (a partial clip). Returns how many frames were prefilled."""
        if not self._pending:
            return 0
        frames = [f for f, _ in self._pending]
        times = [t for _, t in self._pending]
        self._pending = []  # a failing model call drops this clip rather than retrying it forever
        with torch.inference_mode():
            self._prefill_clip(frames, times)
        return len(frames)

    def _prefill_clip(self, frames: list[np.ndarray], times: list[float]) -> None:
        frame_embeds = self._encode(frames, [t - self._first_time for t in times])
        counts = torch.tensor([e.shape[0] for e in frame_embeds])
        first_index = self._frames_ingested
        frame_index = torch.repeat_interleave(torch.arange(first_index, first_index + len(frames)), counts)
        stamps = torch.repeat_interleave(torch.tensor(times, dtype=torch.float64), counts)
        embeds = torch.cat(frame_embeds)
        observe = self.config.observation_tokens or int(counts[-1])
        # Scores are only needed when this clip can push the long-term memory over budget.
        over_budget = self._memory.length + embeds.shape[0] - self._memory.prefix_len > self.budget
        needs_scores = self.config.memory in ("vsb", "topk") and over_budget
        scores = self._prefill(embeds, frame_index, stamps, min(observe, embeds.shape[0]) if needs_scores else 0)
        self._frames_ingested += len(frames)
        self._compress(scores)

    def _encode(self, items: list, relative_times: list[float]) -> list[torch.Tensor]:
        """Embeddings ``[n_i, hidden]`` of each buffered item: images go through the vision tower in one batch."""
        images = [i for i, item in enumerate(items) if isinstance(item, np.ndarray)]
        result = list(items)
        if images:
            encoded = self.model.encode_frames([items[i] for i in images], [relative_times[i] for i in images])
            for i, embeds in zip(images, encoded):
                result[i] = embeds
        return result

    def _write_prefix(self) -> None:
        embeds = self.model.embed_text(self.model.prefix_text(self.config.system_prompt))
        keys, values = self._forward_new_tokens(embeds, observe=0)[:2]
        self._memory.append_prefix(keys, values)

    def _prefill(self, embeds: torch.Tensor, frame_index: torch.Tensor, stamps: torch.Tensor,
                 observe: int) -> Optional[torch.Tensor]:
        """Run ``embeds`` ``[n, hidden]`` over the memory and append their pre-RoPE KV.

        Returns ``[layers, T]`` observation scores of every memory token (after the append), or None.
        """
        keys, values, scores = self._forward_new_tokens(embeds, observe)
        self._memory.append(keys, values, frame_index, stamps)
        return scores

    def _forward_new_tokens(self, embeds: torch.Tensor, observe: int):
        """All layers over the memory for ``n`` new tokens at positions ``T .. T+n-1``.

        Returns pre-RoPE ``keys``/``values`` ``[layers, kv_heads, n, d]`` and, if ``observe > 0``,
        ``[layers, T+n]`` scores from the last ``observe`` tokens' attention.
        """
        memory = self._memory
        start = memory.length
        hidden = embeds
        new_keys, new_values, scores = [], [], []
        last = len(self.model.layers) - 1
        for i, layer in enumerate(self.model.layers):
            inp = project(layer, hidden)
            keys = torch.cat([self._rotary.rotate(memory.keys[i], 0), self._rotary.rotate(inp.keys, start)], dim=1)
            values = torch.cat([memory.values[i], inp.values], dim=1)
            queries = self._rotary.rotate(inp.queries, start)
            if observe:
                scores.append(observation_scores(queries[:, -observe:], keys, self._scale))
            new_keys.append(inp.keys)
            new_values.append(inp.values)
            if i < last:  # the last layer's output is not needed while encoding
                hidden = finish(layer, inp.residual, attend(queries, keys, values, self._scale))
        return torch.stack(new_keys), torch.stack(new_values), (torch.stack(scores) if observe else None)

    # ================================================================== memory policy
    def _short_term_start(self) -> int:
        first_short_term = self._frames_ingested - self.config.short_term_frames
        return self._memory.short_term_start(first_short_term)

    def _compress(self, scores: Optional[torch.Tensor]) -> None:
        cfg, memory = self.config, self._memory
        start, end = memory.prefix_len, self._short_term_start()
        length = end - start
        if cfg.memory == "full" or length <= self.budget:
            return
        if cfg.memory in ("sliding", "rekv"):
            if self._host is not None:
                evicted = memory.slice_tokens(start, end - self.budget)
                self._host.append(*(t.to("cpu") for t in evicted))
            keep = compression.keep_recent(memory.num_layers, length, self.budget, memory.device)
        elif cfg.memory == "topk":
            keep = compression.keep_top_k(scores[:, start:end], self.budget)
        else:
            keep = compression.keep_vision_sink_buckets(
                scores[:, start:end], self.budget, cfg.bucket_capacity, cfg.saliency_share
            )
        memory.keep(start, end, keep)

    # ================================================================== ask
    def ask(
        self,
        question: str,
        *,
        max_new_tokens: Optional[int] = None,
        since: Optional[float] = None,
        until: Optional[float] = None,
        on_token: Optional[Callable[[str], None]] = None,
        should_stop: Optional[Callable[[], bool]] = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: Optional[int] = None,
    ) -> AskResult:
        """Answer ``question`` from memory; the memory is left exactly as it was.

        Args:
            since / until: optional stream-time window (s); only memory from frames stamped in
                ``[since, until]`` may be used (the prefix always is).
            on_token: called once per generated token with the complete characters it formed
                (``""`` while it completes none: feedback keeps flowing), and once more for the
                EOS token when the answer ends in bytes that never formed a character; the pieces
                add up to ``answer`` (but for such bytes when the answer is cancelled).
            should_stop: polled before each token; returning True ends the answer (``"cancelled"``).
            do_sample / temperature / top_p / seed: sampling instead of greedy decoding.

        Raises:
            InvalidQuestionError: empty or too long question, bad window or sampling values.
            EmptyMemoryError: no frame yet, or none inside the window.
        """
        started = time.perf_counter()
        max_new = self._validate_question(question, max_new_tokens, since, until, temperature, top_p)
        with torch.inference_mode():
            cache, logits, stats = self._start_answer(question, since, until, max_new)
            return self._decode(cache, logits, stats, max_new, started, on_token, should_stop,
                                self._sampler(do_sample, temperature, top_p, seed))

    def first_token_logits(self, question: str, *, since: Optional[float] = None,
                           until: Optional[float] = None) -> torch.Tensor:
        """``[vocab]`` float32 logits of the answer's first token, through the same path as :meth:`ask`.

        For fidelity checks (against ``model.generate``, or between memory policies).
        """
        self._validate_question(question, None, since, until, 1.0, 1.0)
        with torch.inference_mode():
            return self._start_answer(question, since, until, max_new=1)[1]

    def _start_answer(self, question: str, since: Optional[float], until: Optional[float], max_new: int):
        """Flush pending frames, then prefill the question: (answer cache, first logits, stats)."""
        self.flush()
        if self._frames_ingested == 0:
            raise EmptyMemoryError("no frame has been ingested yet: nothing to answer about")
        return self._prefill_question(question, _TimeWindow(since, until), max_new)

    def _validate_question(self, question, max_new_tokens, since, until, temperature, top_p) -> int:
        if not isinstance(question, str) or not question.strip():
            raise InvalidQuestionError("the question is empty")
        if len(question) > self.config.max_question_chars:
            raise InvalidQuestionError(
                f"the question has {len(question)} characters; at most {self.config.max_question_chars} are accepted"
            )
        for name, value in (("since", since), ("until", until)):
            if value is not None and not math.isfinite(value):
                raise InvalidQuestionError(f"{name} must be a finite time in seconds, got {value!r}")
        if since is not None and until is not None and since > until:
            raise InvalidQuestionError(f"time window is inverted: since {since} > until {until}")
        max_new = self.config.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if not 1 <= max_new <= 4096:
            raise InvalidQuestionError(f"max_new_tokens must be in [1, 4096], got {max_new_tokens}")
        if temperature <= 0 or not 0 < top_p <= 1:
            raise InvalidQuestionError(f"need temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        return max_new

    def _visible_tokens(self, window: _TimeWindow) -> Optional[torch.Tensor]:
        """``[layers, T]`` mask of memory tokens inside the window (prefix always), or None for no window.

        Raises:
            EmptyMemoryError: no frame, on the device or offloaded, lies inside the window.
        """
        if window.open:
            return None
        frame_tokens = self._memory.frame_index >= 0
        inside = window.contains(self._memory.timestamp) & frame_tokens
        offloaded = self._host is not None and bool(window.contains(self._host.timestamp).any())
        if not bool(inside.any()) and not offloaded:
            raise EmptyMemoryError(f"no frame in memory lies in the time window [{window.since}, {window.until}] s")
        return inside | ~frame_tokens

    def _prefill_question(self, question: str, window: _TimeWindow, max_new: int):
        visible = self._visible_tokens(window)
        embeds = self.model.question_embeds(question, self.config.system_prompt)
        self._check_answer_fits(embeds.shape[0], max_new)
        cache = AnswerCache(self.model.num_layers)
        stats = _AskStats()
        lt_end = self._short_term_start()
        hidden = embeds
        for i, layer in enumerate(self.model.layers):
            inp = project(layer, hidden)
            context = self._layer_context(i, inp.queries, window, None if visible is None else visible[i], lt_end)
            stats.add(context)
            n_context = context.keys.shape[1]
            cache.start_layer(i, self._rotary.rotate(context.keys, 0), context.values,
                              room=embeds.shape[0] + max_new)
            cache.append(i, self._rotary.rotate(inp.keys, n_context), inp.values)
            queries = self._rotary.rotate(inp.queries, n_context)
            hidden = finish(layer, inp.residual, attend(queries, cache.keys(i), cache.values(i), self._scale))
        return cache, logits_of(self.model.final_norm, self.model.lm_head, hidden), stats

    def _check_answer_fits(self, question_tokens: int, max_new: int) -> None:
        """Raise InvalidQuestionError if memory + question + answer could pass the trained context."""
        if self.config.memory == "full":
            return  # the unbounded baseline: positions grow with the stream by design
        context = self._memory.length
        if self._host is not None:
            context += self.config.rekv_frames * self.model.max_tokens_per_frame
        limit = self.model.max_position_embeddings
        if context + question_tokens + max_new > limit:
            raise InvalidQuestionError(
                f"the question ({question_tokens} tokens) and up to {max_new} answer tokens do not fit after "
                f"{context} memory tokens in the model's {limit} positions; shorten the question or max_new_tokens"
            )

    def _layer_context(self, layer: int, queries: torch.Tensor, window: _TimeWindow,
                       visible: Optional[torch.Tensor], lt_end: int) -> _Context:
        """Prefix + retrieved long-term tokens + short-term tokens of one layer, in temporal order.

        ``lt_end``: token index where short-term memory begins (the same for every layer).
        """
        memory, cfg = self._memory, self.config
        prefix, total = memory.prefix_len, memory.length
        device = memory.device
        long_term = torch.arange(prefix, lt_end, device=device)
        short_term = torch.arange(lt_end, total, device=device)
        if visible is not None:
            long_term, short_term = long_term[visible[long_term]], short_term[visible[short_term]]
        pages_retrieved = pages_total = 0
        if cfg.memory != "rekv" and cfg.retrieval != "none" and long_term.numel():
            long_term, pages_retrieved, pages_total = self._retrieve_pages(layer, queries, long_term)
        index = torch.cat([torch.arange(prefix, device=device), long_term, short_term])
        keys = memory.keys[layer][:, index]
        values = memory.values[layer][:, index]
        times = memory.timestamp[layer][index]
        if self._host is not None and self._host.length:
            host_keys, host_values, host_times = self._retrieve_host_frames(layer, queries, window)
            keys = torch.cat([keys[:, :prefix], host_keys, keys[:, prefix:]], dim=1)
            values = torch.cat([values[:, :prefix], host_values, values[:, prefix:]], dim=1)
            times = torch.cat([times[:prefix], host_times, times[prefix:]])
        return _Context(keys, values, times, pages_retrieved, pages_total)

    def _retrieve_pages(self, layer: int, queries: torch.Tensor, long_term: torch.Tensor):
        """PaR: the best pages of ``long_term`` (token indices) for this layer's question queries."""
        cfg = self.config
        keys = self._memory.keys[layer][:, long_term]
        if cfg.retrieval == "par-pe":  # ablation: score with RoPE-rotated keys and queries
            keys = self._rotary.rotate_at(keys, long_term)  # at the positions they had in memory
            queries = self._rotary.rotate(queries, self._memory.length)
        means = retrieval.page_means(keys, cfg.page_size)
        scores = retrieval.score_groups(retrieval.pooled_query(queries, self.model.num_kv_heads), means)
        chosen = retrieval.top_groups(scores, ratio=cfg.retrieval_ratio)
        return long_term[retrieval.tokens_of_pages(chosen, cfg.page_size, long_term.numel())], chosen.numel(), \
            means.shape[1]

    def _retrieve_host_frames(self, layer: int, queries: torch.Tensor, window: _TimeWindow):
        """ReKV-style: the best ``rekv_frames`` offloaded frames inside ``window`` (by mean key), moved to the device."""
        host = self._host
        inside = window.contains(host.timestamp[layer]).nonzero().squeeze(1)
        keys, values = host.keys[layer][:, inside], host.values[layer][:, inside]
        frames, times = host.frame_index[layer][inside], host.timestamp[layer][inside]
        device = self._memory.device
        if not inside.numel():
            return keys.to(device), values.to(device), times.to(device)
        frame_ids, group_ids = torch.unique(frames, return_inverse=True)
        means = retrieval.group_means(keys, group_ids, frame_ids.numel())
        scores = retrieval.score_groups(retrieval.pooled_query(queries.to("cpu"), self.model.num_kv_heads), means)
        chosen = retrieval.top_groups(scores, count=min(self.config.rekv_frames, frame_ids.numel()))
        index = retrieval.tokens_in_groups(group_ids, chosen)
        return keys[:, index].to(device), values[:, index].to(device), times[index].to(device)

    # ================================================================== decode
    def _sampler(self, do_sample: bool, temperature: float, top_p: float, seed: Optional[int]):
        if not do_sample:
            return None
        warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)])
        generator = torch.Generator(device=self.model.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        return warpers, generator

    def _next_token(self, logits: torch.Tensor, sampler) -> int:
        if sampler is None:
            return int(logits.argmax())
        warpers, generator = sampler
        scores = warpers(None, logits[None])
        return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))

    def _decode(self, cache: AnswerCache, logits: torch.Tensor, stats: _AskStats, max_new: int, started: float,
                on_token, should_stop, sampler) -> AskResult:
        text = IncrementalDecoder(self.model.decode)
        ttft = None
        stop_reason = "length"
        for step in range(max_new):
            if should_stop is not None and should_stop():
                stop_reason = "cancelled"
                break
            token = self._next_token(logits, sampler)
            if ttft is None:
                ttft = time.perf_counter() - started
            if token in self.model.eos_token_ids:
                stop_reason = "eos"
                break
            piece = text.push(token)
            if step + 1 == max_new:  # the last token: nothing can complete a held-back character now
                piece += text.finish()
            if on_token is not None:
                on_token(piece)  # once per token, "" when it formed no complete character yet
            if step + 1 < max_new:
                logits = self._decode_step(cache, token)
        tail = text.finish()  # after EOS: bytes that never became a character, with the EOS token
        if tail and on_token is not None:
            on_token(tail)
        total = time.perf_counter() - started
        has_span = stats.span_start <= stats.span_end
        return AskResult(
            answer=text.text,
            ttft_s=ttft if ttft is not None else total,
            total_s=total,
            frames_seen=self._frames_ingested,
            span_start=stats.span_start if has_span else None,
            span_end=stats.span_end if has_span else None,
            memory_tokens=self._memory.length,
            context_tokens=_mean(stats.context_tokens),
            pages_retrieved=_mean(stats.pages_retrieved),
            pages_total=_mean(stats.pages_total),
            new_tokens=len(text.ids),
            stop_reason=stop_reason,
        )

    def _decode_step(self, cache: AnswerCache, token: int) -> torch.Tensor:
        hidden = self.model.embed_ids([token])
        for i, layer in enumerate(self.model.layers):
            inp = project(layer, hidden)
            position = cache.next_position[i]
            cache.append(i, self._rotary.rotate(inp.keys, position), inp.values)
            queries = self._rotary.rotate(inp.queries, position)
            hidden = finish(layer, inp.residual, attend(queries, cache.keys(i), cache.values(i), self._scale))
        return logits_of(self.model.final_norm, self.model.lm_head, hidden)

    # ================================================================== state
    def reset(self) -> None:
        """Forget every frame (buffered, in memory, offloaded); keep the prompt prefix."""
        self._memory.clear(keep_prefix=True)
        if self._host is not None:
            self._host.clear(keep_prefix=False)
        self._pending = []
        self._frames_ingested = 0
        self._first_time = self._last_time = None

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    def stats(self) -> MemoryStats:
        memory, cfg = self._memory, self.config
        lt_end = self._short_term_start()
        times = [memory.timestamp[memory.frame_index >= 0]]
        if self._host is not None and self._host.length:
            times.append(self._host.timestamp.flatten())
        frame_times = torch.cat([t.to("cpu") for t in times])
        return MemoryStats(
            tokens=memory.length,
            budget=None if cfg.memory == "full" else self.budget,
            prefix_tokens=memory.prefix_len,
            long_term_tokens=lt_end - memory.prefix_len,
            short_term_tokens=memory.length - lt_end,
            frames_ingested=self._frames_ingested,
            frames_pending=len(self._pending),
            oldest_time=float(frame_times.min()) if frame_times.numel() else None,
            newest_time=float(frame_times.max()) if frame_times.numel() else None,
            max_position_id=self._rotary.max_position_used,
            max_position_embeddings=self.model.max_position_embeddings,
            device_kv_bytes=memory.nbytes(),
            host_kv_bytes=self._host.nbytes() if self._host is not None else 0,
        )
