"""What one ingested memory holds and what one answer read, through the engine's public API only.

* :func:`ingest` feeds a :class:`~.streams.CaptionStream` as frames (``ingest_embeddings``).
* :func:`retention` is the paper's Fig. 4 metric: per layer, the share of each event's tokens
  still in memory (long- or short-term), plus the age of every memory token.
* :func:`score_question` asks one question: option log-likelihoods (accuracy, gold margin), the
  exact greedy answer, and, under PaR, which of the event's memory tokens the answer's context
  kept in each layer (:func:`context_recall`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from livevlm_ros.engine import LiveVLMStream

from .streams import CaptionStream, Question, predicted_colour

#: Greedy answers are read for their first colour word; one word and a stop need no more.
GREEDY_TOKENS = 5
#: Memory age histogram: bins over the stream, 0 = newest tenth.
AGE_BINS = 10
#: Stretches of long-term memory over which PaR's page-score position bias is reported (oldest first).
BIAS_BINS = 5


def ingest(model, config, stream_def: CaptionStream) -> LiveVLMStream:
    """A stream with every caption ingested as one frame (its text tokens' embeddings), flushed."""
    stream = LiveVLMStream(model, config)
    with torch.inference_mode():
        for caption, t in zip(stream_def.captions, stream_def.times):
            stream.ingest_embeddings(model.embed_text(caption + "\n"), t)
        stream.flush()
    return stream


def frame_token_counts(model, stream_def: CaptionStream) -> list:
    """Tokens of each frame (as :func:`ingest` feeds them)."""
    return [len(model.tokenize(caption + "\n")) for caption in stream_def.captions]


@dataclass
class Retention:
    """Per event ``k``: ``per_layer[k]`` = share of its tokens in memory, one float per layer; ``ages``:
    counts of long-term memory tokens (mean over layers) in each tenth of the stream by age, newest first."""

    per_layer: list
    ages: list


def retention(stream: LiveVLMStream, stream_def: CaptionStream, counts: list) -> Retention:
    layout = stream.memory_layout()
    frames = layout.frame_index[:, 0]  # [L, T]; head 0 (per-head selection: heads differ, see below)
    per_head = layout.frame_index  # [L, H, T]
    result = []
    for event in stream_def.events:
        total = sum(counts[event.first:event.last + 1])
        inside = (per_head >= event.first) & (per_head <= event.last)
        share = inside.sum(dim=2).double().mean(dim=1) / max(1, total)  # mean over KV heads
        result.append([float(x) for x in share])
    long_term = frames[:, layout.prefix_len:layout.short_term_start]
    age = (stream_def.frames - 1 - long_term).clamp(min=0).double() / stream_def.frames
    bins = (age * AGE_BINS).floor().clamp(max=AGE_BINS - 1).long()
    hist = torch.stack([torch.bincount(row, minlength=AGE_BINS) for row in bins]).double().mean(dim=0)
    return Retention(result, [float(x) for x in hist])


def event_tokens_in_memory(stream: LiveVLMStream, question: Question) -> torch.Tensor:
    """``[L]`` count of the event's long-term tokens in memory per layer (KV head 0)."""
    layout = stream.memory_layout()
    frames = layout.frame_index[:, 0, layout.prefix_len:layout.short_term_start]
    return ((frames >= question.event.first) & (frames <= question.event.last)).sum(dim=1)


def context_recall(stream: LiveVLMStream, question: Question) -> list:
    """Per layer: the share of the event's memory tokens (long- and short-term) that the last answer's
    context held (1.0 without retrieval; nan where memory holds none of them)."""
    context = stream.last_context()
    layout = stream.memory_layout()
    first, last = question.event.first, question.event.last
    held = ((layout.frame_index[:, 0] >= first) & (layout.frame_index[:, 0] <= last)).sum(dim=1).double()
    frames = context["frames"]
    used = (((frames >= first) & (frames <= last)) & context["valid"]).sum(dim=1).double()
    return [float(u / h) if h > 0 else float("nan") for u, h in zip(used, held)]


def answer_stem(question: Question) -> str:
    """The answer's start shared by every option ("The van was"); options differ in the next word only."""
    return f"The {question.event.object} was"


def option_scores(stream: LiveVLMStream, question: Question) -> list:
    """Log-likelihood (nats) of each option as the answer ``"<stem> <colour>"``, teacher-forced.

    All options share the stem, so its likelihood cancels between them: one pass scores the stem
    and reads every option's colour token from the distribution after it (each colour's first token;
    :func:`check_options` verifies they are distinct).
    """
    model = stream.model
    stem = model.tokenize(answer_stem(question))
    ids = option_token_ids(model, question)
    rows = stream.continuation_logprobs(question.text, [stem + [ids[0]]])[0]
    return [float(rows[len(stem), i]) for i in ids]


def option_token_ids(model, question: Question) -> list:
    """First token id of each option word as it follows the stem (a leading space)."""
    return [model.tokenize(" " + option.lower())[0] for option in question.options]


def score_question(stream: LiveVLMStream, question: Question, greedy: bool = True) -> dict:
    """One question on one memory: ``correct`` (best option is gold), ``margin`` (gold log-likelihood minus
    the best other option's, nats), and with ``greedy``: ``greedy_correct`` (first colour word of the free
    greedy answer), ``answer`` and ``recall`` (per layer, see :func:`context_recall`).

    The greedy answer runs first: the engine keeps the context of answers (not of option scoring), and
    both read the same context (retrieval depends on the question only).
    """
    out = {}
    if greedy:
        answer = stream.ask(question.text, max_new_tokens=GREEDY_TOKENS).answer
        out = {"answer": answer, "greedy_correct": int(predicted_colour(answer) == question.event.colour),
               "recall": context_recall(stream, question)}
    logprobs = option_scores(stream, question)
    gold = logprobs[question.gold]
    best_other = max(lp for i, lp in enumerate(logprobs) if i != question.gold)
    return {"correct": int(gold > best_other), "margin": gold - best_other, **out}


def page_diagnosis(stream: LiveVLMStream, question: Question, page_size: int) -> dict:
    """Why PaR may miss the event (after an answer with ``record_retrieval`` set), per layer:

    * ``event_pages``: long-term pages holding any of the event's tokens;
    * ``purity``: the event's share of the tokens of those pages (pages split across events/fillers);
    * ``best_rank``: rank (0 = best) of the best-scored event page among all pages, and ``pages``;
    * ``hit``: whether any event page was retrieved; ``kept``: pages retrieved;
    * ``chance``: the probability of a hit if ``kept`` pages were drawn uniformly at random (the null
      that ``hit`` must beat for page scores to find content);
    * ``bias`` (one list, not per layer): the page scores' position bias, mean over layers of the z-scored
      page scores in each fifth of the long-term memory, oldest first (0 everywhere: no preference by age).
    """
    context = stream.last_context()
    if not context or "pages" not in context:
        return {}
    layout = stream.memory_layout()
    frames = layout.frame_index[:, 0, layout.prefix_len:layout.short_term_start]  # [L, n]
    first, last = question.event.first, question.event.last
    out = {"event_pages": [], "purity": [], "best_rank": [], "pages": [], "hit": [], "kept": [], "chance": []}
    bias = []
    for layer, record in enumerate(context["pages"]):
        scores, chosen = record["scores"], record["chosen"]
        if scores.ndim > 1:  # per-head selection: head 0
            scores, chosen = scores[0], chosen[0]
        bias.append(score_bias(scores))
        mine = (frames[layer] >= first) & (frames[layer] <= last)
        n = mine.numel()
        pages = torch.arange(n) // page_size
        event_pages = torch.unique(pages[mine])
        total, kept, mine_pages = int(scores.numel()), int(chosen.numel()), int(event_pages.numel())
        out["pages"].append(total)
        out["kept"].append(kept)
        out["event_pages"].append(mine_pages)
        if not mine_pages:
            for name in ("purity", "best_rank", "hit", "chance"):
                out[name].append(float("nan"))
            continue
        out["chance"].append(1.0 - math.comb(total - mine_pages, kept) / math.comb(total, kept))
        in_pages = torch.isin(pages, event_pages)
        out["purity"].append(float(mine.sum() / in_pages.sum()))
        order = scores.argsort(descending=True)
        ranks = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))
        out["best_rank"].append(int(ranks[event_pages].min()))
        out["hit"].append(float(torch.isin(event_pages, chosen).any()))
    out["bias"] = [float(x) for x in torch.stack(bias).nanmean(dim=0)] if bias else []
    return out


def score_bias(scores: torch.Tensor, bins: int = BIAS_BINS) -> torch.Tensor:
    """``[bins]``: z-scored page ``scores`` (``[pages]``, memory order) averaged in ``bins`` equal stretches of
    the memory, oldest first; pages that could not score (``-inf``, outside a time window) are left out."""
    values = scores.double()
    finite = torch.isfinite(values)
    if finite.sum() < 2:
        return torch.full((bins,), float("nan"), dtype=torch.float64)
    z = (values - values[finite].mean()) / values[finite].std().clamp(min=1e-12)
    where = (torch.arange(values.numel(), dtype=torch.float64) + 0.5) * bins / values.numel()
    which = where.floor().long().clamp(max=bins - 1)
    sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, which[finite], z[finite])
    counts = torch.bincount(which[finite], minlength=bins).double()
    return sums / counts  # nan for a stretch without a page
