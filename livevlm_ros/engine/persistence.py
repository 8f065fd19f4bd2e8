"""A stream's memory on disk: one safetensors file, written atomically, restored exactly.

:meth:`LiveVLMStream.checkpoint` takes a :class:`MemoryCheckpoint` (CPU copies of the memory's
tensors plus JSON-able metadata; the only part that needs the stream's lock). :func:`save_checkpoint`
writes it outside any lock: a temporary file in the target's directory, ``fsync``, then ``rename``
over the target, so a crash at any moment leaves either the previous checkpoint or the new one.
:func:`load_checkpoint` reads and validates a file; :meth:`LiveVLMStream.restore` puts it back.

File layout (format version :data:`FORMAT_VERSION`): tensors ``memory.<field>`` (``keys``, ``values``:
``[L, H, T, d]`` pre-RoPE; ``frame``, ``position``: int64, ``time``: float64, ``vision``: bool as uint8,
``importance``: float32, all ``[L, H, T]``), ``host.<field>`` for ReKV-style offloaded tokens, and
``extra.<name>`` for whatever the caller adds (e.g. evidence thumbnails); the safetensors header's
metadata key ``livevlm`` holds the JSON metadata: format version, model id and fingerprint (config +
weights' dtype), engine-config fingerprint, counters, and the stream times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import EngineConfig
from .errors import LiveVLMError

#: Version of the file layout; files from a newer version are refused.
FORMAT_VERSION = 1
METADATA_KEY = "livevlm"


class CheckpointError(LiveVLMError):
    """A checkpoint cannot be used: unreadable, truncated, from a newer format, or for another model/config."""


def model_fingerprint(model) -> str:
    """Hash of a model's identity for restore: its config (JSON) and the weights' dtype."""
    config = getattr(model.model, "config", None)
    text = config.to_json_string(use_diff=False) if config is not None else model.name
    return hashlib.sha256(f"{text}|{model.dtype}|{model.family}".encode()).hexdigest()[:16]


def config_fingerprint(config: EngineConfig) -> str:
    """Hash of every :class:`EngineConfig` field (a different memory policy or budget is a different memory)."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class MemoryCheckpoint:
    """A stream's memory, detached from the stream (CPU tensors + JSON-able metadata).

    Attributes:
        tensors: ``{name: tensor}`` as stored in the file.
        meta: the metadata (see the module doc); ``meta["summary"]`` says what it holds (frames, tokens, span).
    """

    tensors: dict
    meta: dict = field(default_factory=dict)

    @property
    def summary(self) -> dict:
        return self.meta.get("summary", {})


def save_checkpoint(checkpoint: MemoryCheckpoint, path: str,
                    before_rename: Optional[Callable[[str], None]] = None) -> int:
    """Write ``checkpoint`` to ``path`` atomically; returns the file size in bytes.

    Args:
        before_rename: called with the temporary file's path after it is written and synced, before it
            replaces ``path`` (tests use it to hold the write open, e.g. to kill the process there).
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    tensors = {name: (t.to(torch.uint8) if t.dtype == torch.bool else t).contiguous()
               for name, t in checkpoint.tensors.items()}
    handle, temporary = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + ".", dir=directory)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={METADATA_KEY: json.dumps(checkpoint.meta)})
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        if before_rename is not None:
            before_rename(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)
    return os.path.getsize(path)


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str) -> MemoryCheckpoint:
    """Read a checkpoint file.

    Raises:
        CheckpointError: missing, truncated or corrupt file, no livevlm metadata, or a newer format version.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt): {exc}") from exc
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file without livevlm metadata: not a memory checkpoint")
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata: {exc}") from exc
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version!r}; this build reads up to "
                              f"{FORMAT_VERSION} (written by a newer livevlm_ros?)")
    for name, tensor in list(tensors.items()):
        if name.endswith(".vision"):
            tensors[name] = tensor.bool()
    return MemoryCheckpoint(tensors, meta)


def check_compatible(checkpoint: MemoryCheckpoint, model, config: EngineConfig) -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` was taken with this model and engine config."""
    meta = checkpoint.meta
    expected = {"model_fingerprint": model_fingerprint(model), "config_fingerprint": config_fingerprint(config)}
    for key, value in expected.items():
        if meta.get(key) != value:
            what = "model" if key.startswith("model") else "engine configuration"
            raise CheckpointError(
                f"checkpoint was taken with another {what} ({meta.get('model') if what == 'model' else 'config'} "
                f"{meta.get(key)!r}, now {value!r}); it is not restored"
            )
