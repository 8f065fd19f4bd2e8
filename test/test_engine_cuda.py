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
