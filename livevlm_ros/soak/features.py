"""The two optional node features a soak run uses when the node has them: each switch is
decided here, once, and the rest of the soak only sees its outcome.

* **Watch** (``livevlm_interfaces/action/Watch``, served at ``~/watch``): :func:`watch_support`
  says whether the action type is importable; the client (:mod:`.load`'s runner) additionally
  needs the node to serve it. Either missing: the report says ``watch: not available (why)``.
* **Checkpoints** (node parameters ``memory_dir`` and ``checkpoint_period_s``):
  :func:`checkpoint_parameters` gives the parameter overrides when the node's parameter table
  (:mod:`livevlm_ros.ros.parameters`) declares both, else the reason they are not available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

__all__ = ["Feature", "watch_support", "watch_goal", "checkpoint_parameters", "WATCH_ACTION",
           "CHECKPOINT_PARAMETERS"]

#: Name of the Watch action, relative to the node.
WATCH_ACTION = "watch"
#: The node parameters a checkpointing node declares.
CHECKPOINT_PARAMETERS = ("memory_dir", "checkpoint_period_s")


@dataclass(frozen=True)
class Feature:
    """Whether an optional feature is used: ``available``; ``reason`` says why not (or what is used)."""

    available: bool
    reason: str
    detail: Optional[Any] = None

    def describe(self, name: str) -> str:
        return f"{name}: {self.reason}" if self.available else f"{name}: not available ({self.reason})"


def watch_support() -> Feature:
    """The Watch action type (``detail``) when ``livevlm_interfaces.action.Watch`` is importable."""
    try:
        from livevlm_interfaces.action import Watch
    except ImportError:
        return Feature(False, "livevlm_interfaces.action.Watch is not importable")
    return Feature(True, f"continuous watch on ~/{WATCH_ACTION}", Watch)


def watch_goal(watch_type, stream: str, period_s: float = 2.0):
    """A continuous Watch goal about ``stream`` (fields: condition, stream, period_s, threshold,
    consecutive, continuous, last_seconds). Raises TypeError/AttributeError if the type lacks one."""
    return watch_type.Goal(condition="a yellow square is in view", stream=stream, period_s=float(period_s),
                           threshold=0.5, consecutive=1, continuous=True, last_seconds=5.0)


def checkpoint_parameters(memory_dir: str, period_s: float) -> Feature:
    """``detail``: ``{memory_dir: ..., checkpoint_period_s: ...}`` node overrides, when declared."""
    from livevlm_ros.ros.parameters import base_parameter_specs

    declared = {spec.name for spec in base_parameter_specs()}
    missing = [name for name in CHECKPOINT_PARAMETERS if name not in declared]
    if missing:
        return Feature(False, f"the node declares no parameter {', '.join(missing)}")
    params: Dict[str, Any] = {"memory_dir": memory_dir, "checkpoint_period_s": float(period_s)}
    return Feature(True, f"every {period_s:g} s of stream time into {memory_dir}", params)
