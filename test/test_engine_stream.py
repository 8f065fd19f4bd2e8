"""Stream behaviour: asking is read-only, bad input changes nothing, streaming/cancel/sampling, reset."""

import json
import math

import numpy as np
import pytest
import torch
from engine_helpers import assert_same_memory, memory_snapshot, random_frames, stream_of, tiny_model

from livevlm_ros.engine import (
    ConfigError,
    EmptyMemoryError,
    EngineConfig,
    InvalidFrameError,
    InvalidQuestionError,
    LiveVLMStream,
    ModelLoadError,
    TimestampError,
    load_video_llm,
)

VSB = dict(memory="vsb", retrieval="par", budget_tokens=48, clip_frames=3, page_size=8)


@pytest.mark.parametrize("name", ["tiny-llava-onevision", "tiny-smolvlm"])
def test_asking_leaves_memory_exactly_as_it_was(name):
    frames = random_frames(14, seed=11)
    asked = stream_of(name, frames[:10], **VSB)
    never_asked = stream_of(name, frames[:10], **VSB)
    asked.flush()
    before = memory_snapshot(asked)
    asked.ask("what is there?", max_new_tokens=4)
    asked.ask("and before?", max_new_tokens=4, since=1.0, until=3.0)
    assert_same_memory(before, memory_snapshot(asked))
    # the stream continues as if no question had been asked
    never_asked.flush()
    for i, frame in enumerate(frames[10:]):
        asked.ingest(frame, 10.0 + i)
        never_asked.ingest(frame, 10.0 + i)
    a = asked.ask("final?", max_new_tokens=6)
    b = never_asked.ask("final?", max_new_tokens=6)
    assert a.answer == b.answer
    assert_same_memory(memory_snapshot(asked), memory_snapshot(never_asked))


def test_ask_flushes_pending_frames_first():
    stream = stream_of("tiny-llava-onevision", random_frames(5), clip_frames=4)
    assert stream.pending_frames == 1
    result = stream.ask("what now?", max_new_tokens=2)
    assert stream.pending_frames == 0 and result.frames_seen == 5


@pytest.mark.parametrize("frame,match", [
    (np.zeros((10, 10), np.uint8), "shape"),
    (np.zeros((10, 10, 4), np.uint8), "shape"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    ([[0, 0, 0]], "numpy"),
])
def test_bad_frames_raise_and_change_nothing(frame, match):
    stream = stream_of("tiny-llava-onevision", random_frames(4), clip_frames=3)
    before = memory_snapshot(stream)
    with pytest.raises(InvalidFrameError, match=match):
        stream.ingest(frame, 100.0)
    assert_same_memory(before, memory_snapshot(stream))


@pytest.mark.parametrize("timestamp", [0.5, float("nan"), float("inf"), "1.0"])
def test_bad_timestamps_raise_and_change_nothing(timestamp):
    stream = stream_of("tiny-llava-onevision", random_frames(4), clip_frames=3)  # last time 1.5
    before = memory_snapshot(stream)
    with pytest.raises(TimestampError):
        stream.ingest(random_frames(1)[0], timestamp)
    assert_same_memory(before, memory_snapshot(stream))
    stream.ingest(random_frames(1)[0], 1.5)  # equal stamps are accepted


@pytest.mark.parametrize("kwargs,error", [
    (dict(question=""), InvalidQuestionError),
    (dict(question="   \n"), InvalidQuestionError),
    (dict(question="x" * 2001), InvalidQuestionError),
    (dict(question="ok?", since=5.0, until=1.0), InvalidQuestionError),
    (dict(question="ok?", since=float("nan")), InvalidQuestionError),
    (dict(question="ok?", max_new_tokens=0), InvalidQuestionError),
    (dict(question="ok?", do_sample=True, temperature=0.0), InvalidQuestionError),
    (dict(question="ok?", since=100.0), EmptyMemoryError),
])
def test_bad_questions_raise_and_change_nothing(kwargs, error):
    stream = stream_of("tiny-smolvlm", random_frames(5), clip_frames=3)
    before = memory_snapshot(stream)
    with pytest.raises(error):
        stream.ask(**kwargs)
    if error is InvalidQuestionError:
        assert_same_memory(before, memory_snapshot(stream))  # rejected before flushing anything


def test_asking_before_any_frame_is_a_clear_error():
    stream = LiveVLMStream(tiny_model("tiny-llava-onevision"))
    with pytest.raises(EmptyMemoryError, match="no frame"):
        stream.ask("anything?")


def test_streaming_callback_reassembles_the_answer_and_cancel_stops():
    stream = stream_of("tiny-llava-onevision", random_frames(6), clip_frames=3)
    pieces = []
    result = stream.ask("describe", max_new_tokens=10, on_token=pieces.append)
    assert "".join(pieces) == result.answer
    assert result.stop_reason in ("eos", "length") and result.ttft_s <= result.total_s

    calls = []

    def stop_after_three():
        calls.append(1)
        return len(calls) > 3

    cancelled = stream.ask("describe", max_new_tokens=10, should_stop=stop_after_three)
    assert cancelled.cancelled and cancelled.new_tokens == 3


@pytest.mark.parametrize("name", ["tiny-llava-onevision", "tiny-smolvlm"])
def test_the_callback_runs_once_per_generated_token(name):
    """D9: tokens that complete no character yet (random weights make many) were not reported,
    so the node's action feedback stalled; now every token is, with "" when it formed nothing."""
    stream = stream_of(name, random_frames(6), clip_frames=3)
    pieces = []
    result = stream.ask("describe", max_new_tokens=48, on_token=pieces.append)
    eos_tail = result.stop_reason == "eos" and len(pieces) == result.new_tokens + 1  # the EOS token's piece
    assert len(pieces) == result.new_tokens or eos_tail, (len(pieces), result.new_tokens, result.stop_reason)
    assert "".join(pieces) == result.answer
    assert result.new_tokens > 0 and "" in pieces  # some tokens formed no complete character


def test_sampling_is_reproducible_with_a_seed():
    stream = stream_of("tiny-smolvlm", random_frames(6), clip_frames=3)
    a = stream.ask("describe", max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=7)
    b = stream.ask("describe", max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=7)
    assert a.answer == b.answer


def test_reset_forgets_frames_and_keeps_prefix():
    stream = stream_of("tiny-llava-onevision", random_frames(7), clip_frames=3)
    prefix = stream.stats().prefix_tokens
    stream.reset()
    stats = stream.stats()
    assert stats.tokens == prefix and stats.frames_ingested == 0 and stats.frames_pending == 0
    assert stats.oldest_time is None
    stream.ingest(random_frames(1)[0], 0.0)  # time may start over after a reset
    assert stream.ask("?", max_new_tokens=1).frames_seen == 1


def test_ingest_embeddings_is_prefilled_like_a_frame():
    model = tiny_model("tiny-llava-onevision")
    stream = LiveVLMStream(model, EngineConfig(clip_frames=2, memory="full"))
    stream.ingest_embeddings(model.embed_text("a red car"), 0.0)
    stream.ingest(random_frames(1)[0], 1.0)
    assert stream.stats().tokens == stream.stats().prefix_tokens + len("a red car") + 16
    with pytest.raises(InvalidFrameError):
        stream.ingest_embeddings(torch.zeros(3, 5), 2.0)


def test_results_serialise_to_json():
    stream = stream_of("tiny-llava-onevision", random_frames(4), clip_frames=2)
    json.dumps(stream.ask("?", max_new_tokens=2).to_dict())
    json.dumps(stream.stats().to_dict())


@pytest.mark.parametrize("kwargs", [
    dict(memory="lru"), dict(retrieval="all"), dict(clip_frames=0), dict(budget_tokens=0),
    dict(saliency_share=1.5), dict(retrieval_ratio=0.0), dict(page_size=0), dict(observation_tokens=0),
])
def test_config_is_validated_on_construction(kwargs):
    with pytest.raises(ConfigError):
        EngineConfig(**kwargs)


def test_model_errors_name_the_model(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_video_llm(str(tmp_path / "missing-model"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="'bert'"):
        load_video_llm(str(tmp_path))
    with pytest.raises(ModelLoadError, match="dtype"):
        load_video_llm("tiny-smolvlm", dtype="int8")
    with pytest.raises(ModelLoadError, match="device"):
        load_video_llm("tiny-smolvlm", device="tpu")
    with pytest.raises(ModelLoadError, match="no model"):
        load_video_llm("")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_video_llm("tiny-smolvlm", device="cuda")


def test_tiny_models_say_they_are_random():
    for name in ("tiny-llava-onevision", "tiny-smolvlm"):
        model = tiny_model(name)
        assert model.is_tiny and "RANDOM-WEIGHT" in model.describe()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_on_cpu(dtype):
    model = load_video_llm("tiny-smolvlm", dtype=dtype)
    stream = LiveVLMStream(model, EngineConfig(clip_frames=2, budget_tokens=40, page_size=8))
    for i, frame in enumerate(random_frames(6)):
        stream.ingest(frame, float(i))
    result = stream.ask("what?", max_new_tokens=3)
    assert isinstance(result.answer, str) and result.new_tokens <= 3
    assert not math.isnan(result.ttft_s)


def test_full_memory_warns_once_when_it_passes_the_trained_context():
    """D7: ``memory: full`` grows past the model's positions; the stream says so, once."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    # a handler on the engine's logger itself (the launch_pytest plugin rearranges root logging)
    collect, logger = Collect(), logging.getLogger("livevlm_ros.engine.stream")
    model = tiny_model("tiny-llava-onevision")
    stream = LiveVLMStream(model, EngineConfig(memory="full", retrieval="none", clip_frames=4))
    embeds = torch.zeros(max(1, model.max_position_embeddings // 40), model.text_config.hidden_size, dtype=model.dtype)
    logger.addHandler(collect)
    try:
        for i in range(48):
            stream.ingest_embeddings(embeds, float(i))
        stream.flush()
    finally:
        logger.removeHandler(collect)
    warnings = [m for m in collect.messages if "past the model's trained context" in m]
    assert len(warnings) == 1, collect.messages
    assert f"of {model.max_position_embeddings} positions" in warnings[0]
    assert stream.stats().tokens > model.max_position_embeddings
