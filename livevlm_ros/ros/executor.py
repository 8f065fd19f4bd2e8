"""The node's executor: rclpy's ``MultiThreadedExecutor`` with bookkeeping bounded by the tasks in flight.

rclpy 9 (Kilted) yields a coroutine task that is awaiting a future again on every turn of the
executor's wait loop (ros2/rclpy#1405; fixed upstream in rclpy 10 by ros2/rclpy#1469), and
``MultiThreadedExecutor._spin_once_impl`` appends what it yields to its ``_futures`` list, whose
copy it then scans on every turn. The node's questions and Watch goals are such coroutines (they
``await`` the worker), so while one waits, the same task is appended turn after turn: measured in
the 12-s soak with one continuous Watch goal, the list held 820 entries after 1 s and 4 094 after
12 s, and the executor's main thread spent its time copying and scanning it. Image subscriptions
were then not served for up to 0.5 s, both cameras at once, while every other thread was idle;
a best-effort depth-5 history holds 0.17 s of a 30 Hz camera, so 10-20 % of the frames were
overwritten before the node saw them (``frames_received`` 291-331 of 360).
"""

from __future__ import annotations

from rclpy.executors import MultiThreadedExecutor

__all__ = ["NodeExecutor"]


class _DistinctFutures(list):
    """A list that holds each future once (``append`` of one already there does nothing).

    Its length is the number of distinct tasks in flight, so the executor's scan per turn stays
    short however long a coroutine waits."""

    def append(self, future) -> None:
        if not any(f is future for f in self):
            super().append(future)


class NodeExecutor(MultiThreadedExecutor):
    """``MultiThreadedExecutor(num_threads)`` whose list of tasks in flight holds each task once."""

    def __init__(self, num_threads=None, *, context=None) -> None:
        super().__init__(num_threads, context=context)
        self._futures = _DistinctFutures(self._futures)
