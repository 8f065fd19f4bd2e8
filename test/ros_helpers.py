"""Helpers for tests that need a ROS graph: the livevlm node as its own process, an rclpy
client node in its own context, camera publishers and image messages.

Every test module that uses them skips (with the reason) where rclpy or the built
``livevlm_interfaces`` cannot be imported; run ``scripts/setup.sh`` to build them.
"""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def ros_missing_reason() -> Optional[str]:
    try:
        import rclpy  # noqa: F401
        import livevlm_interfaces.action  # noqa: F401
        import livevlm_interfaces.msg  # noqa: F401
        import livevlm_interfaces.srv  # noqa: F401
    except ImportError as exc:
        return f"rclpy or the built livevlm_interfaces is missing ({exc}): run scripts/setup.sh"
    return None


def require_ros() -> None:
    reason = ros_missing_reason()
    if reason:
        pytest.skip(reason)


requires_ros = pytest.mark.skipif(ros_missing_reason() is not None, reason=str(ros_missing_reason()))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


class RecordingLog:
    """An rclpy-style logger that keeps ``(level, message)`` pairs (``throttle_duration_sec`` etc. ignored)."""

    def __init__(self):
        self.lines = []

    def _add(self, level, msg, **_):
        self.lines.append((level, msg))

    def debug(self, msg, **kw):
        self._add("debug", msg, **kw)

    def info(self, msg, **kw):
        self._add("info", msg, **kw)

    def warning(self, msg, **kw):
        self._add("warning", msg, **kw)

    def error(self, msg, **kw):
        self._add("error", msg, **kw)

    def text(self, level=None) -> str:
        """Every message (of ``level``), one per line."""
        return "\n".join(m for lv, m in self.lines if level in (None, lv))


# ============================================================================ node process
class NodeProcess:
    """``python -m livevlm_ros.ros.node`` with parameters from a YAML file, output to a log file.

    Args:
        params: node parameters (flat names, e.g. ``{"model": "tiny-llava-onevision"}``).
        workdir: where the parameter file and the log go.
        name / namespace: node name and namespace (``-r __node:=`` / ``-r __ns:=``).
        remaps: ``["from:=to", ...]``.
        extra_ros_args: more ``--ros-args`` arguments.
    """

    def __init__(self, params: Dict, workdir: Path, name: str = "livevlm", namespace: str = "",
                 remaps: Sequence[str] = (), extra_ros_args: Sequence[str] = (), env: Optional[Dict] = None):
        self.params, self.workdir, self.name, self.namespace = dict(params), Path(workdir), name, namespace
        self.remaps, self.extra_ros_args = list(remaps), list(extra_ros_args)
        self.env = dict(os.environ if env is None else env)
        self.log_path = self.workdir / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None

    @property
    def fqn(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}" if self.namespace else f"/{self.name}"

    def command(self) -> List[str]:
        params_file = self.workdir / f"{self.name}_params.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": self.params}}))
        args = [sys.executable, "-m", "livevlm_ros.ros.node", "--ros-args", "--params-file", str(params_file),
                "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for remap in self.remaps:
            args += ["-r", remap]
        return args + self.extra_ros_args

    def start(self) -> "NodeProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=ROOT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def stop(self, sigint_timeout: float = 10.0, sigterm_timeout: float = 5.0) -> Optional[int]:
        """SIGINT, wait; then SIGTERM, wait; then SIGKILL. Returns the exit status."""
        from livevlm_ros.tools.ros_cli import stop_process

        if self.proc is None:
            return None
        self.returncode = stop_process(self.proc, sigint_timeout, sigterm_timeout)
        self._log.close()
        return self.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# ============================================================================ client node
class RosClient:
    """An rclpy node in its own context, spun by a MultiThreadedExecutor in a background thread."""

    def __init__(self, name: str):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._clients: Dict = {}

    def now(self):
        return self.node.get_clock().now()

    def client(self, srv_type, name: str):
        key = (srv_type, name)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, name)
        return self._clients[key]

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        """Call a service (waits for it first); returns the response or raises AssertionError."""
        client = self.client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        wait_until(future.done, timeout, f"a response from {name}", poll=0.0005)
        return future.result()

    def subscribe(self, msg_type, topic: str, qos=10) -> List:
        """Messages received on ``topic`` are appended to the returned list."""
        received: List = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()


# ============================================================================ images
def raw_image_msg(rgb: np.ndarray, stamp, encoding: str = "bgr8"):
    from livevlm_ros.tools.ros_cli import image_msg

    return image_msg(rgb, stamp, encoding)


def compressed_image_msg(rgb: Optional[np.ndarray], stamp, data: Optional[bytes] = None):
    from livevlm_ros.tools import ros_cli

    return ros_cli.compressed_image_msg(rgb, stamp, quality=80, data=data)


def sensor_qos(depth: int = 5, reliable: bool = True):
    """Camera publisher QoS: REP-2003 says publishers are reliable (best-effort subscribers match)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


class CameraPublisher:
    """Publishes frames of ``render(t)`` at ``rate_hz`` in a thread, stamped with the client's clock.

    Args:
        client: the :class:`RosClient`.
        topic: image topic.
        transport: ``raw`` (bgr8 Image) or ``compressed`` (JPEG CompressedImage).
        render: ``t -> RGB uint8`` (t: seconds since start); JPEGs of identical frames are cached.
    """

    def __init__(self, client: RosClient, topic: str, transport: str, render: Callable[[float], np.ndarray],
                 rate_hz: float = 30.0):
        from sensor_msgs.msg import CompressedImage, Image

        self.client, self.transport, self.render, self.rate_hz = client, transport, render, rate_hz
        self.publisher = client.node.create_publisher(
            CompressedImage if transport == "compressed" else Image, topic, sensor_qos())
        self.count = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def wait_for_subscriber(self, timeout: float = 20.0) -> "CameraPublisher":
        wait_until(lambda: self.publisher.get_subscription_count() > 0, timeout, "the node's subscription")
        return self

    def message(self, t: float):
        stamp = self.client.now().to_msg()
        rgb = self.render(t)
        if self.transport == "compressed":
            return compressed_image_msg(rgb, stamp)
        return raw_image_msg(rgb, stamp)

    def _run(self):
        t0 = time.monotonic()
        next_t = t0
        while not self._stop.is_set():
            self.publisher.publish(self.message(time.monotonic() - t0))
            self.count += 1
            next_t += 1.0 / self.rate_hz
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def start(self) -> "CameraPublisher":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        return self.count

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ============================================================================ actions
class ActionFeedback:
    """Every feedback message of an action's goals, read from its feedback topic
    (``<action>/_action/feedback``, reliable keep-all) and handed to the goal's callback in order.

    rclpy's ``ActionClient`` loses feedback a test must see, in two ways (measured with a
    keep-all subscription on the same topic, which got every message the node sent):

    * it forgets a goal's feedback callback as soon as the goal's result response arrives
      (rclpy#927). The result comes on the GetResult service, a channel of its own, so it can
      overtake the last feedback messages, which are then dropped: under load the test saw
      ``partial_answer`` stop a few tokens short of the answer;
    * its feedback subscription keeps the last 10 messages (``QoSProfile(depth=10)``), and it takes
      one per executor turn: a burst of tokens overwrites the first ones before they are taken.

    Args:
        node: the client's rclpy node.
        action_type: e.g. ``livevlm_interfaces.action.Ask``.
        name: the action's fully qualified name, e.g. ``/livevlm/ask_streaming``.
    """

    def __init__(self, node, action_type, name: str):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self._callbacks: Dict[bytes, Callable] = {}
        self._lock = threading.Lock()
        qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self.subscription = node.create_subscription(
            action_type.Impl.FeedbackMessage, f"{name.rstrip('/')}/_action/feedback", self._on_feedback, qos)

    def wait_matched(self, timeout: float) -> None:
        """Wait until the server's feedback publisher is matched (feedback sent before is not seen)."""
        wait_until(lambda: self.subscription.get_publisher_count() > 0, timeout, "the action's feedback publisher")

    def register(self, goal_uuid: bytes, callback: Callable) -> None:
        """``callback(FeedbackMessage)`` for each feedback message of goal ``goal_uuid`` (16 bytes)."""
        with self._lock:
            self._callbacks[bytes(goal_uuid)] = callback

    def _on_feedback(self, msg) -> None:
        with self._lock:
            callback = self._callbacks.get(bytes(msg.goal_id.uuid))
        if callback is not None:
            callback(msg)


def action_client(client: RosClient, action_type, name: str):
    """An rclpy ActionClient for ``name`` (one per name and client), its server found, with an
    :class:`ActionFeedback` for its goals' feedback (``.feedback_topic``, used by :func:`send_goal`)."""
    from rclpy.action import ActionClient

    cache = client.__dict__.setdefault("_action_clients", {})
    if name not in cache:
        action = ActionClient(client.node, action_type, name)
        action.feedback_topic = ActionFeedback(client.node, action_type, name)
        cache[name] = action
    assert cache[name].wait_for_server(timeout_sec=10.0), f"action server {name} not available"
    cache[name].feedback_topic.wait_matched(10.0)
    return cache[name]


def send_goal(action, goal, feedback=None):
    """Send ``goal`` with ``action`` (from :func:`action_client`); the accepted goal handle.

    ``feedback(FeedbackMessage)`` gets every feedback message of the goal, also those that arrive
    after its result (see :class:`ActionFeedback`)."""
    import uuid

    from unique_identifier_msgs.msg import UUID

    goal_uuid = UUID(uuid=list(uuid.uuid4().bytes))
    if feedback is not None:
        action.feedback_topic.register(bytes(goal_uuid.uuid), feedback)
    future = action.send_goal_async(goal, goal_uuid=goal_uuid)
    wait_until(future.done, 10.0, "goal acceptance")
    handle = future.result()
    assert handle.accepted
    return handle


def goal_result(handle, timeout: float = 30.0):
    """The goal's result response (``.status``, ``.result``)."""
    future = handle.get_result_async()
    wait_until(future.done, timeout, "the action result")
    return future.result()
