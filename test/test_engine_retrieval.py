"""PaR page retrieval and ReKV-style frame retrieval."""

import math

import pytest
import torch
from engine_helpers import random_frames, stream_of

from livevlm_ros.engine import retrieval


def test_group_means_and_pooled_scores_match_brute_force():
    torch.manual_seed(0)
    kv_heads, heads, n, d, q = 2, 6, 37, 8, 5
    keys = torch.randn(kv_heads, n, d)
    queries = torch.randn(heads, q, d)
    page_ids, n_pages = torch.arange(n) // 16, math.ceil(n / 16)
    assert n_pages == 3 and page_ids.tolist()[-5:] == [2] * 5
    means = retrieval.group_means(keys, page_ids, n_pages)
    assert torch.allclose(means[:, 2], keys[:, 32:].mean(dim=1), atol=1e-6)
    scores = retrieval.score_groups(retrieval.pooled_query(queries, kv_heads), means)
    # brute force: mean over query heads and question tokens of q . page_mean of the head's KV group
    group = torch.arange(heads) // (heads // kv_heads)
    brute = torch.stack([
        torch.einsum("hqd,hd->hq", queries, means[group, p]).mean() for p in range(n_pages)
    ])
    assert torch.allclose(scores, brute, atol=1e-5)


def test_top_groups_ratio_and_order():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2])
    assert retrieval.top_groups(scores, ratio=0.4).tolist() == [1, 3]
    assert retrieval.top_groups(scores, ratio=0.01).tolist() == [1]
    assert retrieval.top_groups(scores, count=3).tolist() == [1, 2, 3]
    ids = torch.tensor([0, 0, 1, 1, 2, 3])
    assert retrieval.tokens_in_groups(ids, torch.tensor([1, 3])).tolist() == [2, 3, 5]


@pytest.mark.parametrize("name", ["tiny-llava-onevision", "tiny-smolvlm"])
def test_par_retrieves_ratio_of_pages_and_shrinks_context(name):
    frames = random_frames(24, seed=7)
    kwargs = dict(memory="vsb", budget_tokens=160, short_term_frames=2, clip_frames=4, page_size=16)
    full_context = stream_of(name, frames, retrieval="none", **kwargs).ask("where is the car?", max_new_tokens=2)
    par = stream_of(name, frames, retrieval="par", retrieval_ratio=0.4, retrieval_min_tokens=0,
                    **kwargs).ask("where is the car?", max_new_tokens=2)
    assert par.pages_total == math.ceil(160 / 16)
    assert par.pages_retrieved == math.ceil(0.4 * par.pages_total)
    assert full_context.pages_retrieved == 0
    assert par.context_tokens == full_context.context_tokens - (par.pages_total - par.pages_retrieved) * 16
    assert par.memory_tokens == full_context.memory_tokens


def test_par_with_rope_keys_selects_differently_from_pre_rope(monkeypatch):
    from livevlm_ros.engine.context import ContextBuilder

    frames = random_frames(40, seed=8)
    kwargs = dict(memory="vsb", budget_tokens=256, clip_frames=8, page_size=8, retrieval_ratio=0.25,
                  retrieval_min_tokens=0)
    chosen = {}
    original = ContextBuilder._long_term
    for policy in ("par", "par-pe"):
        stream = stream_of("tiny-llava-onevision", frames, retrieval=policy, **kwargs)
        picked = []

        def spy(self, layer, queries, picked=picked):
            index, exists = original(self, layer, queries)
            picked.append(index.clone())
            return index, exists

        monkeypatch.setattr(ContextBuilder, "_long_term", spy)
        stream.ask("what changed?", max_new_tokens=1)
        chosen[policy] = picked
    assert len(chosen["par"]) == len(chosen["par-pe"]) == 2  # one per layer
    assert any(not torch.equal(a, b) for a, b in zip(chosen["par"], chosen["par-pe"]))


def test_time_window_limits_what_the_answer_sees():
    frames = random_frames(16, seed=9)
    times = [float(i) for i in range(16)]
    stream = stream_of("tiny-smolvlm", frames, times, memory="vsb", retrieval="par", budget_tokens=400,
                       clip_frames=4)
    everything = stream.ask("what happened?", max_new_tokens=2)
    assert everything.span_start == 0.0 and everything.span_end == 15.0
    recent = stream.ask("what happened in the last seconds?", max_new_tokens=2, since=11.5)
    assert recent.span_start >= 12.0 and recent.span_end == 15.0
    middle = stream.ask("and then?", max_new_tokens=2, since=4.0, until=6.0)
    assert 4.0 <= middle.span_start <= middle.span_end <= 6.0
    assert middle.context_tokens < everything.context_tokens


def test_rekv_retrieves_offloaded_frames_from_host():
    frames = random_frames(30, seed=10)
    stream = stream_of("tiny-llava-onevision", frames, memory="rekv", budget_tokens=64, short_term_frames=1,
                       clip_frames=5, rekv_frames=3)
    stats = stream.stats()
    assert stats.host_kv_bytes > 0 and stats.long_term_tokens == 64
    per_token = stats.device_kv_bytes // stats.tokens
    assert stats.host_kv_bytes == per_token * (30 - 1) * 16 - per_token * 64
    result = stream.ask("what was first?", max_new_tokens=2)
    # prefix + 3 retrieved frames + device window + short-term
    assert result.context_tokens == stats.prefix_tokens + 3 * 16 + 64 + 16
    assert result.span_start < stats.newest_time - 64 / 16 * 0.5


def test_rekv_time_window_applies_to_offloaded_frames():
    frames = random_frames(30, seed=12)
    times = [float(i) for i in range(30)]
    stream = stream_of("tiny-llava-onevision", frames, times, memory="rekv", budget_tokens=64,
                       short_term_frames=1, clip_frames=5, rekv_frames=3)
    early = stream.ask("what was first?", max_new_tokens=1, until=4.0)
    assert early.span_start == 0.0 and early.span_end <= 4.0
    assert early.context_tokens == stream.stats().prefix_tokens + 3 * 16


@pytest.mark.parametrize("n,page", [(37, 16), (32, 16), (5, 8), (1, 4)])
def test_page_means_reshape_matches_grouped_means(n, page):
    keys = torch.randn(2, n, 8, generator=torch.Generator().manual_seed(n))
    page_ids, n_pages = torch.arange(n) // page, math.ceil(n / page)
    assert torch.allclose(retrieval.page_means(keys, page), retrieval.group_means(keys, page_ids, n_pages), atol=1e-6)
    chosen = torch.tensor([0, n_pages - 1]).unique()
    offsets, exists = retrieval.tokens_of_pages(chosen, page, n)
    assert torch.equal(offsets[exists], retrieval.tokens_in_groups(page_ids, chosen))
    assert int(offsets.max()) < n  # clamped: every offset can be gathered


def test_retrieval_floor_keeps_short_memories_whole():
    frames = random_frames(24, seed=13)
    kwargs = dict(memory="vsb", budget_tokens=160, short_term_frames=2, clip_frames=4, page_size=16)
    floor = stream_of("tiny-llava-onevision", frames, retrieval="par", retrieval_min_tokens=96, **kwargs)
    result = floor.ask("where?", max_new_tokens=1)
    assert result.pages_retrieved == 6 and result.pages_total == 10  # 96 / 16 pages beat ceil(0.4 * 10) = 4
    floor.set_question_settings(retrieval_min_tokens=1000)
    assert floor.ask("where?", max_new_tokens=1).pages_retrieved == 10  # all of a short memory


def test_default_floor_reads_a_short_memory_whole_and_answers_as_without_retrieval():
    """Below retrieval_min_tokens (default 1,024) PaR keeps every page: the answer is the no-retrieval answer,
    token for token; above it the paper's ratio decides."""
    frames = random_frames(24, seed=15)
    kwargs = dict(memory="vsb", budget_tokens=160, short_term_frames=2, clip_frames=4, page_size=16)
    plain = stream_of("tiny-smolvlm", frames, retrieval="none", **kwargs)
    par = stream_of("tiny-smolvlm", frames, retrieval="par", **kwargs)
    assert par.config.retrieval_min_tokens == 1024
    a, b = plain.ask("where is the car?", max_new_tokens=6), par.ask("where is the car?", max_new_tokens=6)
    assert b.pages_retrieved == b.pages_total == 10 and a.token_ids == b.token_ids
    assert b.context_tokens == a.context_tokens
    par.set_question_settings(retrieval_min_tokens=64)
    assert par.ask("where is the car?", max_new_tokens=1).pages_retrieved == 4  # max(64 / 16, ceil(0.4 * 10))


def test_page_attention_scores_match_a_per_head_softmax_loop():
    torch.manual_seed(2)
    kv_heads, heads, q, n, d, page = 2, 6, 5, 37, 8, 16
    keys, queries = torch.randn(kv_heads, n, d), torch.randn(heads, q, d)
    own = torch.tensor([False, True, True, True, False])
    weights = retrieval.question_weights(own)
    scores = retrieval.page_attention_scores(queries, keys, page, weights)
    per_head = retrieval.page_attention_scores(queries, keys, page, weights, per_head=True)
    group = heads // kv_heads
    mass = torch.zeros(kv_heads, n)
    for h in range(heads):
        probs = torch.softmax(queries[h] @ keys[h // group].T / math.sqrt(d), dim=-1)  # [q, n]
        mass[h // group] += (weights[:, None] * probs).sum(dim=0) / group
    brute = torch.stack([mass[:, p * page:(p + 1) * page].sum(dim=-1) for p in range(3)], dim=-1)
    assert torch.allclose(per_head, brute, atol=1e-5) and torch.allclose(scores, brute.mean(dim=0), atol=1e-5)
    assert torch.allclose(scores.sum(), torch.tensor(1.0), atol=1e-5)  # a share of the question's attention
    usable = torch.ones(n, dtype=torch.bool)
    usable[:16] = False
    masked = retrieval.page_attention_scores(queries, keys, page, weights, usable=usable)
    assert masked[0] == 0 and torch.allclose(masked.sum(), torch.tensor(1.0), atol=1e-5)


def test_page_attention_finds_the_page_one_head_attends_to():
    """Head 0 attends almost only to one token of page 0 (its page-mates are anti-aligned, so page 0's mean
    key is 0); head 1, with a large query, barely prefers page 1 (60 % of its attention). The pooled query
    is linear in both, so head 1's magnitude picks page 1; attention mass (each head's softmax sums to 1)
    picks page 0, where one head looks."""
    d = 4
    keys = torch.zeros(1, 32, d)
    keys[0, :16, 0] = -0.4
    keys[0, 3, 0] = 6.0
    keys[0, 16:, 1] = 0.1
    queries = torch.zeros(2, 1, d)
    queries[0, 0, 0], queries[1, 0, 1] = 4.0, 8.0
    weights = torch.ones(1)
    pooled = retrieval.pooled_query(queries, 1, weights)
    mean_scores = retrieval.score_groups(pooled, retrieval.page_means(keys, 16))
    mass = retrieval.page_attention_scores(queries, keys, 16, weights)
    assert int(mean_scores.argmax()) == 1 and int(mass.argmax()) == 0


def test_contrast_pooling_removes_what_the_template_tokens_also_attend_to():
    """Every query (template and question) shares a large component along page 0's key (a position / sink
    bias); only the question's own tokens point at page 1. The question's pooled query picks page 0; minus
    the template's pooled query (``page_score="contrast"``) it picks page 1."""
    d = 4
    keys = torch.zeros(1, 32, d)
    keys[0, :16, 0] = 1.0
    keys[0, 16:, 1] = 1.0
    queries = torch.zeros(2, 6, d)
    queries[:, :, 0] = 5.0  # shared by all six tokens
    own = torch.tensor([False, True, True, True, False, False])
    queries[:, 1:4, 1] = 2.0  # the question's own tokens
    means = retrieval.page_means(keys, 16)
    question = retrieval.pooled_query(queries, 1, retrieval.question_weights(own))
    template = retrieval.pooled_query(queries, 1, retrieval.question_weights(~own))
    assert int(retrieval.score_groups(question, means).argmax()) == 0
    assert int(retrieval.score_groups(question - template, means).argmax()) == 1


def test_page_max_scores_are_the_best_token_of_each_page():
    torch.manual_seed(1)
    kv_heads, heads, n, d, page = 2, 6, 37, 8, 16
    keys, queries = torch.randn(kv_heads, n, d), torch.randn(heads, 4, d)
    pooled = retrieval.pooled_query(queries, kv_heads)
    scores = retrieval.page_max_scores(pooled, keys, page)
    tokens = torch.einsum("hnd,hd->hn", keys, pooled).mean(dim=0)
    brute = torch.stack([tokens[p * page:(p + 1) * page].max() for p in range(3)])
    assert torch.allclose(scores, brute, atol=1e-5)
    per_head = retrieval.page_max_scores(pooled, keys, page, per_head=True)
    assert per_head.shape == (kv_heads, 3)
    assert torch.allclose(per_head[1, 2], torch.einsum("nd,d->n", keys[1, 32:], pooled[1]).max(), atol=1e-5)
    usable = torch.ones(n, dtype=torch.bool)
    usable[:16] = False  # page 0 unusable, and page 1's best token hidden
    best_of_page1 = int(tokens[16:32].argmax()) + 16
    usable[best_of_page1] = False
    masked = retrieval.page_max_scores(pooled, keys, page, usable=usable)
    assert masked[0] == -torch.inf
    assert masked[1] < scores[1] and torch.isclose(masked[1], tokens[16:32][usable[16:32]].max())


def test_page_max_finds_the_one_matching_token_that_a_page_mean_dilutes():
    """One token aligned with the question among 15 unrelated ones: its page wins under ``max`` scoring,
    while under ``mean`` a page of moderately aligned tokens wins."""
    d = 8
    direction = torch.zeros(d)
    direction[0] = 1.0
    keys = torch.zeros(1, 32, d)
    keys[0, :16] = -0.5 * direction  # page 0: one strong match among anti-aligned tokens
    keys[0, 3] = 4.0 * direction
    keys[0, 16:] = 0.3 * direction  # page 1: uniformly mild
    pooled = direction[None]
    mean_scores = retrieval.score_groups(pooled, retrieval.page_means(keys, 16))
    max_scores = retrieval.page_max_scores(pooled, keys, 16)
    assert int(mean_scores.argmax()) == 1 and int(max_scores.argmax()) == 0


@pytest.mark.parametrize("score", ["max", "attention", "contrast"])
@pytest.mark.parametrize("per_head", [False, True])
def test_page_score_is_a_question_setting_with_the_same_context_size(per_head, score):
    frames = random_frames(24, seed=14)
    stream = stream_of("tiny-llava-onevision", frames, memory="vsb", retrieval="par", budget_tokens=160,
                       clip_frames=4, page_size=16, select_per_head=per_head, retrieval_min_tokens=0)
    stream.record_retrieval = True
    mean = stream.ask("where is the car?", max_new_tokens=1)
    mean_pages = stream.last_context()["pages"]
    assert mean.pages_retrieved < mean.pages_total
    stream.set_question_settings(page_score=score)
    best = stream.ask("where is the car?", max_new_tokens=1)
    max_pages = stream.last_context()["pages"]
    assert (best.pages_retrieved, best.pages_total, best.context_tokens) == \
        (mean.pages_retrieved, mean.pages_total, mean.context_tokens)
    assert len(max_pages) == len(mean_pages) and max_pages[0]["scores"].shape == mean_pages[0]["scores"].shape
    assert any(not torch.equal(a["scores"], b["scores"]) for a, b in zip(mean_pages, max_pages))
    windowed = stream.ask("and then?", max_new_tokens=1, since=6.0)  # pages outside the window never score
    assert windowed.span_start >= 6.0
