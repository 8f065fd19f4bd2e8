"""The engine core: mask-free clip attention, no host sync before the first token, sampling, option scoring."""

import math

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import assert_same_memory, memory_snapshot, random_frames, stream_of, tiny_model
from torch.overrides import TorchFunctionMode

from livevlm_ros.engine import EngineConfig, InvalidQuestionError, LiveVLMStream, decoder
from livevlm_ros.engine.generate import Sampling


# ----------------------------------------------------------------------------- attention without dense masks
def dense_mask_attention(queries, keys, values, scale):
    """The previous implementation: one SDPA call with a dense [n, T] boolean mask."""
    heads, n, d = queries.shape
    total = keys.shape[1]
    mask = torch.ones(n, total, dtype=torch.bool).tril(diagonal=total - n)
    k = keys.repeat_interleave(heads // keys.shape[0], dim=0)
    v = values.repeat_interleave(heads // keys.shape[0], dim=0)
    out = F.scaled_dot_product_attention(queries[None], k[None], v[None], attn_mask=mask, scale=scale)
    return out[0].transpose(0, 1).reshape(n, heads * d)


@pytest.mark.parametrize("n,total", [(1, 1), (1, 40), (7, 7), (5, 60), (300, 900), (600, 601)])
def test_clip_attention_equals_the_dense_mask_reference(n, total):
    generator = torch.Generator().manual_seed(n + total)
    heads, kv_heads, d = 6, 2, 16
    q = torch.randn(heads, n, d, generator=generator)
    k = torch.randn(kv_heads, total, d, generator=generator)
    v = torch.randn(kv_heads, total, d, generator=generator)
    got = decoder.attend_causal(q, k, v, d ** -0.5)
    assert torch.allclose(got, dense_mask_attention(q, k, v, d ** -0.5), atol=1e-5, rtol=0)


def test_clip_attention_mask_is_bounded_by_the_query_block(monkeypatch):
    """No mask the clip attention builds grows with n x T: at most CPU_QUERY_BLOCK x T booleans."""
    sizes = []
    original = F.scaled_dot_product_attention

    def spy(*args, attn_mask=None, **kwargs):
        if attn_mask is not None:
            sizes.append(attn_mask.numel())
        return original(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(decoder.F, "scaled_dot_product_attention", spy)
    n, total = 3 * decoder.CPU_QUERY_BLOCK, 5000
    decoder.attend_causal(torch.randn(4, n, 8), torch.randn(2, total, 8), torch.randn(2, total, 8), 0.3)
    assert len(sizes) == 3 and max(sizes) <= decoder.CPU_QUERY_BLOCK * total


# ----------------------------------------------------------------------------- no host sync before the first token
#: Calls that make the host wait for the device (a CUDA sync), or that need one for their output size.
SYNCING = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
           torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero, torch.Tensor.cpu,
           torch.unique, torch.Tensor.unique, torch.masked_select, torch.Tensor.masked_select, torch.argwhere,
           torch.bincount, torch.Tensor.bincount, torch.Tensor.numpy}


class SyncSpy(TorchFunctionMode):
    """Counts host-syncing tensor calls (on CPU nothing waits, but the same calls would on CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []
        self.active = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.active:
            if func in SYNCING:
                self.calls.append(func.__name__)
            elif func is torch.Tensor.__getitem__:
                index = args[1] if isinstance(args[1], tuple) else (args[1],)
                if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                    self.calls.append("boolean indexing")
            elif func in (torch.repeat_interleave, torch.Tensor.repeat_interleave) and len(args) > 1 \
                    and isinstance(args[1], torch.Tensor):
                self.calls.append("repeat_interleave by a tensor")
        return func(*args, **kwargs)


@pytest.mark.parametrize("window", [{}, {"since": 3.0}, {"since": 1.0, "until": 6.0}])
@pytest.mark.parametrize("name", ["tiny-smolvlm", "tiny-llava-onevision"])
def test_no_host_sync_before_the_first_token_but_the_one_that_reads_it(name, window):
    stream = stream_of(name, random_frames(32, seed=1), memory="vsb", retrieval="par", budget_tokens=120,
                       clip_frames=4)
    stream.flush()
    spy = SyncSpy()
    per_token = []

    def on_token(piece):
        if spy.active:
            spy.active = False
            per_token.append(len(spy.calls))

    with spy:
        result = stream.ask("what is there?", max_new_tokens=4, on_token=on_token, **window)
    assert result.new_tokens >= 1
    assert spy.calls[:per_token[0]] == ["tolist"]  # the read of the first token (with the window's count)


def test_a_decode_step_reads_the_device_once():
    stream = stream_of("tiny-llava-onevision", random_frames(8, seed=2), clip_frames=4)
    model = stream.model
    stream.flush()
    spy = SyncSpy()
    tokens = []

    def on_token(piece):
        tokens.append(len(spy.calls))

    with spy:
        stream.ask("what?", max_new_tokens=6, on_token=on_token)
    steps = [b - a for a, b in zip(tokens, tokens[1:])]
    assert steps and all(step == 1 for step in steps), steps  # one token read per step
    assert model.eos_token_ids  # (the answer may stop early; every step it took read once)


# ----------------------------------------------------------------------------- sampling
def test_sampling_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    picked = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        picked.add(int(Sampling(temperature=1.0, top_p=0.7).pick(logits, generator)))
    assert picked == {0, 1}
    assert int(Sampling().pick(logits, None)) == 0  # greedy


# ----------------------------------------------------------------------------- option scoring
@pytest.mark.parametrize("name", ["tiny-smolvlm", "tiny-llava-onevision"])
def test_option_logprobs_match_the_answer_path_and_leave_memory_alone(name):
    stream = stream_of(name, random_frames(20, seed=3), memory="vsb", budget_tokens=120, clip_frames=4)
    stream.flush()
    before = memory_snapshot(stream)
    question = "what colour?"
    options = ["red", "a blue car", "x"]
    scores = stream.option_logprobs(question, options)
    assert_same_memory(before, memory_snapshot(stream))
    first = stream.first_token_logits(question).log_softmax(dim=-1)
    ids = [stream.model.tokenize(option) for option in options]
    assert math.isclose(scores[2], float(first[ids[2][0]]), abs_tol=1e-4)
    # teacher forcing equals greedy decoding's own log-probabilities along its answer
    greedy_ids = stream.ask(question, max_new_tokens=5).token_ids
    assert greedy_ids  # random weights rarely pick end-of-sequence first
    rows = stream.continuation_logprobs(question, [greedy_ids])[0]
    assert rows.shape == (len(greedy_ids), first.shape[0])
    assert torch.equal(rows.argmax(dim=-1), torch.tensor(greedy_ids))
    assert scores == stream.option_logprobs(question, options)  # deterministic, order independent of calls
    with pytest.raises(InvalidQuestionError):
        stream.option_logprobs(question, ["ok", ""])


def test_ingest_embeddings_marks_structure_tokens():
    model = tiny_model("tiny-llava-onevision")
    stream = LiveVLMStream(model, EngineConfig(clip_frames=1, memory="vsb", budget_tokens=64))
    embeds = model.embed_text("[t=1] a red car")
    vision = torch.tensor([False] * 5 + [True] * (embeds.shape[0] - 5))
    stream.ingest_embeddings(embeds, 1.0, vision=vision)
    layout = stream.memory_layout()
    assert layout.vision[0, 0, layout.prefix_len:].tolist() == vision.tolist()
    with pytest.raises(Exception, match="vision"):
        stream.ingest_embeddings(embeds, 2.0, vision=vision[:3])


def test_question_settings_change_on_an_ingested_stream_like_a_fresh_stream():
    from livevlm_ros.engine import ConfigError

    frames = random_frames(30, seed=4)
    common = dict(memory="vsb", budget_tokens=96, clip_frames=4)
    switched = stream_of("tiny-llava-onevision", frames, retrieval="par", **common)
    for settings in (dict(retrieval="par-pe"), dict(retrieval="none"), dict(retrieval="par", page_size=4,
                                                                            retrieval_ratio=0.8)):
        switched.set_question_settings(**settings)
        fresh = stream_of("tiny-llava-onevision", frames, **{**common, "retrieval": "par", **settings})
        assert torch.allclose(switched.first_token_logits("what?"), fresh.first_token_logits("what?"), atol=1e-6)
    with pytest.raises(ConfigError, match="question-time"):
        switched.set_question_settings(budget_tokens=10)


def test_par_pe_from_the_first_clip_and_the_last_context_record():
    stream = stream_of("tiny-smolvlm", random_frames(4, seed=5), memory="vsb", retrieval="par-pe", clip_frames=2,
                       budget_tokens=200)
    assert stream.last_context() is None
    stream.record_retrieval = True
    for i, frame in enumerate(random_frames(20, seed=6)):
        stream.ingest(frame, 10.0 + i)
    result = stream.ask("what?", max_new_tokens=1)
    context = stream.last_context()
    layers = stream.model.num_layers
    assert context["frames"].shape[0] == layers and context["valid"].shape == context["times"].shape
    assert len(context["pages"]) == layers
    assert all(p["chosen"].numel() == result.pages_retrieved for p in context["pages"])
