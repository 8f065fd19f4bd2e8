"""Exceptions raised by the LiveVLM engine.

Every error the engine raises on bad input derives from :class:`LiveVLMError`, and is
raised *before* any state changes: the stream's memory is exactly as it was.
"""


class LiveVLMError(Exception):
    """Base class of every error raised by the engine."""


class ConfigError(LiveVLMError, ValueError):
    """An engine or model configuration value is out of range or inconsistent."""


class ModelLoadError(LiveVLMError):
    """A model could not be loaded: unknown id, missing directory, unsupported architecture."""


class InvalidFrameError(LiveVLMError, ValueError):
    """A frame is not an RGB ``uint8`` array of shape ``(H, W, 3)`` with H, W > 0."""


class TimestampError(LiveVLMError, ValueError):
    """A frame's timestamp is not finite or is earlier than the previous frame's."""


class InvalidQuestionError(LiveVLMError, ValueError):
    """A question is empty, too long, or its time window is inverted (``since > until``)."""


class EmptyMemoryError(LiveVLMError):
    """A question was asked before any frame was ingested, or its time window holds no frame."""
