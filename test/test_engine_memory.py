"""Long-term memory: stream positions, VSB coverage over the stream, structure tokens, rotation and compaction."""

import math
import subprocess
import sys

import pytest
import torch
from engine_helpers import random_frames, stream_of, tiny_model

from livevlm_ros.engine import EngineConfig, LiveVLMStream, compression
from livevlm_ros.engine.config import MEMORY_POLICIES
from livevlm_ros.engine.policies import POLICIES, Region, make_policy

# ----------------------------------------------------------------------------- long-run coverage (pure tensors)
#: The reviewer's simulation: budget 1,200 tokens, 8-frame clips of 20-token frames, 100 clips, random scores.
BUDGET, FRAME_TOKENS, CLIP_FRAMES, CLIPS = 1200, 20, 8, 100


def simulate_memory(policy_name: str, seed: int = 0, **config) -> torch.Tensor:
    """Stream positions kept after ``CLIPS`` clips, compressing with the policy object after each clip."""
    policy = make_policy(EngineConfig(memory=policy_name, **config))
    generator = torch.Generator().manual_seed(seed)
    kept = torch.empty(1, 0, dtype=torch.long)
    clip = CLIP_FRAMES * FRAME_TOKENS
    for i in range(CLIPS):
        kept = torch.cat([kept, torch.arange(i * clip, (i + 1) * clip)[None]], dim=1)
        if kept.shape[1] <= BUDGET:
            continue
        region = Region(scores=torch.rand(kept.shape, generator=generator), position=kept,
                        frame=kept // FRAME_TOKENS, vision=torch.ones_like(kept, dtype=torch.bool))
        kept = kept.gather(1, policy.select(region, BUDGET))
    return kept[0]


def quarter_shares(positions: torch.Tensor) -> list:
    total = CLIPS * CLIP_FRAMES * FRAME_TOKENS
    return (torch.bincount(positions * 4 // total, minlength=4).double() / positions.numel()).tolist()


def test_vsb_over_stream_positions_covers_the_whole_stream():
    arms = {"vsb": ("vsb", {}), "vsb-memory": ("vsb", {"vsb_buckets": "memory"}), "sliding": ("sliding", {}),
            "topk": ("topk", {}), "random": ("random", {})}
    shares = {arm: quarter_shares(simulate_memory(policy, **extra)) for arm, (policy, extra) in arms.items()}
    print("memory share per quarter of the stream, oldest first:", {k: [round(x, 3) for x in v]
                                                                    for k, v in shares.items()})
    assert min(shares["vsb"]) >= 0.10, shares["vsb"]  # coverage lasts however long the stream runs
    assert shares["sliding"][0] == 0.0  # a window forgets the start
    assert shares["vsb-memory"][0] < 0.02  # the old reading decays exponentially (the reviewer's finding)
    assert all(math.isclose(sum(v), 1.0) for v in shares.values())


def test_vsb_stream_buckets_match_the_greedy_reference_on_positions():
    # with positions 0..n-1 (no gaps), stream buckets equal memory buckets
    scores = torch.rand(2, 90, generator=torch.Generator().manual_seed(5))
    positions = torch.arange(90).expand(2, -1)
    assert torch.equal(compression.keep_vision_sink_buckets(scores, 30, 1, 0.5),
                       compression.keep_vision_sink_buckets(scores, 30, 1, 0.5, position=positions))
    # with a gap, the buckets follow the stream: the old stretch (positions 0..9) keeps its share
    gapped = torch.cat([torch.arange(10), torch.arange(1000, 1080)]).expand(2, -1)
    scores = torch.cat([torch.zeros(2, 10), torch.ones(2, 80)], dim=1)
    kept = compression.keep_vision_sink_buckets(scores, 20, 1, 0.5, position=gapped)
    assert int((kept < 10).sum(dim=1).min()) >= 1
    assert int((compression.keep_vision_sink_buckets(scores, 20, 1, 0.5) < 10).sum()) == 0


# ----------------------------------------------------------------------------- stream positions through the engine
@pytest.mark.parametrize("policy", ["vsb", "topk", "sliding", "random", "rekv"])
def test_every_memory_token_keeps_its_stream_position(policy):
    model = tiny_model("tiny-llava-onevision")  # 16 tokens per frame, no structure tokens
    stream = stream_of("tiny-llava-onevision", random_frames(30, seed=2), memory=policy, budget_tokens=80,
                       clip_frames=4, short_term_frames=1)
    stream.flush()
    layout = stream.memory_layout()
    prefix = layout.prefix_len
    frames, positions = layout.frame_index[..., prefix:], layout.position[..., prefix:]
    per_frame = model.tokens_per_frame
    assert torch.equal((positions - prefix) // per_frame, frames)
    assert torch.all(positions[..., 1:] > positions[..., :-1])
    assert layout.stream_tokens == prefix + 30 * per_frame
    if policy == "rekv":  # offloaded tokens carry theirs too
        host = stream._memory.host
        assert torch.equal((host.positions - prefix) // per_frame,
                           torch.repeat_interleave(torch.tensor(host.frame_ids), 16))
    stream.reset()
    stream.ingest(random_frames(1)[0], 0.0)
    stream.flush()
    layout = stream.memory_layout()
    assert layout.position[0, 0, prefix:].tolist() == list(range(prefix, prefix + per_frame))


def test_coverage_is_reported_and_spans_the_stream():
    stream = stream_of("tiny-llava-onevision", random_frames(200, seed=3), memory="vsb", budget_tokens=320,
                       clip_frames=8, short_term_frames=1)
    coverage = stream.stats().coverage
    assert len(coverage) == 10 and math.isclose(sum(coverage), 1.0)
    assert min(coverage[:5]) > 0.0  # the first half of the stream is still in memory
    sliding = stream_of("tiny-llava-onevision", random_frames(200, seed=3), memory="sliding", budget_tokens=320,
                        clip_frames=8, short_term_frames=1).stats().coverage
    assert sum(sliding[:8]) == 0.0
    assert stream_of("tiny-llava-onevision", [], memory="vsb").stats().coverage == [0.0] * 10


# ----------------------------------------------------------------------------- structure tokens
@pytest.mark.parametrize("policy,extra", [("vsb", {}), ("topk", {}), ("sliding", {}), ("random", {}),
                                          ("vsb", {"keep_unit": "frame"}), ("vsb", {"select_per_head": True})])
def test_structure_tokens_stay_while_their_frame_has_vision_tokens(policy, extra):
    model = tiny_model("tiny-smolvlm")
    stream = stream_of("tiny-smolvlm", random_frames(40, seed=4), memory=policy, budget_tokens=150, clip_frames=4,
                       short_term_frames=1, **extra)
    layout = stream.memory_layout()
    per_frame = len(model.tokenize("\nFrame from 00:00:" + model.image_prompt))
    structure_per_frame = per_frame - model.image_seq_len
    assert structure_per_frame > 0
    prefix = layout.prefix_len
    frame, vision = layout.frame_index[..., prefix:], layout.vision[..., prefix:]
    for lane_frames, lane_vision in zip(frame.reshape(-1, frame.shape[-1]), vision.reshape(-1, vision.shape[-1])):
        with_vision = set(lane_frames[lane_vision].tolist())
        for f in with_vision:
            structure = int(((lane_frames == f) & ~lane_vision).sum())
            assert structure >= structure_per_frame - 1, (f, structure)  # time text may be a token shorter
    if extra.get("keep_unit") == "frame":  # whole frames, except at most one cut at the budget boundary
        counts = torch.bincount(frame[0, 0] - frame[0, 0].min())
        assert int(((counts > 0) & (counts < per_frame - 1)).sum()) <= 1


# ----------------------------------------------------------------------------- PaR pools over the question
def test_par_pools_over_the_question_tokens_only(monkeypatch):
    from livevlm_ros.engine import retrieval
    from livevlm_ros.engine.context import ContextBuilder

    queries = torch.randn(4, 6, 8)
    own = torch.tensor([False, True, True, False, True, False])
    assert torch.allclose(retrieval.pooled_query(queries, 2, retrieval.question_weights(own)),
                          retrieval.pooled_query(queries[:, own], 2), atol=1e-6)
    stream = stream_of("tiny-smolvlm", random_frames(20, seed=5), budget_tokens=120, clip_frames=4)
    seen = []
    original = ContextBuilder.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.own.clone())

    monkeypatch.setattr(ContextBuilder, "__init__", spy)
    stream.ask("where is the car?", max_new_tokens=1)
    own_tokens = stream.model.tokenize("where is the car?")
    assert int(seen[0].sum()) == len(own_tokens) and seen[0].numel() > len(own_tokens)


def test_par_pe_page_means_use_original_stream_positions():
    stream = stream_of("tiny-llava-onevision", random_frames(40, seed=6), memory="vsb", retrieval="par-pe",
                       budget_tokens=96, clip_frames=4, page_size=8)
    memory = stream._memory
    region = slice(memory.prefix_len, stream._short_term_start())
    expected = compression_free_page_means(stream._rotary.rotate_at(memory.keys[:, :, region],
                                                                    memory.position[:, :, region]), 8)
    assert torch.allclose(stream._page_means_now(), expected, atol=1e-5)
    positions = memory.position[:, :, region]
    assert int(positions.max()) > memory.length  # original positions, not compacted ones


def compression_free_page_means(keys: torch.Tensor, page: int) -> torch.Tensor:
    n = keys.shape[2]
    return torch.stack([keys[:, :, i:i + page].float().mean(dim=2) for i in range(0, n, page)], dim=2)


# ----------------------------------------------------------------------------- rotation and compaction
def test_rotated_keys_always_match_their_compacted_positions_and_clips_rotate_only_new_tokens(monkeypatch):
    stream = stream_of("tiny-llava-onevision", random_frames(24, seed=7), memory="vsb", budget_tokens=96,
                       clip_frames=4, short_term_frames=1)
    memory = stream._memory
    assert torch.allclose(memory.rotated_keys, stream._rotary.rotate(memory.keys, 0), atol=1e-6)
    rotated, compactions = [], []
    rotate, keep = type(stream._rotary).rotate, type(memory).keep

    def rotate_spy(self, x, start):
        rotated.append(x.shape[-2])
        return rotate(self, x, start)

    def keep_spy(self, *args):
        compactions.append(1)
        return keep(self, *args)

    monkeypatch.setattr(type(stream._rotary), "rotate", rotate_spy)
    monkeypatch.setattr(type(memory), "keep", keep_spy)
    pointers = set()
    for i, frame in enumerate(random_frames(16, seed=8)):
        stream.ingest(frame, 100.0 + i)
        pointers.add(memory._buf["keys"].data_ptr())
    clip_tokens = 4 * 16
    clip_rotations = [r for r in rotated if r <= clip_tokens]
    memory_rotations = [r for r in rotated if r > clip_tokens]
    assert len(clip_rotations) == 4 * 2 * 2  # 4 clips x 2 layers x (queries, keys): new tokens only
    assert len(memory_rotations) == len(compactions) == 4  # the memory is re-rotated once per compaction
    assert len(pointers) == 2  # double-buffered: compaction swaps two preallocated buffers
    assert torch.allclose(memory.rotated_keys, stream._rotary.rotate(memory.keys, 0), atol=1e-6)


def test_policies_are_objects_chosen_once_from_the_config():
    assert set(POLICIES) == set(MEMORY_POLICIES)
    flags = {name: (cls.needs_scores, cls.evicts_to_host, cls.bounded) for name, cls in POLICIES.items()}
    assert flags["vsb"] == (True, False, True) and flags["topk"] == (True, False, True)
    assert flags["rekv"] == (False, True, True) and flags["full"] == (False, False, False)
    assert flags["sliding"] == flags["random"] == (False, False, True)
    stream = LiveVLMStream(tiny_model("tiny-smolvlm"), EngineConfig(memory="random"))
    assert type(stream.policy).__name__ == "RandomKeeping"


def test_random_policy_is_seeded():
    a = stream_of("tiny-llava-onevision", random_frames(20, seed=9), memory="random", budget_tokens=64, seed=3)
    b = stream_of("tiny-llava-onevision", random_frames(20, seed=9), memory="random", budget_tokens=64, seed=3)
    c = stream_of("tiny-llava-onevision", random_frames(20, seed=9), memory="random", budget_tokens=64, seed=4)
    assert torch.equal(a.memory_layout().position, b.memory_layout().position)
    assert not torch.equal(a.memory_layout().position, c.memory_layout().position)


@pytest.mark.parametrize("extra", [dict(score_window="clip"), dict(score_heads="max"), dict(score_decay=0.5),
                                   dict(select_per_head=True), dict(keep_unit="frame")])
def test_score_variants_stay_within_budget_and_answer(extra):
    stream = stream_of("tiny-smolvlm", random_frames(30, seed=10), memory="vsb", budget_tokens=120, clip_frames=4,
                       retrieval_min_tokens=0, **extra)
    stats = stream.stats()
    assert stats.long_term_tokens == 120
    result = stream.ask("what happened?", max_new_tokens=2)
    assert result.pages_retrieved == math.ceil(0.4 * math.ceil(120 / 16))
    if extra.get("select_per_head"):
        layout = stream.memory_layout()
        assert not torch.equal(layout.position[:, 0], layout.position[:, 1])  # heads keep different tokens


def test_accumulated_importance_decays_old_scores():
    stream = stream_of("tiny-llava-onevision", random_frames(12, seed=11), memory="vsb", budget_tokens=400,
                       clip_frames=4, score_decay=0.5)
    importance = stream.memory_layout().importance[..., stream._memory.prefix_len:]
    assert float(importance.sum()) > 0  # accumulated even while under budget


# ----------------------------------------------------------------------------- the pure-module promise
def test_pure_ros_modules_import_neither_torch_nor_rclpy():
    code = ("import sys\nimport livevlm_ros.ros.parameters, livevlm_ros.ros.questions, livevlm_ros.io.frame_sampler\n"
            "import livevlm_ros.engine.config, livevlm_ros.engine.question\n"
            "print(sorted(m for m in ('torch', 'rclpy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
