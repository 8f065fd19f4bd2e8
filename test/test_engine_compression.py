"""VSB, top-k and sliding-window selection, and the bounded, position-compacted memory."""

import math

import pytest
import torch
from engine_helpers import random_frames, stream_of, tiny_model

from livevlm_ros.engine import LiveVLMStream, EngineConfig, compression
from livevlm_ros.engine.decoder import observation_scores


def vsb_reference(scores: torch.Tensor, budget: int, capacity: int, share: float) -> list[int]:
    """The greedy walk of the method doc, one token at a time (slow, obviously right)."""
    n = scores.shape[0]
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    saliency = min(budget, int(round(share * budget)))
    kept = set(order[:saliency])
    buckets = max(1, budget // capacity)
    bucket = [i * buckets // n for i in range(n)]
    fill = [0] * buckets
    for i in kept:
        fill[bucket[i]] += 1
    for i in order[saliency:]:
        if len(kept) == budget:
            break
        if fill[bucket[i]] < capacity:
            kept.add(i)
            fill[bucket[i]] += 1
    for i in order:  # buckets full before the budget: best of the rest
        if len(kept) == budget:
            break
        kept.add(i)
    return sorted(kept)


@pytest.mark.parametrize("n,budget,capacity,share", [
    (40, 10, 1, 0.5), (97, 24, 2, 0.5), (64, 16, 4, 0.0), (64, 16, 1, 1.0), (33, 32, 1, 0.5), (500, 120, 3, 0.25),
])
def test_vsb_matches_greedy_reference(n, budget, capacity, share):
    generator = torch.Generator().manual_seed(n + budget)
    scores = torch.rand(3, n, generator=generator) ** 4  # skewed, like attention
    kept = compression.keep_vision_sink_buckets(scores, budget, capacity, share)
    assert kept.shape == (3, budget)
    for layer in range(3):
        assert kept[layer].tolist() == vsb_reference(scores[layer], budget, capacity, share)


def test_vsb_spreads_memory_where_top_k_crowds():
    # one hot region (local sinks) with high scores: top-k keeps only it, VSB keeps coverage
    n, budget = 200, 20
    scores = torch.full((1, n), 0.01)
    scores[0, 100:140] = torch.linspace(0.5, 1.0, 40)
    top = compression.keep_top_k(scores, budget)[0]
    vsb = compression.keep_vision_sink_buckets(scores, budget, 1, 0.5)[0]
    assert ((top >= 100) & (top < 140)).all()
    # saliency keeps the 10 hottest (one bucket); coverage then gives each other bucket at most one:
    # 3 more hot buckets, then 7 of the cold ones
    outside = int(((vsb < 100) | (vsb >= 140)).sum())
    assert outside == 7
    buckets = compression.bucket_of(n, budget, scores.device)[vsb]
    assert buckets.unique().numel() == 11


def test_keep_recent_and_under_budget_keep_everything():
    assert compression.keep_recent(2, 10, 4, torch.device("cpu")).tolist() == [[6, 7, 8, 9]] * 2
    scores = torch.rand(2, 5)
    assert compression.keep_top_k(scores, 8).tolist() == [list(range(5))] * 2
    assert compression.keep_vision_sink_buckets(scores, 8, 1, 0.5).tolist() == [list(range(5))] * 2


def test_observation_scores_match_full_attention_rows():
    torch.manual_seed(0)
    heads, kv_heads, total, r, d = 4, 2, 30, 5, 8
    q = torch.randn(heads, r, d)
    k = torch.randn(kv_heads, total, d)
    got = observation_scores(q, k, d ** -0.5)
    expanded = k.repeat_interleave(heads // kv_heads, dim=0)
    logits = torch.einsum("hrd,htd->hrt", q, expanded) * d ** -0.5
    causal = torch.arange(total)[None, :] <= (total - r + torch.arange(r))[:, None]
    weights = logits.masked_fill(~causal, float("-inf")).softmax(-1)  # [heads, r, T]
    per_query_head = weights.mean(dim=1).reshape(kv_heads, heads // kv_heads, total)
    assert got.shape == (kv_heads, total)
    assert torch.allclose(got, per_query_head.mean(dim=1), atol=1e-6)
    assert torch.allclose(got.mean(dim=0), weights.mean(dim=(0, 1)), atol=1e-6)
    assert math.isclose(float(got.sum()), kv_heads, rel_tol=1e-5)
    maxed = observation_scores(q, k, d ** -0.5, reduce_heads="max")
    assert torch.allclose(maxed, per_query_head.amax(dim=1), atol=1e-6)
    # scored in row blocks: the same as one block
    import livevlm_ros.engine.decoder as decoder_module
    block = decoder_module.SCORE_ROW_BLOCK
    try:
        decoder_module.SCORE_ROW_BLOCK = 2
        assert torch.allclose(observation_scores(q, k, d ** -0.5), got, atol=1e-6)
    finally:
        decoder_module.SCORE_ROW_BLOCK = block


@pytest.mark.parametrize("policy", ["vsb", "topk", "sliding", "rekv"])
def test_memory_bounded_and_positions_compacted_far_past_context(policy):
    """A stream 10x longer than the tiny model's trained context never uses a position past it."""
    model = tiny_model("tiny-llava-onevision")
    budget, short_term = 96, 2
    config = EngineConfig(memory=policy, retrieval="par", budget_tokens=budget, short_term_frames=short_term,
                          clip_frames=4, page_size=8)
    stream = LiveVLMStream(model, config)
    frames = random_frames(8, seed=1)
    tokens_per_frame = model.tokens_per_frame
    n_frames = 10 * model.max_position_embeddings // tokens_per_frame + 4
    sizes = []
    for i in range(n_frames):
        stream.ingest(frames[i % len(frames)], 0.25 * i)
        if (i + 1) % 40 == 0:
            sizes.append(stream.stats().device_kv_bytes)
            stream.ask("what happened?", max_new_tokens=3)
    stats = stream.stats()
    assert stats.frames_ingested + stats.frames_pending == n_frames
    assert stats.frames_ingested * tokens_per_frame >= 10 * model.max_position_embeddings
    assert stats.long_term_tokens <= budget
    assert stats.short_term_tokens <= short_term * tokens_per_frame
    assert stats.max_position_id < model.max_position_embeddings
    assert len(set(sizes[1:])) == 1, sizes  # flat once the budget is full
    if policy == "rekv":
        assert stats.host_kv_bytes > 0
    else:
        assert stats.host_kv_bytes == 0


def test_full_memory_grows_with_the_stream():
    frames = random_frames(12, seed=2)
    stream = stream_of("tiny-llava-onevision", frames[:6], memory="full", clip_frames=2)
    first = stream.stats().device_kv_bytes
    for i, frame in enumerate(frames[6:]):
        stream.ingest(frame, 10.0 + i)
    stream.flush()
    stats = stream.stats()
    per_token = first // (stats.prefix_tokens + 6 * 16)
    assert stats.tokens == stats.prefix_tokens + 12 * 16
    assert stats.device_kv_bytes == per_token * stats.tokens
    assert stats.budget is None


def test_vsb_survivors_stay_in_temporal_order_with_metadata():
    frames = random_frames(20, seed=4)
    stream = stream_of("tiny-smolvlm", frames, memory="vsb", budget_tokens=64, short_term_frames=1, clip_frames=4)
    memory = stream._memory
    for layer in range(memory.num_layers):
        times = memory.timestamp[layer, memory.prefix_len:]
        frames_idx = memory.frame_index[layer, memory.prefix_len:]
        assert torch.all(times[1:] >= times[:-1])
        assert torch.all(frames_idx[1:] >= frames_idx[:-1])
        assert torch.all(frames_idx >= 0)
    # different layers may keep different tokens
    stats = stream.stats()
    assert stats.long_term_tokens == 64
    assert stats.oldest_time is not None and stats.newest_time == pytest.approx(0.5 * 19)


@pytest.mark.parametrize("name", ["tiny-llava-onevision", "tiny-smolvlm"])
def test_default_budget_fits_the_context_and_positions_stay_inside(name):
    model = tiny_model(name)
    stream = LiveVLMStream(model, EngineConfig(memory="vsb", clip_frames=8))
    assert 1 <= stream.budget < 12000  # the paper's 12,000 does not fit a 1,024-position model
    for i, frame in enumerate(random_frames(60, seed=13)):
        stream.ingest(frame, 0.5 * i)
    stream.ask("what happened?", max_new_tokens=stream.config.max_new_tokens)
    stats = stream.stats()
    assert stats.long_term_tokens == stream.budget
    assert stats.max_position_id < model.max_position_embeddings


def test_budget_that_cannot_fit_is_a_clear_config_error():
    from livevlm_ros.engine import ConfigError

    with pytest.raises(ConfigError, match="does not fit .* 1024 positions"):
        LiveVLMStream(tiny_model("tiny-llava-onevision"), EngineConfig(budget_tokens=5000))
    with pytest.raises(ConfigError, match="at most 0 long-term tokens"):
        LiveVLMStream(tiny_model("tiny-llava-onevision"), EngineConfig(clip_frames=64))
    # the unbounded baseline has no budget to check
    assert LiveVLMStream(tiny_model("tiny-llava-onevision"), EngineConfig(memory="full")).stats().budget is None


def test_question_that_would_pass_the_context_is_rejected():
    from livevlm_ros.engine import InvalidQuestionError

    stream = stream_of("tiny-llava-onevision", random_frames(30, seed=14), budget_tokens=400, clip_frames=4)
    with pytest.raises(InvalidQuestionError, match="do not fit"):
        stream.ask("why? " * 300, max_new_tokens=64)
