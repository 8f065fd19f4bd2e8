"""The engine on CUDA in float32 / float16 / bfloat16 (runs where a GPU is present; CI has none)."""

import pytest
import torch
from engine_helpers import random_frames, stream_of, tiny_model

from livevlm_ros.engine import TINY_MODELS, EngineConfig, LiveVLMStream, load_video_llm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (CI and the build machines have none)")

QUESTION = "what is in view?"


@pytest.mark.parametrize("name", TINY_MODELS)
def test_equivalence_cuda_float32_matches_generate_and_cpu(name):
    frames = random_frames(6, seed=21)
    times = [0.5 * i for i in range(6)]
    model = load_video_llm(name, device="cuda", dtype="float32")
    stream = LiveVLMStream(model, EngineConfig(memory="full", retrieval="none", clip_frames=4))
    for frame, t in zip(frames, times):
        stream.ingest(frame, t)
    logits = stream.first_token_logits(QUESTION)
    inputs = model.oracle_inputs(frames, times, QUESTION, None)
    with torch.inference_mode():
        out = model.model.generate(**inputs, max_new_tokens=1, do_sample=False, output_logits=True,
                                   return_dict_in_generate=True)
    assert torch.allclose(logits, out.logits[0][0].float(), atol=1e-4, rtol=0)
    cpu = stream_of(name, frames, times, memory="full", retrieval="none", clip_frames=4)
    assert torch.allclose(logits.cpu(), cpu.first_token_logits(QUESTION), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_streaming_on_cuda(name, dtype):
    model = load_video_llm(name, device="cuda", dtype=dtype)
    stream = LiveVLMStream(model, EngineConfig(memory="vsb", retrieval="par", budget_tokens=64, clip_frames=4,
                                               page_size=8))
    for i, frame in enumerate(random_frames(40, seed=22)):
        stream.ingest(frame, 0.25 * i)
    result = stream.ask(QUESTION, max_new_tokens=6)
    stats = stream.stats()
    assert stream._memory.keys.dtype == getattr(torch, dtype) and stream._memory.keys.is_cuda
    assert stats.long_term_tokens == 64 and stats.max_position_id < model.max_position_embeddings
    assert result.new_tokens <= 6 and result.pages_retrieved == 4
    # the CPU model is unaffected (tiny models are built per load)
    assert tiny_model(name).device.type == "cpu"


def _kernel_names(function) -> list:
    """Names of the CUDA kernels ``function()`` launched (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        function()
        torch.cuda.synchronize()
    return [event.key for event in prof.key_averages() if event.device_type.name == "CUDA"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_clip_attention_runs_a_fused_kernel_not_the_math_fallback(dtype):
    """A clip attends over memory + itself through SDPA's flash or memory-efficient kernel on CUDA."""
    from livevlm_ros.engine import decoder

    generator = torch.Generator(device="cuda").manual_seed(0)
    heads, kv_heads, n, total, d = 8, 2, 64, 400, 64
    q = torch.randn(heads, n, d, device="cuda", generator=generator).to(getattr(torch, dtype))
    k = torch.randn(kv_heads, total, d, device="cuda", generator=generator).to(q.dtype)
    v = torch.randn(kv_heads, total, d, device="cuda", generator=generator).to(q.dtype)
    names = " ".join(_kernel_names(lambda: decoder.attend_causal(q, k, v, d ** -0.5))).lower()
    assert any(word in names for word in ("flash", "fmha", "efficient", "cutlass")), names
    # same result as the dense-mask computation in float32
    mask = torch.ones(n, total, dtype=torch.bool, device="cuda").tril(diagonal=total - n)
    reference = torch.nn.functional.scaled_dot_product_attention(
        q.float()[None], k.float().repeat_interleave(4, 0)[None], v.float().repeat_interleave(4, 0)[None],
        attn_mask=mask, scale=d ** -0.5)[0].transpose(0, 1).reshape(n, heads * d)
    tolerance = 1e-4 if dtype == "float32" else 2e-2
    assert torch.allclose(decoder.attend_causal(q, k, v, d ** -0.5).float(), reference, atol=tolerance)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_no_cuda_sync_before_the_first_token_but_its_read(name):
    """torch.cuda.set_sync_debug_mode("warn") warns on every host sync: before the first token, only its read."""
    import warnings

    model = load_video_llm(name, device="cuda", dtype="float16")
    stream = LiveVLMStream(model, EngineConfig(memory="vsb", retrieval="par", budget_tokens=64, clip_frames=4,
                                               page_size=8))
    for i, frame in enumerate(random_frames(24, seed=23)):
        stream.ingest(frame, 0.25 * i)
    stream.flush()
    torch.cuda.synchronize()
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            stream.ask(QUESTION, max_new_tokens=2, on_token=lambda piece: seen.append(len(caught)))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs_before_first = [w for w in caught[: seen[0]] if "synchroniz" in str(w.message).lower()]
    assert len(syncs_before_first) <= 1, [str(w.message) for w in syncs_before_first]


def test_decode_step_is_capturable_in_a_cuda_graph():
    """decode_one_token over a preallocated AnswerCache captures in a CUDA graph and replays to the same logits."""
    from livevlm_ros.engine import generate

    model = load_video_llm("tiny-llava-onevision", device="cuda", dtype="float32")
    stream = LiveVLMStream(model, EngineConfig(memory="vsb", retrieval="none", budget_tokens=64, clip_frames=4))
    for i, frame in enumerate(random_frames(12, seed=24)):
        stream.ingest(frame, 0.25 * i)
    from livevlm_ros.engine.question import AskRequest

    request = AskRequest.build(QUESTION, stream.config, max_new_tokens=8)
    with torch.inference_mode():
        cache, logits, _ = stream._begin(request, 8)
        token = logits.argmax().reshape(1)
        eager_cache, _, _ = stream._begin(request, 8)
        expected = generate.decode_one_token(model, token.clone(), eager_cache)
        static_token = token.clone()
        warm = torch.cuda.Stream()
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm):  # warm-up outside the graph, as CUDA graphs require
            saved = cache.checkpoint()
            generate.decode_one_token(model, static_token, cache)
            cache.rewind(saved)
        torch.cuda.current_stream().wait_stream(warm)
        graph = torch.cuda.CUDAGraph()
        saved = cache.checkpoint()
        with torch.cuda.graph(graph):
            static_logits = generate.decode_one_token(model, static_token, cache)
        cache.rewind(saved)
        graph.replay()
        torch.cuda.synchronize()
    assert torch.allclose(static_logits, expected, atol=1e-4)
