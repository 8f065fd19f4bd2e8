"""NodeExecutor: a coroutine callback that awaits (a question or Watch goal waiting on the worker)
is tracked once, however many turns the executor makes while it waits. rclpy 9's
MultiThreadedExecutor appended it on every turn (4 094 entries after 12 s of the soak), and
copied and scanned that list each turn, which starved the image subscriptions."""

import threading
import time

import pytest
from ros_helpers import requires_ros

pytestmark = requires_ros


@pytest.fixture
def context():
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


def test_a_waiting_coroutine_is_tracked_once_and_still_resumed(context):
    import rclpy

    from livevlm_ros.ros.executor import NodeExecutor

    node = rclpy.create_node("executor_test", context=context)
    executor = NodeExecutor(num_threads=3, context=context)
    executor.add_node(node)
    waiting = executor.create_future()
    done = []

    async def wait_for_it():
        done.append(await waiting)

    ticks = []
    timer = node.create_timer(0.002, lambda: ticks.append(1))  # keeps the executor turning
    executor.create_task(wait_for_it)
    try:
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        assert len(ticks) > 50  # the executor made many turns while the coroutine waited
        assert len(executor._futures) <= 4, len(executor._futures)  # each task once (timer + coroutine)
        threading.Thread(target=lambda: waiting.set_result("answer")).start()  # the worker's hand-off
        deadline = time.monotonic() + 5.0
        while not done and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert done == ["answer"]
    finally:
        node.destroy_timer(timer)
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
