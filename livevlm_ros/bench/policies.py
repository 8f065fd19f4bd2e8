"""The memory/retrieval policies compared by the benchmark, as EngineConfig changes."""

from __future__ import annotations

import copy

from livevlm_ros.engine import EngineConfig

#: Benchmark policy name -> (EngineConfig.memory, EngineConfig.retrieval), in report order.
POLICIES = {
    "full": ("full", "none"),
    "sliding": ("sliding", "none"),
    "rekv": ("rekv", "none"),
    "topk": ("topk", "none"),
    "vsb": ("vsb", "none"),
    "vsb+par": ("vsb", "par"),
    "vsb+par-pe": ("vsb", "par-pe"),
}
POLICY_NAMES = tuple(POLICIES)

#: Order in which a sweep runs them: bounded policies first, so the slowest (``full``) gets
#: whatever time budget the others left.
RUN_ORDER = ("vsb+par", "rekv", "vsb", "vsb+par-pe", "topk", "sliding", "full")


def policy_config(policy: str, base: EngineConfig) -> EngineConfig:
    """``base`` with the memory and retrieval policy of benchmark policy ``policy``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {POLICY_NAMES}")
    memory, retrieval = POLICIES[policy]
    return base.replace(memory=memory, retrieval=retrieval)


def run_order(policies) -> list:
    """``policies`` sorted into :data:`RUN_ORDER`."""
    return sorted(policies, key=RUN_ORDER.index)


def without_eos(model):
    """A shallow copy of a ``VideoLLM`` whose end-of-sequence set is empty.

    Answers then always run to ``max_new_tokens`` (fixed-length timing); the copy shares every
    module and tensor with ``model`` and the engine's defaults are untouched.
    """
    clone = copy.copy(model)
    clone.eos_token_ids = frozenset()
    return clone
