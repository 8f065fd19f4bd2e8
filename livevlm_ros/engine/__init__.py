"""The LiveVLM streaming engine: pure PyTorch, no ROS.

Typical use::

    model = load_video_llm("tiny-llava-onevision", device="cpu", dtype="float32")
    stream = LiveVLMStream(model, EngineConfig(memory="vsb", retrieval="par"))
    for t, frame in frames:          # RGB uint8 (H, W, 3), stream time in seconds
        stream.ingest(frame, t)
    result = stream.ask("What is on the road?")

Names are imported lazily (module ``__getattr__``): ``import livevlm_ros.engine.config`` (or
``.errors``, ``.question``) loads neither torch nor transformers, which is what the ROS parameter
and question layers rely on; the first use of ``LiveVLMStream`` or ``load_video_llm`` loads them.
"""

from __future__ import annotations

import importlib

#: public name -> submodule that defines it
_EXPORTS = {
    "AskRequest": "question",
    "AskResult": "results",
    "ConfigError": "errors",
    "EmptyMemoryError": "errors",
    "EngineConfig": "config",
    "FIELD_CHOICES": "config",
    "InvalidFrameError": "errors",
    "InvalidQuestionError": "errors",
    "LiveVLMError": "errors",
    "LiveVLMStream": "stream",
    "MEMORY_POLICIES": "config",
    "MemoryLayout": "kv_memory",
    "MemoryStats": "results",
    "ModelLoadError": "errors",
    "RETRIEVAL_POLICIES": "config",
    "StageTimer": "timing",
    "TINY_MODELS": "models.tiny",
    "TimestampError": "errors",
    "VideoLLM": "models.base",
    "load_video_llm": "models.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
