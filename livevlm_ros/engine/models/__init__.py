"""Video LLM families the engine streams: loading, prompt layout, vision encoding."""

from .base import VideoLLM
from .loading import SUPPORTED_MODEL_TYPES, load_video_llm
from .tiny import TINY_MODELS

__all__ = ["VideoLLM", "load_video_llm", "SUPPORTED_MODEL_TYPES", "TINY_MODELS"]
