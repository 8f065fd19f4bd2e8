"""Each stream's memory on disk for the node (parameter ``memory_dir``): restore, periodic saves, reset.

The file format, its atomic write and the exact restore are the engine's
(:mod:`livevlm_ros.engine.persistence`); this module decides *when* and *where*:

* one file per stream, ``<memory_dir>/<stream>.safetensors`` (stream name sanitised, see
  :func:`checkpoint_path`); give each node its own ``memory_dir``;
* :meth:`MemoryStore.restore` (configure, before the worker starts): load, check the model and
  engine fingerprints, restore, continue the sampler's timeline after the checkpoint's last stamp.
  A file that cannot be used (corrupt, truncated, newer format, another model or engine config)
  is renamed aside to ``<file>.rejected-<UTC time>`` (never deleted), with a warning; the stream
  starts empty. Temporary files left by a write that was killed are removed;
* :meth:`MemoryStore.after_ingest` (worker thread, after each ingested frame): every
  ``checkpoint_period_s`` of *stream* time, at the next clip boundary (no pending frames, so the
  snapshot adds no prefill), the worker takes a snapshot (``LiveVLMStream.checkpoint``: a
  device-to-host copy) and hands it to the writer thread; the worker never waits on the disk;
* :meth:`MemoryStore.save_all` (deactivate, shutdown, SIGINT/SIGTERM; the worker is stopped):
  snapshot every stream that changed since its last save and wait for the writes;
* :meth:`MemoryStore.clear` (``~/reset``): drop the stream's pending write and delete its file,
  in order after a write in progress.

The writer thread writes one snapshot at a time, the newest per stream (an older one still
waiting is replaced: latest wins). A failed write (disk full, permissions) is logged and the
previous file stays as it was.

**Test hook** (tests only, never set in production): the environment variable
:data:`SLOW_WRITE_ENV` = ``"N:SECONDS"`` holds the N-th and every later checkpoint write for
SECONDS after the temporary file is written and synced, before its rename, and logs
:data:`SLOW_WRITE_LOG` first, so a test can kill the process inside the write
(``test/test_ros_persistence.py``).

Pure Python + the engine (no rclpy): the node passes its logger.
"""

from __future__ import annotations

import datetime
import glob
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterable, Optional

import numpy as np
import torch

from livevlm_ros.engine.persistence import CheckpointError, MemoryCheckpoint, load_checkpoint, save_checkpoint

__all__ = [
    "SUFFIX",
    "SLOW_WRITE_ENV",
    "SLOW_WRITE_LOG",
    "RestoreReport",
    "WriteRecord",
    "MemoryStore",
    "checkpoint_path",
    "sanitise",
    "thumbnails_to_tensors",
    "thumbnails_from_tensors",
]

SUFFIX = ".safetensors"
#: TEST HOOK: ``"N:SECONDS"`` holds checkpoint writes number N, N+1, ... before their rename.
SLOW_WRITE_ENV = "LIVEVLM_TEST_SLOW_CHECKPOINT_WRITE"
#: TEST HOOK: logged (warning) when a write is held by :data:`SLOW_WRITE_ENV`.
SLOW_WRITE_LOG = "TEST HOOK: holding checkpoint write before its rename"
#: Seconds between two identical write-error messages.
WARN_THROTTLE_S = 5.0
#: Prefix of the extra tensors that hold evidence thumbnails (``extra.thumbnails.*``).
THUMBNAILS = "extra.thumbnails."


def sanitise(name: str) -> str:
    """A file-name-safe form of a stream name: anything but letters, digits, ``_``, ``-`` becomes ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    return cleaned or "_"


def checkpoint_path(directory: str, stream: str) -> str:
    """``<directory>/<sanitised stream name>.safetensors``."""
    return os.path.join(directory, sanitise(stream) + SUFFIX)


# ============================================================================ thumbnails (evidence)
def thumbnails_to_tensors(ring) -> dict:
    """A :class:`~livevlm_ros.io.thumbnails.ThumbnailRing`'s thumbnails as checkpoint tensors.

    ``extra.thumbnails.frame`` (int64 ``[N]``), ``.stamp`` (float64 ``[N]``, s), ``.length`` (int64 ``[N]``,
    bytes of each JPEG) and ``.jpeg`` (uint8, the JPEGs one after another), oldest first. Empty dict for
    an empty ring.
    """
    items = ring.items()
    if not items:
        return {}
    return {
        THUMBNAILS + "frame": torch.tensor([t.frame for t in items], dtype=torch.int64),
        THUMBNAILS + "stamp": torch.tensor([t.stamp_s for t in items], dtype=torch.float64),
        THUMBNAILS + "length": torch.tensor([len(t.jpeg) for t in items], dtype=torch.int64),
        THUMBNAILS + "jpeg": torch.from_numpy(np.frombuffer(b"".join(t.jpeg for t in items), dtype=np.uint8).copy()),
    }


def thumbnails_from_tensors(tensors: dict, ring) -> int:
    """Put the thumbnails of :func:`thumbnails_to_tensors` back into ``ring``; returns how many."""
    from livevlm_ros.io.thumbnails import Thumbnail

    if THUMBNAILS + "frame" not in tensors:
        return 0
    frames = tensors[THUMBNAILS + "frame"].tolist()
    stamps = tensors[THUMBNAILS + "stamp"].tolist()
    lengths = tensors[THUMBNAILS + "length"].tolist()
    data = tensors[THUMBNAILS + "jpeg"].numpy().tobytes()
    if not (len(frames) == len(stamps) == len(lengths)) or sum(lengths) != len(data):
        raise CheckpointError("the checkpoint's thumbnails are inconsistent (lengths do not add up)")
    ring.clear()
    offset = 0
    for frame, stamp, length in zip(frames, stamps, lengths):
        ring.put(Thumbnail(int(frame), float(stamp), data[offset:offset + length]))
        offset += length
    return len(frames)


# ============================================================================ reports
@dataclass(frozen=True)
class RestoreReport:
    """What configure found for one stream.

    Attributes:
        stream / path: the stream and its checkpoint file.
        outcome: ``restored``; ``none`` (no file); ``rejected`` (unusable file, renamed to ``moved_to``);
            ``failed`` (a usable-looking file that could not be put on the device, e.g. out of memory: kept).
        frames / tokens: frames ingested and memory tokens of the restored memory.
        oldest_s / newest_s: stream-time span (s, header stamps) of the frames with tokens in memory.
        last_stamp_s: the newest frame stamp the restored stream had seen (its timeline continues after it).
        thumbnails: evidence thumbnails restored.
        reason: why a file was rejected / failed.
    """

    stream: str
    path: str
    outcome: str
    frames: int = 0
    tokens: int = 0
    oldest_s: Optional[float] = None
    newest_s: Optional[float] = None
    last_stamp_s: Optional[float] = None
    thumbnails: int = 0
    moved_to: Optional[str] = None
    reason: str = ""

    @property
    def restored(self) -> bool:
        return self.outcome == "restored"

    def describe(self) -> str:
        """One line for the log and ``StreamStatus.memory_restore``."""
        if self.outcome == "restored":
            span = ("no frame tokens" if self.oldest_s is None
                    else f"{self.oldest_s:.3f} s .. {self.newest_s:.3f} s of stream time")
            extra = f", {self.thumbnails} thumbnails" if self.thumbnails else ""
            return (f"restored {self.frames} frames, {self.tokens} memory tokens ({span}{extra}) from {self.path}; "
                    f"the timeline continues after {self.last_stamp_s:.3f} s")
        if self.outcome == "none":
            return f"none: no checkpoint at {self.path} (empty memory)"
        if self.outcome == "rejected":
            return f"rejected: {self.reason}; the file was moved to {self.moved_to} (empty memory)"
        return f"failed: {self.reason}; {self.path} kept (empty memory)"


@dataclass(frozen=True)
class WriteRecord:
    """The last checkpoint written for a stream: ``bytes`` on disk, ``write_s`` (s), and what it held."""

    path: str
    bytes: int
    write_s: float
    frames: int
    tokens: int
    last_stamp_s: Optional[float]


@dataclass
class _Op:
    kind: str  # "save" or "delete"
    stream: str
    path: str
    checkpoint: Optional[MemoryCheckpoint] = None
    done: threading.Event = None  # type: ignore[assignment]

    def __post_init__(self):
        self.done = threading.Event()


def _slow_write_hook() -> Optional[tuple]:
    """TEST HOOK: ``(first write number, seconds)`` from :data:`SLOW_WRITE_ENV`, or None."""
    text = os.environ.get(SLOW_WRITE_ENV, "").strip()
    if not text:
        return None
    first, _, seconds = text.partition(":")
    return int(first), float(seconds)


# ============================================================================ the store
class MemoryStore:
    """Checkpoints of every stream of one node in ``directory`` (see the module docstring).

    Args:
        directory: where the files go (created if missing).
        period_s: stream time (s, header stamps) between periodic checkpoints; 0: only on deactivate,
            shutdown and signals.
        logger: rclpy-style logger (``info/warning/error``, ``throttle_duration_sec``).
        clock: monotonic clock (s), for the write times.

    Raises:
        OSError: ``directory`` cannot be created or is not writable.
    """

    def __init__(self, directory: str, period_s: float, logger: Any, clock: Callable[[], float] = time.perf_counter):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"memory_dir {self.directory} is not writable")
        self.period_s = float(period_s)
        self._log = logger
        self._clock = clock
        self._ops: Deque[_Op] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._writes_started = 0
        self._slow = _slow_write_hook()
        self._next_due: Dict[str, Optional[float]] = {}
        self._last_seen: Dict[str, Optional[float]] = {}
        self._dirty: Dict[str, bool] = {}
        self.reports: Dict[str, RestoreReport] = {}
        self.last_write: Dict[str, WriteRecord] = {}
        self.writes: Dict[str, int] = {}
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="livevlm_checkpoint_writer", daemon=True)
        self._thread.start()

    def path(self, stream: str) -> str:
        return checkpoint_path(self.directory, stream)

    # ---------------------------------------------------------------- restore (configure)
    def restore(self, rt) -> RestoreReport:
        """Restore stream ``rt`` (a :class:`~livevlm_ros.ros.worker.StreamRuntime`) from its file, if any.

        Never raises for a bad file: see :class:`RestoreReport`. Call before the worker starts.
        """
        path = self.path(rt.name)
        self._remove_stray_temporaries(path)
        report = self._restore(rt, path)
        self.reports[rt.name] = report
        self._dirty[rt.name] = False
        self._last_seen[rt.name] = report.last_stamp_s
        self._next_due[rt.name] = None
        rt.refresh_stats()
        if report.outcome == "restored":
            self._log.info(f"stream {rt.name}: memory {report.describe()}")
        elif report.outcome == "none":
            self._log.info(f"stream {rt.name}: {report.describe()}")
        else:
            self._log.warning(f"stream {rt.name}: checkpoint {report.describe()}")
        return report

    def _restore(self, rt, path: str) -> RestoreReport:
        if not os.path.exists(path):
            return RestoreReport(rt.name, path, "none")
        try:
            checkpoint = load_checkpoint(path)
            rt.engine.restore(checkpoint)
            ring = getattr(rt, "thumbnails", None)  # evidence thumbnails, where the node keeps them
            thumbnails = thumbnails_from_tensors(checkpoint.tensors, ring) if ring is not None else 0
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:  # the file's fault: set it aside
            rt.engine.reset()
            return RestoreReport(rt.name, path, "rejected", moved_to=self._move_aside(path), reason=str(exc))
        except Exception as exc:  # e.g. out of device memory: not the file's fault, keep it
            rt.engine.reset()
            return RestoreReport(rt.name, path, "failed", reason=f"{type(exc).__name__}: {exc}")
        summary, meta = checkpoint.summary, checkpoint.meta
        last = meta.get("last_time")
        if last is not None:
            with rt.lock:
                rt.sampler.resume(float(last))
                rt.newest_ingested_stamp = float(last)
        return RestoreReport(rt.name, path, "restored", frames=int(summary.get("frames_ingested", 0)),
                             tokens=int(summary.get("memory_tokens", 0)), oldest_s=summary.get("oldest_time"),
                             newest_s=summary.get("newest_time"), last_stamp_s=last, thumbnails=thumbnails)

    def _move_aside(self, path: str) -> Optional[str]:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = f"{path}.rejected-{stamp}"
        try:
            os.replace(path, target)
        except OSError as exc:
            self._log.error(f"could not move the unusable checkpoint {path} aside: {exc}")
            return None
        return target

    def _remove_stray_temporaries(self, path: str) -> None:
        """Temporary files of writes that were killed before their rename (never a complete checkpoint)."""
        pattern = os.path.join(os.path.dirname(path), glob.escape(".tmp-" + os.path.basename(path)) + ".*")
        for stray in glob.glob(pattern):
            try:
                os.unlink(stray)
                self._log.info(f"removed {stray}: an unfinished checkpoint write (the process was killed in it)")
            except OSError:
                pass

    # ---------------------------------------------------------------- saving (worker side)
    def after_ingest(self, rt, stamp_s: float) -> bool:
        """Called by the worker after stream ``rt`` ingested a frame stamped ``stamp_s`` (s).

        Takes a periodic snapshot when ``checkpoint_period_s`` of stream time passed since the last one
        and no frames are pending in the engine (a clip boundary). Returns True when it took one.
        """
        name = rt.name
        self._dirty[name] = True
        last = self._last_seen.get(name)
        self._last_seen[name] = stamp_s
        if self.period_s <= 0:
            return False
        due = self._next_due.get(name)
        if due is None or (last is not None and stamp_s < last):  # first frame, or a new timeline
            self._next_due[name] = stamp_s + self.period_s
            return False
        if stamp_s < due or getattr(rt.engine, "pending_frames", 0):
            return False
        self._next_due[name] = stamp_s + self.period_s
        self.snapshot(rt)
        return True

    def snapshot(self, rt) -> Optional[_Op]:
        """Snapshot stream ``rt`` now (the caller owns the engine) and queue its write; None if it is empty."""
        checkpoint = rt.engine.checkpoint()
        self._dirty[rt.name] = False
        if not checkpoint.summary.get("frames_ingested"):
            return None
        ring = getattr(rt, "thumbnails", None)
        if ring is not None:
            checkpoint.tensors.update(thumbnails_to_tensors(ring))
        return self._queue(_Op("save", rt.name, self.path(rt.name), checkpoint))

    def save_all(self, streams: Iterable, timeout: float = 30.0) -> bool:
        """Snapshot every stream that changed since its last save and wait for the writes (the worker is
        stopped: the caller owns the engines). Returns False when a write did not finish in ``timeout`` s."""
        ops = []
        for rt in streams:
            if not self._dirty.get(rt.name):
                continue
            try:
                op = self.snapshot(rt)
            except Exception as exc:  # never lose the shutdown over one stream
                self._log.error(f"stream {rt.name}: memory snapshot failed: {exc!r}")
                continue
            if op is not None:
                ops.append(op)
        deadline = time.monotonic() + timeout
        return all(op.done.wait(max(0.0, deadline - time.monotonic())) for op in ops)

    def clear(self, stream: str, timeout: float = 30.0) -> bool:
        """Forget stream's checkpoint (``~/reset``): its waiting write is dropped and the file deleted after
        any write in progress. Returns False if that did not happen within ``timeout`` s."""
        self._dirty[stream] = False
        self._next_due[stream] = None
        self._last_seen[stream] = None
        op = self._queue(_Op("delete", stream, self.path(stream)))
        return op.done.wait(timeout)

    def _queue(self, op: _Op) -> _Op:
        with self._cond:
            if self._closing:
                raise RuntimeError("the checkpoint writer is closed")
            for old in [o for o in self._ops if o.stream == op.stream]:  # latest wins (a delete too)
                self._ops.remove(old)
                old.done.set()
            self._ops.append(op)
            self._cond.notify()
        return op

    def close(self, timeout: float = 30.0) -> bool:
        """Finish the queued writes and stop the writer thread; False if it did not end within ``timeout`` s."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---------------------------------------------------------------- the writer thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ops and not self._closing:
                    self._cond.wait()
                if not self._ops:
                    return
                op = self._ops.popleft()
            try:
                if op.kind == "save":
                    self._write(op)
                else:
                    self._delete(op)
            except Exception as exc:  # never let the writer die
                self.write_errors += 1
                self._log.error(f"stream {op.stream}: checkpoint {op.kind} of {op.path} failed: {exc!r} "
                                "(the previous file, if any, is unchanged)", throttle_duration_sec=WARN_THROTTLE_S)
            finally:
                op.done.set()

    def _write(self, op: _Op) -> None:
        self._writes_started += 1
        hold = None
        if self._slow is not None and self._writes_started >= self._slow[0]:
            hold = self._slow[1]

        def before_rename(temporary: str) -> None:  # TEST HOOK only (SLOW_WRITE_ENV)
            self._log.warning(f"{SLOW_WRITE_LOG}: {temporary} for {hold:g} s")
            time.sleep(hold)

        started = self._clock()
        size = save_checkpoint(op.checkpoint, op.path, before_rename=before_rename if hold else None)
        elapsed = self._clock() - started
        summary = op.checkpoint.summary
        record = WriteRecord(op.path, size, elapsed, int(summary.get("frames_ingested", 0)),
                             int(summary.get("memory_tokens", 0)), op.checkpoint.meta.get("last_time"))
        self.last_write[op.stream] = record
        self.writes[op.stream] = self.writes.get(op.stream, 0) + 1
        self._log.debug(f"stream {op.stream}: checkpoint {op.path}: {record.frames} frames, {record.tokens} tokens, "
                        f"{size / 1e6:.2f} MB in {elapsed * 1e3:.0f} ms")

    def _delete(self, op: _Op) -> None:
        self.last_write.pop(op.stream, None)
        if os.path.exists(op.path):
            os.unlink(op.path)
            self._log.info(f"stream {op.stream}: checkpoint {op.path} deleted (memory reset)")

