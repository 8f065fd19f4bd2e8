"""The LiveVLM streaming engine: pure PyTorch, no ROS.

Typical use::

    model = load_video_llm("tiny-llava-onevision", device="cpu", dtype="float32")
    stream = LiveVLMStream(model, EngineConfig(memory="vsb", retrieval="par"))
    for t, frame in frames:          # RGB uint8 (H, W, 3), stream time in seconds
        stream.ingest(frame, t)
    result = stream.ask("What is on the road?")
"""

from .config import MEMORY_POLICIES, RETRIEVAL_POLICIES, EngineConfig
from .errors import (
    ConfigError,
    EmptyMemoryError,
    InvalidFrameError,
    InvalidQuestionError,
    LiveVLMError,
    ModelLoadError,
    TimestampError,
)
from .models import TINY_MODELS, VideoLLM, load_video_llm
from .results import AskResult, MemoryStats
from .stream import LiveVLMStream

__all__ = [
    "AskResult",
    "ConfigError",
    "EmptyMemoryError",
    "EngineConfig",
    "InvalidFrameError",
    "InvalidQuestionError",
    "LiveVLMError",
    "LiveVLMStream",
    "MEMORY_POLICIES",
    "MemoryStats",
    "ModelLoadError",
    "RETRIEVAL_POLICIES",
    "TINY_MODELS",
    "TimestampError",
    "VideoLLM",
    "load_video_llm",
]
