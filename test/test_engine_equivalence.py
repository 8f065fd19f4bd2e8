"""Correctness oracle: memory=full + retrieval=none streams exactly what transformers' generate() computes."""

import pytest
import torch
from engine_helpers import random_frames, stream_of, tiny_model

from livevlm_ros.engine import TINY_MODELS

QUESTION = "What moved in front of the camera?"
N_FRAMES = 7
MAX_NEW = 12


def oracle(name: str, frames, times):
    """(greedy answer token ids, first-answer-token logits) from model.generate / forward."""
    model = tiny_model(name)
    inputs = model.oracle_inputs(frames, times, QUESTION, None)
    with torch.inference_mode():
        out = model.model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, output_logits=True,
                                   return_dict_in_generate=True)
    prompt_len = inputs["input_ids"].shape[1]
    ids = out.sequences[0, prompt_len:].tolist()
    eos = model.eos_token_ids
    answer_ids = []
    for token in ids:
        if token in eos:
            break
        answer_ids.append(token)
    return answer_ids, out.logits[0][0].float()


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("clip_frames", [1, 3, 32])
def test_equivalence_full_memory_matches_generate(name, clip_frames):
    frames = random_frames(N_FRAMES, seed=3)
    times = [0.4 * i for i in range(N_FRAMES)]
    expected_ids, expected_logits = oracle(name, frames, times)
    stream = stream_of(name, frames, times, memory="full", retrieval="none", clip_frames=clip_frames)

    logits = stream.first_token_logits(QUESTION)
    assert logits.shape == expected_logits.shape
    assert torch.allclose(logits, expected_logits, atol=1e-4, rtol=0), (logits - expected_logits).abs().max()
    # the oracle is only meaningful where greedy has a clear winner
    top2 = expected_logits.topk(2).values
    assert float(top2[0] - top2[1]) > 1e-3

    result = stream.ask(QUESTION, max_new_tokens=MAX_NEW)
    model = tiny_model(name)
    assert result.answer == model.decode(expected_ids)
    assert result.new_tokens == len(expected_ids)
    assert result.frames_seen == N_FRAMES


@pytest.mark.parametrize("name", TINY_MODELS)
def test_equivalence_token_ids_identical_across_clip_sizes(name):
    frames = random_frames(N_FRAMES, seed=5)
    answers = set()
    for clip in (1, 3, 32):
        pieces = []
        stream = stream_of(name, frames, memory="full", retrieval="none", clip_frames=clip)
        stream.ask(QUESTION, max_new_tokens=MAX_NEW, on_token=pieces.append)
        answers.add("".join(pieces))
    assert len(answers) == 1
