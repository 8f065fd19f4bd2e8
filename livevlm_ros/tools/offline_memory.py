"""``livevlm_offline --save-memory PATH`` / ``--load-memory PATH``: ingest a recording once, question it many times.

``--save-memory PATH`` writes the stream's memory after the run (the engine's checkpoint format,
:mod:`livevlm_ros.engine.persistence`: safetensors + JSON metadata, atomic write), with the source it
came from. ``--load-memory PATH`` restores such a file instead of reading a SOURCE: every ``--ask`` is
then asked of the restored memory as it was at its newest frame (the ask times only order the
questions; ``asked_at`` is the memory's newest frame time, ``after_end`` true). The file must have been
written with the same model and engine options: anything else (another model, another option, a
corrupt or truncated file, a newer format) is a clear error and exit status 1.
"""

from __future__ import annotations

import argparse
from typing import Iterator, Optional

from livevlm_ros.engine.persistence import CheckpointError, load_checkpoint, save_checkpoint
from livevlm_ros.io.sources import FrameSource

__all__ = ["add_options", "check_arguments", "RestoredSource", "load_memory", "save_memory"]

#: Key of the checkpoint metadata where the offline runner records the source.
META_KEY = "offline"


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("memory files (ingest once, question many times)")
    group.add_argument("--save-memory", metavar="PATH",
                       help="after the run, write the stream's memory to PATH (safetensors + JSON metadata)")
    group.add_argument("--load-memory", metavar="PATH",
                       help="restore the memory from PATH (written by --save-memory with the same model and engine "
                            "options) and ask the questions of it; no SOURCE then")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors: a SOURCE or ``--load-memory``, not both, not neither."""
    if args.load_memory and args.source:
        parser.error("give either SOURCE or --load-memory: the source's times would restart at 0, before the "
                     "restored memory's newest frame")
    if not args.load_memory and not args.source:
        parser.error("the following arguments are required: SOURCE (or --load-memory PATH)")


class RestoredSource(FrameSource):
    """The "source" of a restored memory: no frames; its span and origin come from the checkpoint."""

    def __init__(self, path: str, meta: dict) -> None:
        super().__init__(None)
        origin = meta.get(META_KEY, {})
        self.path = path
        self.name = f"memory {path}"
        self.origin = origin
        self.time_offset_s: Optional[float] = origin.get("time_offset_s")
        self.last_time: Optional[float] = meta.get("last_time")
        first = meta.get("first_time")
        self.duration_s = None if first is None or self.last_time is None else self.last_time - first
        self.native_frames = 0

    def _lazy_frames(self) -> Iterator:
        return iter(())


class MemoryFileError(RuntimeError):
    """``--load-memory`` / ``--save-memory`` failed (the message says which file and why)."""


def load_memory(stream, path: str) -> RestoredSource:
    """Restore ``stream`` from ``path``.

    Raises:
        MemoryFileError: unreadable / corrupt / newer-format file, or another model or engine configuration.
    """
    try:
        checkpoint = load_checkpoint(path)
        stream.restore(checkpoint)
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        raise MemoryFileError(f"cannot load memory from {path}: {exc}") from exc
    return RestoredSource(path, checkpoint.meta)


def save_memory(stream, path: str, source: FrameSource, time_offset_s: Optional[float]) -> int:
    """Write ``stream``'s memory to ``path`` (atomically); returns the file size in bytes.

    Raises:
        MemoryFileError: the file cannot be written.
    """
    checkpoint = stream.checkpoint()
    origin = source.origin if isinstance(source, RestoredSource) else {
        "source": getattr(source, "name", str(source)), "kind": type(source).__name__, "time_offset_s": time_offset_s}
    checkpoint.meta[META_KEY] = origin
    try:
        return save_checkpoint(checkpoint, path)
    except OSError as exc:
        raise MemoryFileError(f"cannot write memory to {path}: {exc}") from exc
