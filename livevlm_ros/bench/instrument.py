"""Timers and memory probes for the benchmark, attached to the engine from outside.

:func:`instrumented` monkeypatches (for the ``with`` block only) the engine functions whose cost
the benchmark reports as overhead; nothing in the engine is edited:

==================  =====================================================  ==============
section             engine function                                        phase
==================  =====================================================  ==============
``obs_scores``      ``stream.observation_scores`` (VSB/top-k scoring)      ingest
``vsb_select``      ``compression.keep_vision_sink_buckets``              ingest
``topk_select``     ``compression.keep_top_k``                             ingest
``compress``        ``LiveVLMStream._compress`` (selection + compaction,   ingest
                    ReKV offload)
``par``             ``LiveVLMStream._retrieve_pages`` (PaR / PaR-PE)       answer
``rekv_retrieve``   ``LiveVLMStream._retrieve_host_frames``                answer
==================  =====================================================  ==============

On CUDA every timed call is bracketed by ``torch.cuda.synchronize()`` so that the time is the
section's own; this adds a few microseconds per call (tens per clip), which the totals include.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections import defaultdict
from unittest import mock

import torch

from livevlm_ros.engine import compression
from livevlm_ros.engine import stream as stream_module
from livevlm_ros.engine.stream import LiveVLMStream


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SectionTimer:
    """Accumulated wall seconds per named section; :meth:`take` returns and clears them."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._totals: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, function):
        """``function`` with its wall time (s) added to section ``name`` on each call."""

        def timed(*args, **kwargs):
            synchronize(self.device)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                synchronize(self.device)
                self._totals[name] += time.perf_counter() - started

        return timed

    def take(self) -> dict[str, float]:
        totals = dict(self._totals)
        self._totals.clear()
        return totals


@contextlib.contextmanager
def instrumented(timer: SectionTimer):
    """Attach ``timer`` to the engine's scoring, compression and retrieval functions (see module doc)."""
    targets = [
        (stream_module, "observation_scores", "obs_scores"),
        (compression, "keep_vision_sink_buckets", "vsb_select"),
        (compression, "keep_top_k", "topk_select"),
        (LiveVLMStream, "_compress", "compress"),
        (LiveVLMStream, "_retrieve_pages", "par"),
        (LiveVLMStream, "_retrieve_host_frames", "rekv_retrieve"),
    ]
    with contextlib.ExitStack() as stack:
        for owner, attribute, section in targets:
            stack.enter_context(mock.patch.object(owner, attribute, timer.wrap(section, getattr(owner, attribute))))
        yield timer


class PeakMemory:
    """Peak resident memory of this process and peak CUDA allocation, resettable per segment.

    Peak RSS is Linux ``VmHWM``, reset by writing ``5`` to ``/proc/self/clear_refs``; where that
    is not possible it falls back to ``getrusage`` (peak since process start, never reset) and
    :attr:`rss_scope` says ``"process"`` instead of ``"segment"``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.rss_scope = "segment" if self._clear_hwm() else "process"

    @staticmethod
    def _clear_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _status_bytes(field: str):
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def reset(self) -> None:
        """Start a new measurement segment."""
        if self.rss_scope == "segment":
            self._clear_hwm()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_rss_bytes(self) -> int:
        """Peak resident set size (bytes) since :meth:`reset` (or process start, see class doc)."""
        peak = self._status_bytes("VmHWM") if self.rss_scope == "segment" else None
        return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def rss_bytes(self) -> int:
        """Current resident set size (bytes)."""
        now = self._status_bytes("VmRSS")
        return now if now is not None else self.peak_rss_bytes()

    def peak_cuda_bytes(self):
        """Peak bytes allocated by PyTorch on the CUDA device since :meth:`reset`; ``None`` on CPU."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self.device))
