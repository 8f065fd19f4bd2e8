"""Memory policies as objects: each decides which long-term tokens survive a compression.

One small interface (anchors: transformers ``cache_utils`` layer caches, streaming-llm's
``StartRecentKVCache``): a policy says whether it needs importance scores, whether its evictions go
to host memory, and ranks a :class:`Region` (lower priority survives). The shared
:meth:`MemoryPolicy.select` turns a ranking into survivors, applying the frame unit and the
structure rule (:func:`~livevlm_ros.engine.compression.keep_by_priority`).

Adding a policy: one subclass with ``@register`` and its name in ``config.MEMORY_POLICIES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from . import compression
from .config import MEMORY_POLICIES, EngineConfig


@dataclass
class Region:
    """The long-term tokens of every lane (layer, or layer x KV head) at a compression.

    Attributes:
        scores: ``[G, n]`` float32 importance (``None`` for policies that need none).
        position: ``[G, n]`` int64 original stream positions (ascending).
        frame: ``[G, n]`` int64 frame index. vision: ``[G, n]`` bool (False: structure tokens).
    """

    scores: Optional[torch.Tensor]
    position: torch.Tensor
    frame: torch.Tensor
    vision: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.position.shape)


class MemoryPolicy:
    """Base class: which long-term tokens to keep.

    Attributes:
        name: the ``EngineConfig.memory`` value that selects it.
        needs_scores: the region must carry VSB-style importance scores.
        evicts_to_host: evicted tokens are kept in host memory and retrieved per question (ReKV).
        bounded: False for the policy that never compresses (``full``).
    """

    name: ClassVar[str] = ""
    needs_scores: ClassVar[bool] = False
    evicts_to_host: ClassVar[bool] = False
    bounded: ClassVar[bool] = True

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    def priority(self, region: Region, budget: int) -> torch.Tensor:
        """``[G, n]`` ranking of the region's tokens, lower survives first."""
        raise NotImplementedError

    def state(self) -> dict:
        """Tensors a checkpoint must carry for the policy to continue exactly (none by default)."""
        return {}

    def load_state(self, tensors: dict, device: torch.device) -> None:
        """Restore what :meth:`state` returned."""

    def select(self, region: Region, budget: int) -> torch.Tensor:
        """``[G, min(budget, n)]`` ascending offsets of the survivors of each lane."""
        if self.config.keep_unit == "frame" and region.scores is not None:
            region = Region(compression.pool_per_frame(region.scores, region.frame, region.vision, "mean"),
                            region.position, region.frame, region.vision)
        priority = self.priority(region, budget)
        if self.config.keep_unit == "frame":
            priority = compression.pool_per_frame(priority, region.frame, region.vision, "amin")
        return compression.keep_by_priority(priority, region.frame, region.vision, budget)


POLICIES: dict[str, type[MemoryPolicy]] = {}


def register(cls: type[MemoryPolicy]) -> type[MemoryPolicy]:
    """Class decorator: make ``cls`` selectable as ``EngineConfig(memory=cls.name)``."""
    if cls.name not in MEMORY_POLICIES:
        raise ValueError(f"policy {cls.name!r} is not listed in config.MEMORY_POLICIES")
    POLICIES[cls.name] = cls
    return cls


def make_policy(config: EngineConfig) -> MemoryPolicy:
    """The policy object ``config.memory`` names."""
    return POLICIES[config.memory](config)


@register
class FullMemory(MemoryPolicy):
    """Keep every token (the vanilla video LLM): memory and positions grow with the stream."""

    name = "full"
    bounded = False

    def priority(self, region: Region, budget: int) -> torch.Tensor:  # never asked: full never compresses
        raise RuntimeError("the full memory policy never compresses")


@register
class SlidingWindow(MemoryPolicy):
    """StreamingLLM: the prompt prefix as attention sinks plus the newest ``budget`` tokens."""

    name = "sliding"

    def priority(self, region: Region, budget: int) -> torch.Tensor:
        return -region.position


@register
class RandomKeeping(MemoryPolicy):
    """Keep a uniformly random subset: the null baseline every policy must beat."""

    name = "random"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._generator: Optional[torch.Generator] = None

    def _generator_on(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator(device=device).manual_seed(self.config.seed)
        return self._generator

    def priority(self, region: Region, budget: int) -> torch.Tensor:
        device = region.position.device
        return torch.rand(region.shape, generator=self._generator_on(device), device=device)

    def state(self) -> dict:
        return {} if self._generator is None else {"policy.generator": self._generator.get_state()}

    def load_state(self, tensors: dict, device: torch.device) -> None:
        if "policy.generator" in tensors:
            self._generator_on(device).set_state(tensors["policy.generator"])


@register
class TopK(MemoryPolicy):
    """VSB's importance score without buckets (the paper's Top-K ablation)."""

    name = "topk"
    needs_scores = True

    def priority(self, region: Region, budget: int) -> torch.Tensor:
        return -region.scores


@register
class VisionSinkBucketing(MemoryPolicy):
    """LiveVLM's VSB: saliency (phase 1), then coverage over ``budget / B`` buckets (phase 2).

    Buckets split the stream positions the region spans (``vsb_buckets="stream"``), so every
    stretch of the stream keeps its share however long it runs; ``"memory"`` splits the compacted
    memory index instead (the ablation, which only thins memory evenly).
    """

    name = "vsb"
    needs_scores = True

    def priority(self, region: Region, budget: int) -> torch.Tensor:
        cfg = self.config
        lanes, n = region.shape
        num_buckets = max(1, budget // cfg.bucket_capacity)
        if cfg.vsb_buckets == "stream":
            bucket = compression.stream_buckets(region.position, num_buckets)
        else:
            bucket = compression.memory_buckets(lanes, n, num_buckets, region.position.device)
        return compression.vsb_priority(region.scores, region.vision, bucket, num_buckets, budget,
                                        cfg.bucket_capacity, cfg.saliency_share)


@register
class ReKVOffload(SlidingWindow):
    """ReKV-style: a sliding window on the device; evicted tokens go to host RAM and the best frames
    (by mean key) are fetched back per layer at question time."""

    name = "rekv"
    evicts_to_host = True


missing = set(MEMORY_POLICIES) - set(POLICIES)
if missing:  # pragma: no cover - a policy listed in the config must have a class
    raise ImportError(f"memory policies without a class: {sorted(missing)}")
