"""Memory probes for the benchmark; timings come from the engine's own hook.

The engine times its stages itself when given a :class:`~livevlm_ros.engine.timing.StageTimer`
(``LiveVLMStream(..., timer=...)``: sections ``encode``, ``prefill``, ``score``, ``select``,
``compact``, ``page_means``, ``answer``, ``retrieve``, ``decode``); nothing is patched.
"""

from __future__ import annotations

import resource

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
