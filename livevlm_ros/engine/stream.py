"""LiveVLM on one video stream: encode frames as they arrive, answer questions from memory.

A thin composition of the engine's parts:

* **memory** (:class:`~.kv_memory.KVMemory`): pre-RoPE KV with rotated copy and token metadata;
* **policy** (:mod:`.policies`): which long-term tokens survive a compression;
* **retrieval** (:mod:`.context`, :mod:`.retrieval`): which memory each layer attends to when answering;
* **generate** (:mod:`.generate`): the one layer loop, prefill and decode.

Encoding phase (:meth:`LiveVLMStream.ingest`): frames are buffered into clips; each clip goes
through the vision tower and is prefilled on top of the memory (it attends to all of memory and
causally to itself). Then the memory policy keeps the long-term memory within budget (VSB by
default) using the attention the clip's newest tokens paid to it.

Response phase (:meth:`LiveVLMStream.ask`): the question is prefilled layer by layer; in each
layer the retrieval policy (PaR by default) picks long-term pages with the question's own
pre-RoPE queries; [prefix + retrieved pages + short-term memory + question] are rotated with
compacted positions and attended; then the answer is decoded. The memory is only read.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import generate, retrieval
from .answer_cache import AnswerCache
from .config import QUESTION_RESERVE_TOKENS, REFERENCE_BUDGET_TOKENS, EngineConfig
from .context import ContextBuilder, ContextPlan, TimeWindow, plan_context
from .decoder import RotaryTable
from .errors import ConfigError, EmptyMemoryError, InvalidFrameError, InvalidQuestionError, TimestampError
from .kv_memory import KVMemory, MemoryLayout, time_coverage
from .models.base import FrameEmbedding, VideoLLM, check_frame
from .persistence import FORMAT_VERSION, MemoryCheckpoint, check_compatible, config_fingerprint, model_fingerprint
from .policies import Region, make_policy
from .prefill import MemoryPrefill
from .question import CONDITION_SUFFIX, AskRequest, condition_request
from .results import AskResult, ConditionResult, EvidenceFrame, MemoryStats, Timeline
from .text_stream import IncrementalDecoder
from .timing import NO_TIMER

LOG = logging.getLogger(__name__)


class LiveVLMStream:
    """Streaming memory and question answering for one camera stream.

    Not thread-safe: one thread calls it. Several streams may share one :class:`VideoLLM`
    (the model is only read), called one at a time.

    Args:
        model: a loaded video LLM (see :func:`load_video_llm`).
        config: memory, compression, retrieval and decoding parameters.
        timer: a :class:`~.timing.StageTimer` to time the stages (benchmarks), or none.
    """

    def __init__(self, model: VideoLLM, config: Optional[EngineConfig] = None, *, timer=NO_TIMER) -> None:
        self.model = model
        self.config = config or EngineConfig()
        self.policy = make_policy(self.config)
        self.timer = timer
        self._rotary = RotaryTable(model.rotary_emb, model.device, model.dtype)
        self._scale = model.layers[0].self_attn.scaling
        cfg = self.config
        self._memory = KVMemory(model.num_layers, model.num_kv_heads, model.head_dim, device=model.device,
                                dtype=model.dtype, rotary=self._rotary, host_offload=self.policy.evicts_to_host,
                                recent_frames=cfg.short_term_frames + cfg.clip_frames + 1)
        self._pending: list[tuple[object, float]] = []
        self._frames_ingested = 0
        self._first_time: Optional[float] = None
        self._last_time: Optional[float] = None
        self._page_means: Optional[tuple] = None  # ((memory version, retrieval, page size), [L, H, pages, d])
        self._warned_context = False
        self._last_context: Optional[tuple] = None  # (times, valid, frames [L, K], PaR records) of the last answer
        #: Record PaR's page scores and choices per layer for :meth:`last_context` (benchmarks, diagnosis).
        self.record_retrieval = False
        with torch.inference_mode():
            self._write_prefix()
        self.budget = self._resolve_budget()
        self._memory.reserve(self._working_size())

    # ================================================================== sizes
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
        if self.policy.evicts_to_host:
            answer_peak += cfg.rekv_frames * per_frame
        room = model.max_position_embeddings - max(ingest_peak, answer_peak)
        if not self.policy.bounded:
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

    def _working_size(self) -> int:
        """Tokens the memory holds at most while a clip is prefilled on a full memory (bounded policies)."""
        cfg, per_frame = self.config, self.model.max_tokens_per_frame
        if not self.policy.bounded:
            return self._memory.capacity
        return self._memory.prefix_len + self.budget + (cfg.short_term_frames + cfg.clip_frames) * per_frame

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

    def ingest_embeddings(self, embeds: torch.Tensor, timestamp: float, vision: Optional[torch.Tensor] = None) -> None:
        """Add one "frame" given directly as language-model input embeddings ``[n, hidden]``.

        For proxies and tests that bypass the vision tower (e.g. a frame made of caption tokens).
        It is buffered, prefilled and compressed exactly like an image frame.

        Args:
            vision: ``[n]`` bool, False for structure tokens (never evicted while the frame's other
                tokens remain); default: every token is content.
        """
        if embeds.ndim != 2 or embeds.shape[1] != self.model.hidden_size or embeds.shape[0] == 0:
            raise InvalidFrameError(
                f"embeddings must have shape [n > 0, {self.model.hidden_size}], got {tuple(embeds.shape)}"
            )
        if vision is not None and (vision.dtype != torch.bool or tuple(vision.shape) != (embeds.shape[0],)):
            raise InvalidFrameError(f"vision must be a bool tensor of shape [{embeds.shape[0]}]")
        embeds = embeds.detach().to(device=self.model.device, dtype=self.model.dtype)
        frame = FrameEmbedding.all_vision(embeds) if vision is None else FrameEmbedding(embeds, vision.to(embeds.device))
        self._buffer(frame, timestamp)

    def _buffer(self, item, timestamp: float) -> None:
        self._check_timestamp(timestamp)
        self._pending.append((item, float(timestamp)))
        if self._first_time is None:
            self._first_time = float(timestamp)
        self._last_time = float(timestamp)
        if len(self._pending) >= self.config.clip_frames:
            self.flush()

    def _check_timestamp(self, timestamp: float) -> None:
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float, np.floating, np.integer)) \
                or not np.isfinite(timestamp):
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
        items = [f for f, _ in self._pending]
        times = [t for _, t in self._pending]
        self._pending = []  # a failing model call drops this clip rather than retrying it forever
        with torch.inference_mode():
            self._prefill_clip(items, times)
        return len(items)

    def _encode(self, items: list, relative_times: list[float]) -> list[FrameEmbedding]:
        """Each buffered item's :class:`FrameEmbedding`: images go through the vision tower in one batch."""
        images = [i for i, item in enumerate(items) if isinstance(item, np.ndarray)]
        result = list(items)
        if images:
            with self.timer.section("encode"):
                encoded = self.model.encode_frames([items[i] for i in images], [relative_times[i] for i in images])
            for i, frame in zip(images, encoded):
                result[i] = frame
        return result

    def _write_prefix(self) -> None:
        embeds = self.model.embed_text(self.model.prefix_text(self.config.system_prompt))
        n = embeds.shape[0]
        self._memory.reserve(n)
        generate.forward(self.model, embeds, MemoryPrefill(self._memory, self._rotary, self._scale),
                         need_output=False)
        self._memory.commit(torch.full((n,), -1, dtype=torch.long), torch.full((n,), torch.nan, dtype=torch.float64),
                            torch.zeros(n, dtype=torch.bool), frame_tokens=[])
        self._memory.mark_prefix()

    def _prefill_clip(self, items: list, times: list[float]) -> None:
        cfg, memory = self.config, self._memory
        frames = self._encode(items, [t - self._first_time for t in times])
        counts = [f.embeds.shape[0] for f in frames]
        first = self._frames_ingested
        n = sum(counts)
        frame_index = torch.repeat_interleave(torch.arange(first, first + len(frames)), torch.tensor(counts))
        stamps = torch.repeat_interleave(torch.tensor(times, dtype=torch.float64), torch.tensor(counts))
        embeds = torch.cat([f.embeds for f in frames])
        vision = torch.cat([f.vision for f in frames])
        self._warn_past_context(n)
        observe = self._observation_tokens(counts) if self._needs_scores(n) else 0
        memory.reserve(memory.length + n)
        prefill = MemoryPrefill(memory, self._rotary, self._scale, observe, cfg.score_heads, self.timer)
        with self.timer.section("prefill"):
            generate.forward(self.model, embeds, prefill, need_output=False)
        memory.commit(frame_index, stamps, vision, frame_tokens=list(zip(range(first, first + len(frames)), counts)))
        self._frames_ingested += len(frames)
        scores = prefill.scores()
        if scores is not None:
            memory.add_importance(memory.prefix_len, scores[:, :, memory.prefix_len:], cfg.score_decay)
        self._compress()
        if cfg.retrieval != "none" and not self.policy.evicts_to_host:
            with self.timer.section("page_means"):
                self._page_means_now()

    def _needs_scores(self, new_tokens: int) -> bool:
        """Importance is computed when this clip can push the long-term memory over budget (every clip
        when importance accumulates over clips)."""
        if not self.policy.needs_scores:
            return False
        memory = self._memory
        over = memory.length + new_tokens - memory.prefix_len > self.budget
        return over or self.config.score_decay > 0

    def _observation_tokens(self, counts: list[int]) -> int:
        window = counts[-1] if self.config.score_window == "frame" else sum(counts)
        return min(self.config.observation_tokens or window, sum(counts))

    def _warn_past_context(self, new_tokens: int) -> None:
        """The unbounded ``full`` memory eventually uses positions the model was not trained on: say so once."""
        limit = self.model.max_position_embeddings
        if not self._warned_context and self._memory.length + new_tokens > limit:
            self._warned_context = True
            LOG.warning("%s: memory=%s now holds %d tokens, past the model's trained context of %d positions; "
                        "answers may degrade (use a bounded memory policy such as vsb)", self.model.name,
                        self.config.memory, self._memory.length + new_tokens, limit)

    # ================================================================== memory policy
    def _short_term_start(self) -> int:
        return self._memory.short_term_start(self._frames_ingested - self.config.short_term_frames)

    def _compress(self) -> None:
        memory, cfg = self._memory, self.config
        start, end = memory.prefix_len, self._short_term_start()
        if not self.policy.bounded or end - start <= self.budget:
            return
        layers, heads = memory.num_layers, memory.num_kv_heads
        region = slice(start, end)

        def lanes(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[:, :, region].reshape(layers * heads, -1) if cfg.select_per_head else tensor[:, 0, region]

        scores = None
        if self.policy.needs_scores:
            importance = memory.importance[:, :, region]
            if not cfg.select_per_head:
                importance = importance.amax(dim=1) if cfg.score_heads == "max" else importance.mean(dim=1)
            scores = importance.reshape(-1, end - start)
        with self.timer.section("select"):
            keep = self.policy.select(Region(scores, lanes(memory.position), lanes(memory.frame_index),
                                             lanes(memory.vision)), self.budget)
        keep = keep.reshape(layers, heads, -1) if cfg.select_per_head else keep[:, None].expand(-1, heads, -1)
        with self.timer.section("compact"):
            memory.keep(start, end, keep)

    def _page_means_now(self) -> torch.Tensor:
        """``[L, H, pages, d]`` PaR page representatives of the current long-term memory (cached per change)."""
        memory = self._memory
        key = (memory.version, self.config.retrieval, self.config.page_size)
        if self._page_means is not None and self._page_means[0] == key:
            return self._page_means[1]
        region = slice(memory.prefix_len, self._short_term_start())
        keys = memory.keys[:, :, region]
        if not keys.shape[2]:
            return keys.float()
        if self.config.retrieval == "par-pe":  # ablation: keys rotated at their original stream positions
            keys = self._rotary.rotate_at(keys, memory.position[:, :, region])
        means = retrieval.page_means(keys, self.config.page_size)
        self._page_means = (key, means)
        return means

    #: The settings :meth:`set_question_settings` may change: they act only when a question is answered.
    QUESTION_SETTINGS = ("retrieval", "retrieval_ratio", "retrieval_min_tokens", "page_size", "page_score",
                         "rekv_frames", "max_new_tokens", "max_question_chars")

    def set_question_settings(self, **changes) -> None:
        """Change question-time settings of an ingested stream (e.g. answer one memory with and without PaR).

        Only :data:`QUESTION_SETTINGS` may change (memory content does not depend on them); the new
        config is validated, and the PaR page cache follows it.

        Raises:
            ConfigError: another field, or an invalid value.
        """
        other = sorted(set(changes) - set(self.QUESTION_SETTINGS))
        if other:
            raise ConfigError(f"only question-time settings {self.QUESTION_SETTINGS} can change on a stream; "
                              f"not {other}")
        self.config = self.config.replace(**changes)

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
        evidence: int = 0,
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
            evidence: report the ``evidence`` frames the answer drew on most (:attr:`AskResult.evidence`):
                by the attention the last prompt token (whose output gives the first answer token) paid
                to each frame's tokens, mean over heads and layers. Defined for every memory policy.

        Raises:
            InvalidQuestionError: empty or too long question, bad window or sampling values.
            EmptyMemoryError: no frame yet, or none inside the window.
        """
        request = AskRequest.build(question, self.config, max_new_tokens=max_new_tokens, since=since, until=until,
                                   do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed,
                                   evidence=evidence)
        return self.answer(request, on_token=on_token, should_stop=should_stop)

    def answer(self, request: AskRequest, *, on_token: Optional[Callable[[str], None]] = None,
               should_stop: Optional[Callable[[], bool]] = None) -> AskResult:
        """:meth:`ask` for an already validated :class:`AskRequest` (the ROS layer builds one)."""
        started = time.perf_counter()
        with torch.inference_mode():
            cache, logits, builder = self._begin(request, request.max_new_tokens)
            text = IncrementalDecoder(self.model.decode)

            def emit(token: int, last: bool) -> None:
                piece = text.push(token)
                if last:  # nothing can complete a held-back character any more
                    piece += text.finish()
                if on_token is not None:
                    on_token(piece)

            sampling = generate.Sampling(request.temperature if request.do_sample else None, request.top_p,
                                         request.seed)
            with self.timer.section("decode"):
                decoded = generate.decode_n_tokens(
                    self.model, cache, logits, request.max_new_tokens, sampling, stop_ids=self.model.eos_token_ids,
                    on_token=emit, should_stop=should_stop, **self._first_token_check(request, builder))
            tail = text.finish()  # after EOS or a cancel: bytes that never became a character
            if tail and on_token is not None:
                on_token(tail)
            self._remember_context(cache, builder)
            return self._result(request, cache, builder.plan, text.text, decoded, started)

    #: Appended to a condition so that the first answer token is "yes" or "no".
    CONDITION_SUFFIX = CONDITION_SUFFIX

    def evaluate_condition(self, condition: str, *, since: Optional[float] = None, until: Optional[float] = None,
                           evidence: int = 0) -> ConditionResult:
        """Probability that a yes/no ``condition`` holds, from one read-only question prefill (nothing decoded).

        ``p_yes`` is the softmax over two logits: the log-sum-exp of the first-token logits of the
        tokenizer's spellings of "yes" (yes, Yes, YES, with and without a leading space) against the same
        for "no". With a random-weight model it is noise.

        Raises:
            InvalidQuestionError / EmptyMemoryError: as :meth:`ask`.
        """
        started = time.perf_counter()
        request = condition_request(condition, self.config, since=since, until=until, evidence=evidence)
        yes_ids, no_ids = self._yes_no_ids()
        with torch.inference_mode():
            cache, logits, builder = self._begin(request, 1)
            self._check_window(request, builder)
            pair = torch.stack([logits[yes_ids].logsumexp(0), logits[no_ids].logsumexp(0)])
            p_yes, yes, no = [float(x) for x in torch.cat([pair.softmax(0)[:1], pair]).tolist()]
            low, high = cache.spans()
            has_span = low <= high
            return ConditionResult(
                p_yes=p_yes, yes_logit=yes, no_logit=no, elapsed_s=time.perf_counter() - started,
                frames_seen=self._frames_ingested, span_start=low if has_span else None,
                span_end=high if has_span else None, memory_tokens=self._memory.length,
                evidence=self._evidence(cache, request.evidence))

    def _yes_no_ids(self) -> tuple[list[int], list[int]]:
        """First-token ids of the spellings of "yes" and of "no" (ids both words share are left out)."""
        if not hasattr(self, "_yes_no"):
            def first_ids(word: str) -> set:
                spellings = {word, word.capitalize(), word.upper()}
                return {ids[0] for w in spellings for ids in (self.model.tokenize(w), self.model.tokenize(" " + w))
                        if ids}

            yes, no = first_ids("yes"), first_ids("no")
            shared = yes & no
            self._yes_no = (sorted(yes - shared), sorted(no - shared))
        return self._yes_no

    def first_token_logits(self, question: str, *, since: Optional[float] = None,
                           until: Optional[float] = None) -> torch.Tensor:
        """``[vocab]`` float32 logits of the answer's first token, through the same path as :meth:`ask`.

        For fidelity checks (against ``model.generate``, or between memory policies).
        """
        request = AskRequest.build(question, self.config, max_new_tokens=1, since=since, until=until)
        with torch.inference_mode():
            cache, logits, builder = self._begin(request, 1)
            self._check_window(request, builder)
            return logits

    def option_logprobs(self, question: str, options: Sequence[str], *, since: Optional[float] = None,
                        until: Optional[float] = None) -> list[float]:
        """Log-likelihood (natural log, summed over tokens) of each option text as the answer's start.

        Teacher-forced through the same retrieval path as :meth:`ask` (one question prefill shared by
        every option); the memory is only read.

        Raises:
            InvalidQuestionError: the question is invalid, or an option is empty.
        """
        token_ids = [self.model.tokenize(option) if isinstance(option, str) else [] for option in options]
        if not token_ids or any(not ids for ids in token_ids):
            raise InvalidQuestionError("every option must be a non-empty string")
        per_token = self.continuation_logprobs(question, token_ids, since=since, until=until)
        return [float(lp.gather(1, torch.tensor(ids)[:, None]).sum()) for lp, ids in zip(per_token, token_ids)]

    def continuation_logprobs(self, question: str, continuations: Sequence[Sequence[int]], *,
                              since: Optional[float] = None, until: Optional[float] = None) -> list[torch.Tensor]:
        """For each continuation (token ids), ``[m, vocab]`` float32 (CPU) log-probabilities of every answer
        position: row ``j`` is the distribution of the ``j``-th answer token given the question and the
        continuation's first ``j`` tokens (teacher forcing). One question prefill serves them all.
        """
        if not continuations or any(len(ids) == 0 for ids in continuations):
            raise InvalidQuestionError("every continuation must have at least one token")
        longest = max(len(ids) for ids in continuations)
        request = AskRequest.build(question, self.config, max_new_tokens=min(longest, 4096), since=since,
                                   until=until)
        with torch.inference_mode():
            cache, logits, builder = self._begin(request, longest)
            self._check_window(request, builder)
            first = logits.log_softmax(dim=-1)[None]
            state = cache.checkpoint()
            result = []
            for ids in continuations:
                rows = first
                if len(ids) > 1:
                    following = generate.token_logprobs(self.model, self.model.embed_ids(list(ids[:-1])), cache)
                    rows = torch.cat([first, following])
                    cache.rewind(state)
                result.append(rows.cpu())
            return result

    def _begin(self, request: AskRequest, answer_room: int) -> tuple[AnswerCache, torch.Tensor, ContextBuilder]:
        """Flush pending frames, then prefill the question: (answer cache, first logits, context builder)."""
        self.flush()
        if self._frames_ingested == 0:
            raise EmptyMemoryError("no frame has been ingested yet: nothing to answer about")
        model, memory, cfg = self.model, self._memory, self.config
        question = model.question_embeds(request.question, cfg.system_prompt)
        window = TimeWindow(request.since, request.until)
        host_frames, host_slots = self._host_frames(window)
        self._check_answer_fits(question.embeds.shape[0], answer_room, host_slots)
        retrieves = cfg.retrieval != "none" and not self.policy.evicts_to_host
        plan = plan_context(memory, cfg, self._short_term_start(), retrieves, host_slots)
        n_question = question.embeds.shape[0]
        positions = torch.arange(memory.stream_tokens, memory.stream_tokens + n_question, device=memory.device)
        builder = ContextBuilder(memory, cfg, self._rotary, plan, window,
                                 page_means=self._page_means_now() if plan.pages_total else None,
                                 own=question.own, question_positions=positions, host_frames=host_frames,
                                 timer=self.timer, record=self.record_retrieval)
        cache = AnswerCache(num_layers=model.num_layers, num_kv_heads=model.num_kv_heads, head_dim=model.head_dim,
                            context_slots=plan.slots, room=n_question + answer_room, device=model.device,
                            dtype=model.dtype, rotary=self._rotary, scale=self._scale, build_context=builder,
                            evidence=request.evidence > 0)
        with self.timer.section("answer"):
            logits = generate.prefill(model, question.embeds, cache)
        cache.advance(n_question)
        return cache, logits, builder

    def _host_frames(self, window: TimeWindow) -> tuple[list, int]:
        """ReKV-style: the offloaded frames inside ``window``, and the slots their best ``rekv_frames`` may need."""
        host = self._memory.host
        if host is None or not host.length:
            return [], 0
        frames = host.frames_in(window.since, window.until)
        sizes = sorted((host.frame_end[s] - host.frame_start[s] for s in frames), reverse=True)
        return frames, sum(sizes[: self.config.rekv_frames])

    def _first_token_check(self, request: AskRequest, builder: ContextBuilder) -> dict:
        """With a time window, the count of visible frame tokens is read with the first token (one host read)."""
        if not request.windowed:
            return {}

        def check(values: list) -> None:
            if values[0] == 0:
                raise EmptyMemoryError(f"no frame in memory lies in the time window [{request.since}, {request.until}] s")

        return {"check_first": check, "extra_first": builder.visible_frame_tokens()}

    def _check_window(self, request: AskRequest, builder: ContextBuilder) -> None:
        check = self._first_token_check(request, builder)
        if check:
            check["check_first"](check["extra_first"].tolist())

    def _check_answer_fits(self, question_tokens: int, max_new: int, host_slots: int) -> None:
        """Raise InvalidQuestionError if memory + question + answer could pass the trained context."""
        if not self.policy.bounded:
            return  # the unbounded baseline: positions grow with the stream by design
        context = self._memory.length + host_slots
        limit = self.model.max_position_embeddings
        if context + question_tokens + max_new > limit:
            raise InvalidQuestionError(
                f"the question ({question_tokens} tokens) and up to {max_new} answer tokens do not fit after "
                f"{context} memory tokens in the model's {limit} positions; shorten the question or max_new_tokens"
            )

    def _result(self, request: AskRequest, cache: AnswerCache, plan: ContextPlan, answer: str,
                decoded: generate.Decoded, started: float) -> AskResult:
        total = time.perf_counter() - started
        low, high = cache.spans()
        context_tokens = float(cache.valid[:, :, : plan.slots].sum(dim=2)[:, 0].double().mean())
        self._rotary.note(int(cache.next_position.max()) - 1)
        has_span = low <= high
        return AskResult(
            answer=answer,
            ttft_s=(decoded.first_token_s - started) if decoded.first_token_s is not None else total,
            total_s=total,
            frames_seen=self._frames_ingested,
            span_start=low if has_span else None,
            span_end=high if has_span else None,
            memory_tokens=self._memory.length,
            context_tokens=context_tokens,
            pages_retrieved=float(plan.pages_kept),
            pages_total=float(plan.pages_total),
            new_tokens=len(decoded.ids),
            stop_reason=decoded.stop_reason,
            token_ids=list(decoded.ids),
            evidence=self._evidence(cache, request.evidence),
        )

    def _evidence(self, cache: AnswerCache, count: int) -> list:
        """The ``count`` frames with the most attention mass in ``cache`` (mean over layers), descending."""
        if not count or cache.mass is None:
            return []
        frames = cache.frames[:, 0].flatten().cpu()
        mass = cache.mass.flatten().double().cpu() / cache.mass.shape[0]
        times = cache.times[:, 0].flatten().cpu()
        keep = frames >= 0
        frames, mass, times = frames[keep], mass[keep], times[keep]
        if not frames.numel():
            return []
        ids, inverse = torch.unique(frames, return_inverse=True)
        totals = torch.zeros(ids.numel(), dtype=torch.float64).index_add_(0, inverse, mass)
        stamp = torch.zeros(ids.numel(), dtype=torch.float64).scatter_(0, inverse, times)
        best = totals.argsort(descending=True)[:count]
        return [EvidenceFrame(int(ids[i]), float(stamp[i]), float(totals[i])) for i in best.tolist()]

    # ================================================================== state
    def reset(self) -> None:
        """Forget every frame (buffered, in memory, offloaded); keep the prompt prefix."""
        with torch.inference_mode():
            self._memory.clear()
        self._pending = []
        self._frames_ingested = 0
        self._first_time = self._last_time = None
        self._page_means = None
        self._last_context = None

    def checkpoint(self) -> MemoryCheckpoint:
        """The memory as a :class:`MemoryCheckpoint` (CPU copies; pending frames are prefilled first).

        Costs at most one clip's prefill plus a device-to-host copy of the memory; writing it to disk
        (:func:`~livevlm_ros.engine.persistence.save_checkpoint`) needs no access to the stream.
        """
        self.flush()
        with torch.inference_mode():
            tensors, memory_meta = self._memory.state()
        tensors.update(self.policy.state())
        times = self._memory.timestamp[:, 0][self._memory.frame_index[:, 0] >= 0]
        meta = {
            "format_version": FORMAT_VERSION,
            "model": self.model.name,
            "model_fingerprint": model_fingerprint(self.model),
            "config_fingerprint": config_fingerprint(self.config),
            "memory": memory_meta,
            "frames_ingested": self._frames_ingested,
            "first_time": self._first_time,
            "last_time": self._last_time,
            "max_position_used": self._rotary.max_position_used,
            "summary": {
                "frames_ingested": self._frames_ingested,
                "memory_tokens": self._memory.length,
                "oldest_time": float(times.min()) if times.numel() else None,
                "newest_time": float(times.max()) if times.numel() else None,
            },
        }
        return MemoryCheckpoint(tensors, meta)

    def restore(self, checkpoint: MemoryCheckpoint) -> None:
        """Replace this stream's memory by ``checkpoint`` (taken with the same model and config).

        Afterwards a question gets the same first-token logits and answer as before the checkpoint,
        and new frames continue its timeline (a frame stamped before its last stamp is refused as usual).

        Raises:
            CheckpointError: another model or engine configuration, or tensors of the wrong shape; the
                stream is then reset (empty memory), never half-restored.
        """
        from .persistence import CheckpointError

        check_compatible(checkpoint, self.model, self.config)
        meta = checkpoint.meta
        self.reset()
        try:
            with torch.inference_mode():
                self._memory.load_state(checkpoint.tensors, meta["memory"])
                self.policy.load_state(checkpoint.tensors, self._memory.device)
        except (KeyError, ValueError, RuntimeError) as exc:
            self.reset()
            raise CheckpointError(f"checkpoint does not fit this stream's memory: {exc}") from exc
        self._frames_ingested = int(meta["frames_ingested"])
        self._first_time, self._last_time = meta["first_time"], meta["last_time"]
        self._rotary.max_position_used = max(self._rotary.max_position_used, int(meta["max_position_used"]))

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    def memory_layout(self) -> MemoryLayout:
        """A CPU snapshot of where each memory token came from (frame, time, stream position, kind)."""
        return self._memory.layout(self._short_term_start())

    def _remember_context(self, cache: AnswerCache, builder: ContextBuilder) -> None:
        """Keep the answer's per-layer context (device tensors; read only when asked for)."""
        k = builder.plan.slots
        self._last_context = (cache.times[:, 0], cache.valid[:, 0, :k], cache.frames[:, 0], builder.records)

    def last_context(self) -> Optional[dict]:
        """What the last answer attended to, per layer (CPU): ``frames`` / ``times`` / ``valid`` ``[L, K]`` of its
        context slots (prefix, retrieved long-term, short-term), and with :attr:`record_retrieval` set, the PaR
        ``pages`` per layer (``scores`` and ``chosen`` page ids over the long-term region). None before any answer."""
        if self._last_context is None:
            return None
        times, valid, frames, records = self._last_context
        result = {"times": times.cpu(), "valid": valid.cpu(), "frames": frames.cpu()}
        if records:
            result["pages"] = [{name: value.cpu() for name, value in record.items()} for record in records]
        return result

    def timeline(self) -> Timeline:
        """Where the memory (and the last answer's context) sits in stream time: a CPU snapshot."""
        memory = self._memory
        lt_end = self._short_term_start()
        frame_tokens = memory.frame_index[:, 0] >= 0
        times = memory.timestamp[:, 0][frame_tokens].cpu()
        short = memory.timestamp[0, 0, lt_end] if lt_end < memory.length else None
        retrieved = None
        if self._last_context is not None:
            context_times, valid = self._last_context[:2]
            retrieved = context_times[valid & ~context_times.isnan()].cpu().tolist()
        return Timeline(first_time=self._first_time, last_time=self._last_time, token_times=times.tolist(),
                        layers=memory.num_layers, short_term_start=None if short is None else float(short),
                        retrieved_times=retrieved, budget_tokens=self.budget if self.policy.bounded else None)

    def stats(self) -> MemoryStats:
        memory, cfg = self._memory, self.config
        lt_end = self._short_term_start()
        frame_times = memory.timestamp[:, 0][memory.frame_index[:, 0] >= 0].cpu()
        if memory.host is not None and memory.host.length:
            frame_times = torch.cat([frame_times, memory.host.token_times()])
        return MemoryStats(
            tokens=memory.length,
            budget=self.budget if self.policy.bounded else None,
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
            host_kv_bytes=memory.host.nbytes() if memory.host is not None else 0,
            coverage=time_coverage(memory.timestamp[:, :, memory.prefix_len:lt_end], self._first_time,
                                   self._last_time),
        )
