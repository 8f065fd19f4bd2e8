"""Shared helpers for the engine tests: tiny models (cached per process) and deterministic frames."""

from __future__ import annotations

import functools

import numpy as np

from livevlm_ros.engine import EngineConfig, LiveVLMStream, load_video_llm


@functools.lru_cache(maxsize=None)
def tiny_model(name: str):
    """A tiny random-weight model, loaded once per test process (models are only read by streams)."""
    return load_video_llm(name, device="cpu", dtype="float32")


def random_frames(count: int, seed: int = 0, height: int = 48, width: int = 80) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def stream_of(name: str, frames, times=None, **config) -> LiveVLMStream:
    """A stream of tiny model ``name`` that has ingested ``frames`` at ``times`` (default 0.5 s apart)."""
    stream = LiveVLMStream(tiny_model(name), EngineConfig(**config))
    times = times if times is not None else [0.5 * i for i in range(len(frames))]
    for frame, t in zip(frames, times):
        stream.ingest(frame, t)
    return stream


def memory_snapshot(stream: LiveVLMStream) -> dict:
    """Copies of everything a question must not change."""
    memory = stream._memory
    snap = {
        "keys": memory.keys.clone(),
        "values": memory.values.clone(),
        "frame_index": memory.frame_index.clone(),
        "timestamp": memory.timestamp.clone(),
        "prefix_len": memory.prefix_len,
        "pending": len(stream._pending),
        "stats": stream.stats().to_dict(),
    }
    snap["stats"].pop("max_position_id")
    return snap


def assert_same_memory(before: dict, after: dict) -> None:
    import torch

    for key in ("keys", "values", "frame_index"):
        assert torch.equal(before[key], after[key]), key
    assert torch.equal(before["timestamp"].nan_to_num(-1.0), after["timestamp"].nan_to_num(-1.0))
    for key in ("prefix_len", "pending", "stats"):
        assert before[key] == after[key], key
