"""A public timing hook: the engine reports how long each of its stages takes, if asked.

Pass a :class:`StageTimer` to ``LiveVLMStream(..., timer=...)``; the stream times its stages in
named sections (nothing is patched from outside):

==============  =====================================================================  ======
section         what                                                                   phase
==============  =====================================================================  ======
``encode``      vision tower + projector of a clip's frames                            ingest
``prefill``     the clip's pass through the language model (includes ``score``)        ingest
``score``       VSB / top-k importance scores (the observation block)                  ingest
``select``      the memory policy choosing the survivors                               ingest
``compact``     gathering the survivors (and ReKV's offload to host RAM)               ingest
``page_means``  PaR page representatives, refreshed after each clip                    ingest
``answer``      question prefill up to the first token's logits (includes ``retrieve``) answer
``retrieve``    building each layer's context (PaR pages, ReKV host frames)            answer
``decode``      decoding the answer                                                    answer
==============  =====================================================================  ======

On CUDA every section is bracketed by ``torch.cuda.synchronize`` so its time is its own (the
default, :data:`NO_TIMER`, adds nothing and never synchronizes).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator, Optional

import torch


class StageTimer:
    """Accumulated wall seconds (and call counts) per named section.

    Args:
        device: the model's device (CUDA sections are synchronised).
    """

    def __init__(self, device: Optional[torch.device] = None) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        self._sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - started
            self.calls[name] += 1

    def take(self) -> dict[str, float]:
        """Seconds per section since the last call, then cleared."""
        totals = dict(self.seconds)
        self.seconds.clear()
        self.calls.clear()
        return totals


class _NoTimer:
    """The default hook: sections cost nothing."""

    _null = contextlib.nullcontext()

    def section(self, name: str):
        return self._null


NO_TIMER = _NoTimer()
