"""The rclpy side of the load: camera publishers playing a :class:`~.load.CameraPlan`, the two
question clients (``~/ask`` service, ``~/ask_streaming`` action) playing a
:class:`~.load.QuestionPlan`, and the continuous Watch client.

Each question is recorded in a :class:`QuestionRecord` when sent and completed when its response
arrives, whatever it says; a question with no response at the end is lost.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from livevlm_ros.ros.questions import seconds_to_stamp

from .features import WATCH_ACTION, Feature, watch_goal
from .load import CameraPlan, FrameBank, Payload, QuestionSpec, malformed_payload

__all__ = ["CameraPlayer", "QuestionRecord", "QuestionLog", "AskClients", "WatchClient"]


def _time_msg(seconds: float):
    from builtin_interfaces.msg import Time

    sec, nanosec = seconds_to_stamp(seconds)
    return Time(sec=sec, nanosec=nanosec)


class CameraPlayer:
    """Publishes a camera plan on ``topic`` in its own thread, paced on the monotonic clock.

    Stamps are ``start_stamp_s + frame.stamp_s`` (node clock seconds at the start). ``stamp_offset_s``
    is the current stamp - publish time offset (0, or ``-jump_back_s`` after the jump): the node's
    ``newest_frame_age_s`` minus it is the age the pipeline adds.
    """

    def __init__(self, node, plan: CameraPlan, topic: str, duration_s: float, seed: int = 0):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self.plan, self.topic = plan, topic
        self.frames = plan.frames(duration_s)
        self.bank = FrameBank(plan.transport)
        self._msg_type = Image if plan.transport == "raw" else CompressedImage
        self._pub = node.create_publisher(self._msg_type, topic,
                                          QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self._rng = np.random.default_rng(seed)
        self.published = 0
        self.malformed_published = 0
        self.stamp_offset_s = 0.0
        self.late_s_max = 0.0  # worst lateness of a publish behind its schedule (s): a busy machine
        self._thread: Optional[threading.Thread] = None

    def subscribed(self) -> bool:
        return self._pub.get_subscription_count() > 0

    def _message(self, payload: Payload, stamp_s: float):
        msg = self._msg_type()
        msg.header.stamp, msg.header.frame_id = _time_msg(stamp_s), self.plan.name
        if self.plan.transport == "raw":
            msg.height, msg.width = payload.height, payload.width
            msg.encoding, msg.step = payload.encoding, payload.step
        else:
            msg.format = payload.format
        msg.data = payload.data
        return msg

    def start(self, start_stamp_s: float, wall0: float, stop: threading.Event) -> None:
        def run():
            for frame in self.frames:
                delay = wall0 + frame.t_s - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                if stop.is_set():
                    return
                self.late_s_max = max(self.late_s_max, -delay)
                payload = self.bank.payload(frame.index)
                if frame.malformed:
                    payload = malformed_payload(payload, frame.malformed, self._rng)
                    self.malformed_published += 1
                self.stamp_offset_s = frame.stamp_s - frame.t_s
                self._pub.publish(self._message(payload, start_stamp_s + frame.stamp_s))
                self.published += 1

        self._thread = threading.Thread(target=run, name=f"camera-{self.plan.name}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


@dataclass
class QuestionRecord:
    """One question sent: ``outcome`` None until a response, then ``answered`` / ``errored``.
    Times are monotonic seconds; ``node_latency_s`` is the node's ``total_latency_s``."""

    spec: QuestionSpec
    sent_at: float
    done_at: Optional[float] = None
    outcome: Optional[str] = None
    error: str = ""
    node_latency_s: Optional[float] = None

    @property
    def round_trip_s(self) -> Optional[float]:
        return None if self.done_at is None else self.done_at - self.sent_at


class QuestionLog:
    """Thread-safe list of :class:`QuestionRecord` (response callbacks run on executor threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: List[QuestionRecord] = []

    def sent(self, spec: QuestionSpec) -> QuestionRecord:
        record = QuestionRecord(spec, time.monotonic())
        with self._lock:
            self.records.append(record)
        return record

    def done(self, record: QuestionRecord, success: bool, error: str = "", node_latency_s: Optional[float] = None):
        with self._lock:
            if record.outcome is not None:
                return
            record.done_at = time.monotonic()
            record.outcome = "answered" if success else "errored"
            record.error, record.node_latency_s = error, node_latency_s

    def snapshot(self) -> List[QuestionRecord]:
        with self._lock:
            return list(self.records)

    def pending(self) -> int:
        with self._lock:
            return sum(r.outcome is None for r in self.records)


class AskClients:
    """The ``service`` client (``~/ask``) and the ``action`` client (``~/ask_streaming``)."""

    CLIENTS = ("service", "action")

    def __init__(self, node, node_name: str, log: QuestionLog, timeout_s: float, max_new_tokens: int = 8):
        from rclpy.action import ActionClient

        from livevlm_interfaces.action import Ask as AskAction
        from livevlm_interfaces.srv import Ask

        self._Ask, self._AskAction = Ask, AskAction
        self.service = node.create_client(Ask, f"{node_name}/ask")
        self.action = ActionClient(node, AskAction, f"{node_name}/ask_streaming")
        self.log, self.timeout_s, self.max_new_tokens = log, float(timeout_s), int(max_new_tokens)

    def wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.service.service_is_ready() and self.action.server_is_ready():
                return True
            time.sleep(0.1)
        return False

    def _fields(self, q: QuestionSpec) -> dict:
        return dict(question=q.question, stream=q.stream, last_seconds=q.last_seconds,
                    max_new_tokens=self.max_new_tokens, timeout_s=self.timeout_s)

    def ask(self, q: QuestionSpec) -> None:
        """Send ``q`` by its client; the response completes its record (never blocks)."""
        record = self.log.sent(q)
        if q.client == "service":
            future = self.service.call_async(self._Ask.Request(**self._fields(q)))
            future.add_done_callback(lambda f: self._on_response(record, f))
        elif q.client == "action":
            future = self.action.send_goal_async(self._AskAction.Goal(**self._fields(q)))
            future.add_done_callback(lambda f: self._on_goal(record, f))
        else:
            raise ValueError(f"unknown client {q.client!r}, expected one of {self.CLIENTS}")

    def _failed(self, record: QuestionRecord, future, what: str) -> bool:
        """Complete ``record`` as errored when ``future`` raised; True then."""
        exc = future.exception()
        if exc is not None:
            self.log.done(record, False, f"{what} failed: {exc!r}")
        return exc is not None

    def _on_response(self, record: QuestionRecord, future) -> None:
        if not self._failed(record, future, "call"):
            r = future.result()
            self.log.done(record, bool(r.success), r.error, float(r.total_latency_s))

    def _on_goal(self, record: QuestionRecord, future) -> None:
        if self._failed(record, future, "goal"):
            return
        handle = future.result()
        if not handle.accepted:
            self.log.done(record, False, "goal rejected")
            return
        handle.get_result_async().add_done_callback(lambda f: self._on_result(record, f))

    def _on_result(self, record: QuestionRecord, future) -> None:
        if not self._failed(record, future, "result"):
            r = future.result().result
            self.log.done(record, bool(r.success), r.error, float(r.total_latency_s))


class WatchClient:
    """One continuous Watch goal for the run; counts feedback messages; cancelled at the end."""

    def __init__(self, node, node_name: str, support: Feature, stream: str, period_s: float = 2.0):
        self.support, self.stream, self.period_s = support, stream, period_s
        self.feedbacks = 0
        self.status = support.describe("watch")
        self.result: Optional[str] = None
        self.result_fields: Dict[str, object] = {}
        self._handle = None
        self._client = None
        if support.available:
            from rclpy.action import ActionClient

            self._client = ActionClient(node, support.detail, f"{node_name}/{WATCH_ACTION}")

    def start(self, wait_s: float, on_status: Callable[[str], None]) -> bool:
        """Send the goal if the node serves ``~/watch``; ``status`` says what happened."""
        if self._client is None:
            return False
        if not self._client.wait_for_server(timeout_sec=wait_s):
            self.status = f"watch: not available (the node does not serve ~/{WATCH_ACTION})"
            return False
        try:
            goal = watch_goal(self.support.detail, self.stream, self.period_s)
        except (TypeError, AttributeError, ValueError) as exc:
            self.status = f"watch: not available (Watch goal does not take the expected fields: {exc})"
            return False
        future = self._client.send_goal_async(goal, feedback_callback=self._on_feedback)
        deadline = time.monotonic() + wait_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not future.done() or not future.result().accepted:
            self.status = "watch: goal not accepted"
            return False
        self._handle = future.result()
        self.status = f"watch: continuous on stream {self.stream}, period {self.period_s:g} s"
        on_status(self.status)
        return True

    def _on_feedback(self, _msg) -> None:
        self.feedbacks += 1

    def stop(self, wait_s: float) -> None:
        """Cancel the goal and wait for its result (``result``: ``"received"`` or ``"none"``)."""
        if self._handle is None:
            return
        self._handle.cancel_goal_async()
        future = self._handle.get_result_async()
        deadline = time.monotonic() + wait_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.result = "received" if future.done() else "none"
        if future.done():
            r = future.result().result
            # what the Watch result reports, where it has these fields (evaluations made, why it stopped)
            self.result_fields = {k: getattr(r, k) for k in ("evaluations", "fired", "error") if hasattr(r, k)}

    def as_dict(self, duration_s: float) -> Dict[str, object]:
        return {"status": self.status, "feedback_messages": self.feedbacks,
                "feedback_hz": self.feedbacks / duration_s if duration_s > 0 else None,
                "result_after_cancel": self.result, "result_fields": self.result_fields}
