"""Memory checkpoints: exact restore for every policy and both model families, atomic writes, bad files."""

import os

import pytest
import torch
from engine_helpers import random_frames, stream_of, tiny_model

from livevlm_ros.engine import EngineConfig, LiveVLMStream, TimestampError
from livevlm_ros.engine.config import MEMORY_POLICIES
from livevlm_ros.engine.persistence import CheckpointError, load_checkpoint, save_checkpoint

QUESTION = "what happened first?"


@pytest.mark.parametrize("name", ["tiny-llava-onevision", "tiny-smolvlm"])
@pytest.mark.parametrize("policy", MEMORY_POLICIES)
def test_restore_gives_the_same_logits_and_answer(tmp_path, name, policy):
    config = dict(memory=policy, budget_tokens=96, clip_frames=4, short_term_frames=1, rekv_frames=2)
    stream = stream_of(name, random_frames(26, seed=1), **config)  # 26 frames: 2 pending when saved
    path = str(tmp_path / "camera.safetensors")
    size = save_checkpoint(stream.checkpoint(), path)
    assert size > 0 and stream.pending_frames == 0
    logits = stream.first_token_logits(QUESTION)
    answer = stream.ask(QUESTION, max_new_tokens=8)

    restored = LiveVLMStream(tiny_model(name), EngineConfig(**config))
    restored.restore(load_checkpoint(path))
    assert torch.allclose(restored.first_token_logits(QUESTION), logits, atol=1e-6, rtol=0)
    again = restored.ask(QUESTION, max_new_tokens=8)
    assert again.answer == answer.answer and again.token_ids == answer.token_ids
    assert again.span_start == answer.span_start and again.span_end == answer.span_end
    before, after = stream.stats().to_dict(), restored.stats().to_dict()
    assert before == after
    # the timeline continues: later frames are accepted, earlier ones refused, and both streams stay equal
    for i, frame in enumerate(random_frames(6, seed=2)):
        stream.ingest(frame, 20.0 + i)
        restored.ingest(frame, 20.0 + i)
    assert torch.allclose(restored.first_token_logits(QUESTION), stream.first_token_logits(QUESTION), atol=1e-6)
    with pytest.raises(TimestampError):
        restored.ingest(random_frames(1)[0], 1.0)


def test_checkpoint_summary_says_what_it_holds():
    stream = stream_of("tiny-llava-onevision", random_frames(12, seed=3), clip_frames=4)
    summary = stream.checkpoint().summary
    assert summary["frames_ingested"] == 12 and summary["memory_tokens"] == stream.stats().tokens
    assert summary["oldest_time"] == 0.0 and summary["newest_time"] == pytest.approx(5.5)


def test_mismatched_model_or_config_is_refused_and_leaves_an_empty_memory(tmp_path):
    stream = stream_of("tiny-llava-onevision", random_frames(8, seed=4), clip_frames=4)
    path = str(tmp_path / "c.safetensors")
    save_checkpoint(stream.checkpoint(), path)
    other_model = LiveVLMStream(tiny_model("tiny-smolvlm"), EngineConfig(clip_frames=4))
    with pytest.raises(CheckpointError, match="another model"):
        other_model.restore(load_checkpoint(path))
    other_config = LiveVLMStream(tiny_model("tiny-llava-onevision"), EngineConfig(clip_frames=4, budget_tokens=50))
    with pytest.raises(CheckpointError, match="engine configuration"):
        other_config.restore(load_checkpoint(path))
    assert other_config.stats().frames_ingested == 0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "not-livevlm", "future"])
def test_bad_files_raise_a_clear_checkpoint_error(tmp_path, damage):
    from safetensors.torch import save_file

    stream = stream_of("tiny-smolvlm", random_frames(8, seed=5), clip_frames=4)
    path = str(tmp_path / "c.safetensors")
    checkpoint = stream.checkpoint()
    save_checkpoint(checkpoint, path)
    data = open(path, "rb").read()
    if damage == "truncate":
        open(path, "wb").write(data[: len(data) // 2])
    elif damage == "garbage":
        open(path, "wb").write(b"\x00\xff" * 500)
    elif damage == "empty":
        open(path, "wb").write(b"")
    elif damage == "not-livevlm":
        save_file({"x": torch.zeros(2)}, path)
    else:
        checkpoint.meta["format_version"] = 99
        save_checkpoint(checkpoint, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert path in str(error.value) or "format version 99" in str(error.value)


def test_writes_are_atomic(tmp_path):
    """A write that dies before its rename leaves the previous checkpoint intact and no stray file."""
    stream = stream_of("tiny-llava-onevision", random_frames(8, seed=6), clip_frames=4)
    path = str(tmp_path / "c.safetensors")
    save_checkpoint(stream.checkpoint(), path)
    first = open(path, "rb").read()
    stream.ingest(random_frames(1)[0], 50.0)

    def die(temporary):
        assert os.path.exists(temporary) and os.path.dirname(temporary) == str(tmp_path)
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(stream.checkpoint(), path, before_rename=die)
    assert open(path, "rb").read() == first
    assert os.listdir(tmp_path) == ["c.safetensors"]
