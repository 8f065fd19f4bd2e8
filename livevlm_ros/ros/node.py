"""``livevlm`` lifecycle node: camera topics in, answers about what was seen out.

Interfaces (relative to the node name, default ``/livevlm``):

* subscribes ``streams.<name>.topic`` per stream (``sensor_msgs/Image`` or ``CompressedImage``),
  QoS from parameters (default best-effort keep-last 5, REP-2003), while *active*;
* service ``~/ask`` (``livevlm_interfaces/srv/Ask``), action ``~/ask_streaming``
  (``livevlm_interfaces/action/Ask``, one feedback per token, cancel returns the partial answer),
  service ``~/reset`` (``livevlm_interfaces/srv/Reset``), created on configure;
* action ``~/watch`` (``livevlm_interfaces/action/Watch``): standing yes/no conditions, feedback per
  evaluation; every rising and falling edge also on ``~/events`` (``livevlm_interfaces/msg/WatchEvent``);
* publishes ``~/memory_status`` (``livevlm_interfaces/msg/MemoryStatus``, while active) and
  ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, always) every ``status_period_s``, and
  ``~/memory_view`` (``sensor_msgs/Image`` rgb8, while active and subscribed) at the same rate.

Lifecycle: ``on_configure`` validates the parameters, loads the model once and makes one
``LiveVLMStream`` per stream (sharing the model), restoring each stream's memory from
``memory_dir`` where it has a matching checkpoint (:mod:`livevlm_ros.ros.memory_store`);
``on_activate`` subscribes and starts the worker thread; ``on_deactivate`` unsubscribes and stops
it (memory kept, and saved to ``memory_dir``); ``on_cleanup`` frees the model. With ``autostart``
(default) ``main`` configures and activates at once.

No question is left hanging: questions queued or being answered when the node deactivates, shuts
down (lifecycle or SIGINT/SIGTERM) get an error response, or an aborted action result, at once; on a
signal ``main`` keeps the executor spinning until those responses are out, then saves the memory
and exits.

Concurrency contract (see also :mod:`livevlm_ros.ros.worker`):

* one :class:`~livevlm_ros.ros.worker.InferenceWorker` thread owns the model and every stream;
* image callbacks run in one *mutually exclusive* callback group per stream (so a stream's
  sampler needs no lock against itself) and only sample, decode and hand the newest frame over;
* ``~/ask``, ``~/reset`` and ``~/ask_streaming`` run in one *reentrant* group as coroutines that
  queue a job and ``await`` its completion: a waiting question occupies no executor thread, so
  images keep flowing and several questions can wait (FIFO, bounded) while one is answered;
* the executor is :class:`~livevlm_ros.ros.executor.NodeExecutor` (rclpy's multi-threaded one,
  whose bookkeeping of those waiting coroutines no longer grows with the time they wait);
* timers (status, diagnostics, queue expiry) run in their own mutually exclusive group on a
  steady clock (they keep running under ``use_sim_time`` before ``/clock`` starts) and only
  read counters and the stats snapshot the worker stores.

Time: every frame is sampled and windowed by its *header stamp* (float seconds); the node clock
(ROS time, sim time with ``use_sim_time``) is used only for status stamps and frame ages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import gc
import os
import signal
import sys
import threading
import time
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence

import rclpy
import rclpy.exceptions
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from livevlm_interfaces.action import Ask as AskAction
from livevlm_interfaces.action import Watch as WatchAction
from livevlm_interfaces.msg import MemoryStatus, StreamStatus, WatchEvent
from livevlm_interfaces.srv import Ask, Reset
from livevlm_ros.io.frame_sampler import FrameSampler, JumpPolicy, Verdict
from livevlm_ros.io.image_codec import decode_image_msg
from livevlm_ros.io.thumbnails import ThumbnailRing

from .cdr import cdr_header_stamp
from .executor import NodeExecutor
from .memory_store import MemoryStore
from .evidence import evidence_images, evidence_stamps, memory_view_image, rgb_image_msg, to_time
from .parameters import (
    DYNAMIC_PARAMETERS,
    NODE_NAME,
    NodeSettings,
    SettingsError,
    StreamSettings,
    all_parameter_specs,
    base_parameter_specs,
    engine_parameter_specs,
    settings_from_parameters,
    stream_parameter_specs,
    to_descriptor,
)
from .questions import Question, QuestionError, question_from_request
from .status import StreamHealth, model_level, stream_level
from .watch_board import WatchBoard, WatchJob, WatchLimitError, WatchOutcome
from .watches import Edge, WatchError, watch_from_goal
from .worker import (
    Answer,
    InferenceWorker,
    Job,
    QueueFullError,
    QuestionJob,
    ResetJob,
    StreamRuntime,
    WorkerStoppedError,
)

__all__ = ["LiveVLMNode", "main"]

#: Seconds between two identical warnings about bad input (per call site).
WARN_THROTTLE_S = 5.0
#: Period (s) of the sweep that times out / cancels questions still waiting in the queue.
EXPIRE_PERIOD_S = 0.1
#: Longest wait (s) for the responses to questions failed by a deactivate / shutdown / signal.
RESPONSE_GRACE_S = 2.0

_RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
    "best_available": ReliabilityPolicy.BEST_AVAILABLE,
}

ModelLoader = Callable[[str, str, str], Any]
StreamFactory = Callable[[Any, Any], Any]


def _freeze_heap() -> None:
    """Move every object alive now (the model, torch, transformers: ~370 000 objects with the tiny
    model) out of the garbage collector's view (``gc.freeze``) once configure has made them.

    Each full (generation 2) collection traverses them all and holds the GIL while it does (0.17 s
    for one quiet full collection; 80-240 ms each, several in a 12-s soak on 2 cores), so no
    callback runs and a best-effort depth-5 image subscription (0.17 s of a 30 Hz camera)
    overwrites frames. With them frozen the soak's full collections took 10-25 ms. They live
    until cleanup, which unfreezes them before it collects.
    """
    gc.collect()
    gc.freeze()


def _load_model(model: str, device: str, dtype: str):
    from livevlm_ros.engine import load_video_llm

    return load_video_llm(model, device=device, dtype=dtype)


def _make_stream(model, config):
    from livevlm_ros.engine import LiveVLMStream

    return LiveVLMStream(model, config)


def _sampler(settings: NodeSettings) -> FrameSampler:
    return FrameSampler(settings.sample_fps, settings.timestamp_jump_policy, settings.stamp_jitter_tolerance_s,
                        require_stamps=True)


def _ring(settings: NodeSettings) -> Optional[ThumbnailRing]:
    return ThumbnailRing(settings.thumbnail_ring_bytes) if settings.thumbnail_ring_bytes > 0 else None


def _fill_answer(out, answer: Answer, images: Sequence = ()):
    """Copy an :class:`Answer` (and its engine :class:`AskResult`, if any) into an Ask response or action
    result; ``images``: its evidence thumbnails (``sensor_msgs/CompressedImage``)."""
    out.success = answer.success
    out.answer = answer.answer
    out.error = answer.error
    out.total_latency_s = float(answer.total_latency_s)
    result = answer.result
    if result is not None:
        out.time_to_first_token_s = float(result.ttft_s)
        out.frames_seen = int(result.frames_seen)
        out.span_start = to_time(result.span_start)
        out.span_end = to_time(result.span_end)
        out.memory_tokens = int(result.memory_tokens)
        out.pages_retrieved = float(result.pages_retrieved)
        out.evidence_stamps = evidence_stamps(result.evidence)
    out.evidence_images = list(images)
    return out


def _random_weights_banner(name: str) -> str:
    line = "!" * 78
    return (f"\n{line}\n!! MODEL {name!r} HAS RANDOM WEIGHTS (a built-in test model).\n"
            "!! Its answers are NOT about the images: use it for plumbing tests only.\n"
            "!! Set the parameter `model` to a real checkpoint (e.g. llava-hf/llava-onevision-qwen2-0.5b-ov-hf).\n"
            f"{line}")


class LiveVLMNode(LifecycleNode):
    """Streaming video-LLM perception node (see the module docstring).

    Args:
        node_name: ROS node name.
        model_loader: ``(model, device, dtype) -> VideoLLM`` (default ``load_video_llm``).
        stream_factory: ``(model, EngineConfig) -> LiveVLMStream`` (injectable for tests).
        **kwargs: passed to ``LifecycleNode`` (namespace, parameter_overrides, context...).
    """

    def __init__(self, node_name: str = NODE_NAME, *, model_loader: Optional[ModelLoader] = None,
                 stream_factory: Optional[StreamFactory] = None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._model_loader = model_loader or _load_model
        self._stream_factory = stream_factory or _make_stream
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._declare_parameters()

        self._settings: Optional[NodeSettings] = None
        self._model: Any = None
        self._model_error = ""
        self._streams: Dict[str, StreamRuntime] = {}
        self._worker: Optional[InferenceWorker] = None
        self._active = False
        self._image_subscriptions: List[Any] = []
        self._api_services: List[Any] = []  # created on configure, destroyed on cleanup
        self._status_timers: List[Any] = []
        self._action_server: Optional[ActionServer] = None
        self._watch_server: Optional[ActionServer] = None
        self._watches: Optional[WatchBoard] = None
        self._status_pub = None
        self._events_pub = None
        self._view_pub = None
        self._view_group = MutuallyExclusiveCallbackGroup()  # rendering never delays status timers
        self._last_counts: Dict[str, tuple] = {}
        self._memory_store: Optional[MemoryStore] = None
        self._requests_in_flight = 0  # Ask service calls and action goals not yet returned
        self._requests_lock = threading.Lock()

        self._api_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            float(self.get_parameter("status_period_s").value), self._publish_diagnostics,
            callback_group=self._timer_group, clock=self._steady)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ================================================================== parameters
    def _declare_parameters(self) -> None:
        for spec in base_parameter_specs() + engine_parameter_specs():
            self.declare_parameter(spec.name, spec.default, to_descriptor(spec))
        for name in dict.fromkeys(self.get_parameter("streams").value or []):
            for spec in stream_parameter_specs(name):
                self.declare_parameter(spec.name, spec.default, to_descriptor(spec))

    def _parameter_values(self) -> Dict[str, Any]:
        names = [s.name for s in all_parameter_specs(dict.fromkeys(self.get_parameter("streams").value or []))]
        return {name: self.get_parameter(name).value for name in names if self.has_parameter(name)}

    def _undeclared_overrides(self) -> Dict[str, Any]:
        """Values given for this node (``--params-file``, ``-p``) that name no declared parameter:
        a misspelled name would otherwise be ignored without a word (rclpy keeps them aside)."""
        overrides = getattr(self, "_parameter_overrides", {})  # rclpy Node: name -> Parameter
        return {name: p.value for name, p in overrides.items() if not self.has_parameter(name)}

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate a runtime change through the same path as configure; apply the dynamic ones."""
        changes = {p.name: p.value for p in params}
        try:
            candidate = settings_from_parameters({**self._parameter_values(), **changes})
        except SettingsError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self._settings is not None and DYNAMIC_PARAMETERS & changes.keys():
            dynamic = {name: getattr(candidate, name) for name in DYNAMIC_PARAMETERS}
            self._settings = dataclasses.replace(self._settings, **dynamic)
            for rt in self._streams.values():
                with rt.lock:
                    rt.sampler.set_rate(candidate.sample_fps, candidate.stamp_jitter_tolerance_s)
                    rt.sampler.policy = JumpPolicy(candidate.timestamp_jump_policy)
            if self._worker is not None:
                self._worker.max_queued = candidate.max_queued_questions
        return SetParametersResult(successful=True)

    @property
    def settings(self) -> Optional[NodeSettings]:
        """The validated settings (None until configured)."""
        return self._settings

    # ================================================================== lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            settings = settings_from_parameters({**self._undeclared_overrides(), **self._parameter_values()},
                                                strict=True)
        except SettingsError as exc:
            self._model_error = str(exc)
            log.error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        log.info(f"loading model {settings.model!r} on {settings.device} ({settings.dtype})...")
        t0 = self._steady.now()
        try:
            model = self._model_loader(settings.model, settings.device, settings.dtype)
        except Exception as exc:  # ModelLoadError, CUDA out of memory, a broken checkpoint...
            self._model_error = f"{type(exc).__name__}: {exc}"
            log.error(
                f"configure failed: could not load model {settings.model!r} on {settings.device} "
                f"({settings.dtype}): {exc}\n  What to do: set the parameter `model` to a Hugging Face hub id "
                "reachable from this machine (or already in the local cache, HF_HUB_OFFLINE=1), a local checkpoint "
                "directory, or tiny-llava-onevision for a smoke test; without a GPU use device:=cpu dtype:=float32.")
            return TransitionCallbackReturn.FAILURE
        try:
            streams = {
                s.name: StreamRuntime(s, self._stream_factory(model, settings.engine), _sampler(settings),
                                      settings.frame_queue_depth, thumbnails=_ring(settings),
                                      track_memory=settings.memory_view)
                for s in settings.streams
            }
        except Exception as exc:  # e.g. a memory budget the model's context cannot hold
            self._model_error = f"{type(exc).__name__}: {exc}"
            log.error(f"configure failed: model {settings.model!r} loaded, but its streams could not be created: {exc}")
            return TransitionCallbackReturn.FAILURE
        for rt in streams.values():
            rt.topic = self.resolve_topic_name(rt.settings.topic)
        if settings.memory_dir:
            try:
                self._memory_store = self._restore_memory(settings, streams)
            except OSError as exc:
                self._model_error = f"memory_dir: {exc}"
                log.error(f"configure failed: memory_dir {settings.memory_dir!r} cannot be used: {exc} "
                          "(set it to a writable directory, or to '' to keep the memory in RAM only)")
                return TransitionCallbackReturn.FAILURE
        load_s = (self._steady.now() - t0).nanoseconds * 1e-9
        self._settings, self._model, self._streams, self._model_error = settings, model, streams, ""
        log.info(f"model {model.name!r} loaded in {load_s:.1f} s on {model.device} ({model.dtype}); streams: "
                 + ", ".join(f"{rt.name} <- {rt.topic} [{rt.settings.transport}]" for rt in streams.values()))
        if getattr(model, "is_tiny", False):
            log.warning(_random_weights_banner(model.name))
        self._create_interfaces(settings)
        _freeze_heap()
        return TransitionCallbackReturn.SUCCESS

    def _restore_memory(self, settings: NodeSettings, streams: Dict[str, StreamRuntime]) -> MemoryStore:
        """The node's :class:`MemoryStore`, each stream restored from its checkpoint where it matches."""
        store = MemoryStore(os.path.expanduser(settings.memory_dir), settings.checkpoint_period_s, self.get_logger())
        for rt in streams.values():
            store.restore(rt)  # logs what it restored, or why not
        return store

    def _create_interfaces(self, settings: NodeSettings) -> None:
        api = self._api_group
        self._status_pub = self.create_lifecycle_publisher(MemoryStatus, "~/memory_status", 10)
        self._api_services = [
            self.create_service(Ask, "~/ask", self._on_ask, callback_group=api),
            self.create_service(Reset, "~/reset", self._on_reset, callback_group=api),
        ]
        self._action_server = ActionServer(
            self, AskAction, "~/ask_streaming", execute_callback=self._execute_ask,
            goal_callback=lambda _goal: GoalResponse.ACCEPT, cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=api)
        self._events_pub = self.create_lifecycle_publisher(WatchEvent, "~/events", 10)
        self._view_pub = self.create_lifecycle_publisher(Image, "~/memory_view", 1)
        # A refused goal is accepted and aborted at once with `error` saying why: a goal rejection
        # carries no reason in ROS 2.
        self._watch_server = ActionServer(
            self, WatchAction, "~/watch", execute_callback=self._execute_watch,
            goal_callback=lambda _goal: GoalResponse.ACCEPT, cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=api)
        self._status_timers = [
            self.create_timer(settings.status_period_s, self._publish_memory_view,
                              callback_group=self._view_group, clock=self._steady),
            self.create_timer(settings.status_period_s, self._publish_memory_status,
                              callback_group=self._timer_group, clock=self._steady),
            self.create_timer(EXPIRE_PERIOD_S, self._expire_questions, callback_group=self._timer_group,
                              clock=self._steady),
        ]

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self._settings
        self._watches = WatchBoard(settings.max_watches, self.get_logger())
        self._worker = InferenceWorker(self._streams, max_queued=settings.max_queued_questions,
                                       logger=self.get_logger(), store=self._memory_store,
                                       watches=self._watches)
        self._worker.start()
        for rt in self._streams.values():
            self._image_subscriptions.append(self._subscribe(rt))
        self._active = True
        self.get_logger().info("active: subscribed to " + ", ".join(s.topic_name for s in self._image_subscriptions))
        return super().on_activate(state)

    def _subscribe(self, rt: StreamRuntime):
        s: StreamSettings = rt.settings
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=s.qos.depth,
                         reliability=_RELIABILITY[s.qos.reliability], durability=DurabilityPolicy.VOLATILE)
        events = SubscriptionEventCallbacks(incompatible_qos=partial(self._on_incompatible_qos, rt))
        msg_type = CompressedImage if s.transport == "compressed" else Image
        # raw=True: the callback gets the serialized bytes; only sampled frames are deserialized.
        return self.create_subscription(
            msg_type, s.topic, partial(self._on_image, rt, msg_type), qos,
            callback_group=MutuallyExclusiveCallbackGroup(), event_callbacks=events, raw=True)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def _stop_processing(self) -> None:
        self._active = False
        for sub in self._image_subscriptions:
            self.destroy_subscription(sub)
        self._image_subscriptions = []
        if self._worker is None:
            return
        stopped = self._worker.stop(timeout=30.0)
        self._worker = None
        if not stopped:
            self.get_logger().error("the worker thread did not stop within 30 s (memory not saved)")
        elif self._memory_store is not None:
            if not self._memory_store.save_all(self._streams.values()):
                self.get_logger().error(f"memory checkpoints to {self._memory_store.directory} did not finish in time")

    def requests_in_flight(self) -> int:
        """Ask service calls and action goals that have not returned yet."""
        with self._requests_lock:
            return self._requests_in_flight

    def wait_for_responses(self, timeout: float = RESPONSE_GRACE_S, settle_s: float = 0.3) -> bool:
        """Wait (other executor threads answer) until no question is in flight, then ``settle_s`` more for
        rclpy to send the last responses and action results (tasks of their own); False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.requests_in_flight() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(settle_s)
        return not self.requests_in_flight()

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Destroy the configure-time interfaces and free the model."""
        for timer in self._status_timers:
            self.destroy_timer(timer)
        for service in self._api_services:
            self.destroy_service(service)
        for server in (self._action_server, self._watch_server):
            if server is not None:
                server.destroy()
        self._status_timers, self._api_services, self._action_server, self._watch_server = [], [], None, None
        for pub in (self._status_pub, self._events_pub, self._view_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._status_pub = self._events_pub = self._view_pub = None
        if self._memory_store is not None:
            self._memory_store.close()
            self._memory_store = None
        device = str(getattr(self._model, "device", ""))
        self._streams, self._model, self._settings = {}, None, None
        gc.unfreeze()  # the model's objects can be collected again (see _freeze_heap)
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_engine()
        self.wait_for_responses()  # the failed questions' responses go out before the services go
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state {state.label}: releasing the model")
        self.release_engine()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def release_engine(self) -> None:
        """Stop the worker and unsubscribe (safe to call more than once, also after rclpy shutdown)."""
        try:
            self._stop_processing()
        except Exception as exc:  # the context may already be shut down
            self.get_logger().debug(f"release: {exc!r}")

    # ================================================================== images
    def _decode(self, rt: StreamRuntime, msg_type, data: bytes):
        msg = deserialize_message(data, msg_type)
        rt.frame_id = msg.header.frame_id  # for the evidence thumbnails' headers
        return decode_image_msg(msg, self._settings.max_pixels)

    def _on_image(self, rt: StreamRuntime, msg_type, data: bytes) -> None:
        """Image callback (serialized message): sample by header stamp, then deserialize and decode
        only a kept frame and hand it to the worker; never waits on the model."""
        try:
            stamp = cdr_header_stamp(data)
        except ValueError as exc:
            rt.reject_unreadable()
            self.get_logger().warning(f"stream {rt.name} ({rt.topic}): unreadable message: {exc}",
                                      throttle_duration_sec=WARN_THROTTLE_S)
            return
        offer = rt.offer(stamp, partial(self._decode, rt, msg_type, data))
        if offer.verdict is Verdict.KEEP:
            if offer.new_epoch:
                self.get_logger().info(f"stream {rt.name}: {offer.reason}")
            worker = self._worker
            if worker is not None:
                worker.notify()
        elif offer.verdict is Verdict.REJECT:
            self.get_logger().warning(
                f"stream {rt.name} ({rt.topic}): frame rejected: {offer.reason} "
                f"[{rt.rejected} rejected so far; the node keeps running]",
                throttle_duration_sec=WARN_THROTTLE_S)

    def _on_incompatible_qos(self, rt: StreamRuntime, event) -> None:
        self.get_logger().warning(
            f"stream {rt.name}: a publisher on {rt.topic} has incompatible QoS (policy "
            f"{qos_policy_name_from_kind(event.last_policy_kind)}); this subscription is "
            f"{rt.settings.qos.reliability}: set streams.{rt.name}.qos.reliability (or qos.reliability) to "
            "best_effort or best_available to receive its images", throttle_duration_sec=WARN_THROTTLE_S)

    # ================================================================== questions
    def _submit(self, job: Job) -> Optional[str]:
        """Queue a job with the worker; the error message if it was refused."""
        worker = self._worker
        if worker is None or not self._active:
            return "the node is not active (lifecycle): configure and activate it first"
        try:
            worker.submit(job)
        except (QueueFullError, WorkerStoppedError) as exc:
            return str(exc)
        return None

    async def _completion(self, job: Job):
        """Await a job's result without holding an executor thread."""
        future = self.executor.create_future()
        # A done callback makes set_result() wake the executor from the worker thread.
        future.add_done_callback(lambda _f: None)
        job.add_done_callback(lambda j: future.set_result(j.result))
        return await future

    def _question(self, request) -> Question:
        s = self._settings
        if s is None:
            raise QuestionError("the node is not configured")
        return question_from_request(request, stream_names=s.stream_names, engine=s.engine,
                                     default_timeout_s=s.ask_timeout_s, evidence=s.evidence_frames)

    @contextlib.contextmanager
    def _in_flight(self):
        """Count an Ask call / goal as in flight until its response is ready (see :meth:`wait_for_responses`)."""
        with self._requests_lock:
            self._requests_in_flight += 1
        try:
            yield
        finally:
            with self._requests_lock:
                self._requests_in_flight -= 1

    async def _answer(self, request, on_token=None, cancel_requested=lambda: False) -> tuple:
        """``(Answer, evidence images)`` for an Ask request or goal."""
        try:
            question = self._question(request)
        except QuestionError as exc:
            self.get_logger().warning(f"question refused: {exc}", throttle_duration_sec=WARN_THROTTLE_S)
            return Answer(False, error=str(exc)), []
        job = QuestionJob(question, on_token=on_token, cancel_requested=cancel_requested)
        error = self._submit(job)
        if error is not None:
            return Answer(False, error=error), []
        answer = await self._completion(job)
        evidence = answer.result.evidence if answer.result is not None else []
        return answer, self._evidence_images(request.return_evidence_images, question.stream, evidence)

    def _evidence_images(self, wanted: bool, stream: str, evidence: Sequence) -> list:
        rt = self._streams.get(stream)
        if not wanted or rt is None or self._settings is None:
            return []
        return evidence_images(evidence, rt.thumbnails, rt.frame_id, self._settings.max_evidence_images)

    async def _on_ask(self, request, response):
        """``~/ask``: one-shot answer."""
        with self._in_flight():
            return _fill_answer(response, *await self._answer(request))

    async def _execute_ask(self, goal_handle):
        """``~/ask_streaming``: feedback per token; cancel stops generation (partial answer, success false)."""

        def on_token(new_text: str, partial_answer: str, tokens: int) -> None:
            goal_handle.publish_feedback(
                AskAction.Feedback(partial_answer=partial_answer, new_text=new_text, tokens_generated=tokens))

        with self._in_flight():
            answer, images = await self._answer(goal_handle.request, on_token, lambda: goal_handle.is_cancel_requested)
            if answer.cancelled and goal_handle.is_cancel_requested:
                goal_handle.canceled()
            elif answer.success:
                goal_handle.succeed()
            else:
                goal_handle.abort()
            return _fill_answer(AskAction.Result(), answer, images)

    # ================================================================== watches
    async def _execute_watch(self, goal_handle):
        """``~/watch``: evaluate a yes/no condition at clip boundaries; feedback per evaluation, events per
        edge; succeeds on the first fire (or, ``continuous``, runs until cancelled). Bad goals abort at once."""
        goal = goal_handle.request
        s, board = self._settings, self._watches
        try:
            if s is None:
                raise WatchError("the node is not configured")
            spec = watch_from_goal(goal, stream_names=s.stream_names, engine=s.engine, evidence=s.evidence_frames)
            if board is None or not self._active:
                raise WatchError("the node is not active (lifecycle): configure and activate it first")
            watch_id = bytes(goal_handle.goal_id.uuid).hex()

            def on_feedback(f) -> None:
                goal_handle.publish_feedback(WatchAction.Feedback(
                    stamp=to_time(f.stamp), p_yes=float(f.p_yes), state=f.state, evaluations=f.evaluations))

            job = WatchJob(watch_id, spec, on_feedback=on_feedback, on_edge=self._publish_edge,
                           cancel_requested=lambda: goal_handle.is_cancel_requested)
            board.add(job)
        except (WatchError, WatchLimitError) as exc:
            self.get_logger().warning(f"watch refused: {exc}", throttle_duration_sec=WARN_THROTTLE_S)
            goal_handle.abort()
            return WatchAction.Result(error=str(exc))
        self.get_logger().info(f"watch {watch_id[:8]} on stream {spec.stream}: {spec.condition!r}")
        worker = self._worker
        if worker is not None:
            worker.notify()
        outcome: WatchOutcome = await self._completion(job)
        if outcome.cancelled and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.error:
            goal_handle.abort()
        else:
            goal_handle.succeed()
        return WatchAction.Result(
            fired=outcome.fired, stamp=to_time(outcome.stamp), p_yes=float(outcome.p_yes),
            evidence_stamps=evidence_stamps(outcome.evidence),
            evidence_images=self._evidence_images(goal.return_evidence_images, spec.stream, outcome.evidence),
            evaluations=outcome.evaluations, error=outcome.error)

    def _publish_edge(self, job: WatchJob, edge: Edge) -> None:
        """Worker thread: one ``~/events`` message per rising or falling edge."""
        pub = self._events_pub
        if pub is not None:
            pub.publish(WatchEvent(watch_id=job.watch_id, condition=job.spec.condition, stream=job.spec.stream,
                                   stamp=to_time(edge.stamp), state=edge.state, p_yes=float(edge.p_yes)))

    async def _on_reset(self, request, response):
        """``~/reset``: forget one stream's memory (or every stream's with an empty name)."""
        names = self._settings.stream_names if self._settings else []
        if request.stream and request.stream not in names:
            response.success, response.error = False, f"unknown stream {request.stream!r}; streams: {names}"
            return response
        job = ResetJob(request.stream or None)
        error = self._submit(job)
        if error is None:
            error = await self._completion(job)
        response.success, response.error = not error, error
        if not error:
            self.get_logger().info(f"memory reset: {request.stream or 'all streams'}")
        return response

    def _expire_questions(self) -> None:
        worker, board = self._worker, self._watches
        if worker is not None:
            worker.expire()
        if board is not None:
            board.expire()  # a cancelled watch ends at once, whatever the worker is doing

    # ================================================================== status
    def _frame_age(self, stamp: Optional[float]) -> float:
        """Node clock - header stamp (s); -1 when unknown (no frame yet, or sim clock not started)."""
        now = self.get_clock().now().nanoseconds * 1e-9
        if stamp is None or now <= 0.0:
            return -1.0
        return max(0.0, now - stamp)

    def _publish_memory_status(self) -> None:
        if self._status_pub is None or self._model is None:
            return
        msg = MemoryStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.model = str(self._model.name)
        msg.model_is_random_weights = bool(getattr(self._model, "is_tiny", False))
        msg.thumbnail_ring_bytes = int(self._settings.thumbnail_ring_bytes) if self._settings else 0
        board = self._watches
        for rt in self._streams.values():
            st, c = rt.stats, rt.counts()
            status = StreamStatus(
                name=rt.name, topic=rt.topic, transport=rt.settings.transport,
                frames_received=c.received, frames_sampled=c.sampled, frames_ingested=c.ingested,
                frames_dropped=c.dropped, frames_rejected=c.rejected,
                memory_tokens=st.tokens if st else 0, budget_tokens=(st.budget or 0) if st else 0,
                oldest_stamp=to_time(st.oldest_time if st else None),
                newest_stamp=to_time(st.newest_time if st else None),
                ingest_rate_hz=rt.rate.rate_hz(), newest_frame_age_s=self._frame_age(rt.newest_ingested_stamp),
                queue_depth=c.queue_depth, coverage=[float(x) for x in st.coverage] if st else [0.0] * 10,
                active_watches=board.count(rt.name) if board is not None and self._active else 0,
                thumbnails=len(rt.thumbnails) if rt.thumbnails is not None else 0,
                thumbnail_bytes=rt.thumbnails.nbytes if rt.thumbnails is not None else 0)
            self._fill_persistence(status, rt.name)
            msg.streams.append(status)
        self._status_pub.publish(msg)

    def _fill_persistence(self, status: StreamStatus, name: str) -> None:
        """The ``memory_dir`` fields of a StreamStatus (what configure restored, the last checkpoint)."""
        store = self._memory_store
        if store is None:
            return
        report = store.reports.get(name)
        if report is not None:
            status.memory_restore = report.describe()
            status.restored_frames, status.restored_tokens = report.frames, report.tokens
            status.restored_oldest_stamp = to_time(report.oldest_s)
            status.restored_newest_stamp = to_time(report.newest_s)
        status.checkpoints_written = store.writes.get(name, 0)
        last = store.last_write.get(name)
        status.last_checkpoint_stamp = to_time(last.last_stamp_s if last else None)

    def _publish_memory_view(self) -> None:
        """``~/memory_view``: rendered from the worker's snapshots in this timer's own thread (never the
        model's), only while someone subscribes."""
        pub, settings = self._view_pub, self._settings
        if pub is None or settings is None or not settings.memory_view or not self._active \
                or pub.get_subscription_count() == 0:
            return
        try:
            rgb = memory_view_image(list(self._streams.values()))
        except Exception as exc:  # a drawing failure must not stop the node
            self.get_logger().error(f"memory view: {exc!r}", throttle_duration_sec=WARN_THROTTLE_S)
            return
        pub.publish(rgb_image_msg(rgb, self.get_clock().now().to_msg()))

    def _publish_diagnostics(self) -> None:
        model = self._model
        level, text = model_level(model is not None, getattr(model, "name", ""), getattr(model, "is_tiny", False),
                                  self._model_error)
        hw = self.get_fully_qualified_name()
        statuses = [DiagnosticStatus(level=bytes([level]), name=f"{hw}: model", message=text, hardware_id=hw,
                                     values=[KeyValue(key="model", value=str(getattr(model, "name", ""))),
                                             KeyValue(key="device", value=str(getattr(model, "device", "")))])]
        s = self._settings
        for rt in self._streams.values():
            c = rt.counts()
            last = self._last_counts.get(rt.name, (0, 0))
            if c.sampled < last[0] or c.dropped < last[1]:  # counted from zero again (~/reset)
                last = (0, 0)
            self._last_counts[rt.name] = (c.sampled, c.dropped)
            age = self._frame_age(rt.newest_ingested_stamp)
            health = StreamHealth(
                active=self._active, topic=rt.topic, frames_received=c.received,
                sampled_in_period=c.sampled - last[0], dropped_in_period=c.dropped - last[1],
                newest_frame_age_s=None if age < 0 else age, ingest_rate_hz=rt.rate.rate_hz(),
                sample_fps=s.sample_fps, stale_frame_warn_s=s.stale_frame_warn_s, drop_warn_ratio=s.drop_warn_ratio)
            level, text = stream_level(health)
            values = {"frames_received": c.received, "frames_sampled": c.sampled, "frames_ingested": c.ingested,
                      "frames_dropped": c.dropped, "frames_rejected": c.rejected, "queue_depth": c.queue_depth,
                      "ingest_rate_hz": f"{health.ingest_rate_hz:.2f}", "newest_frame_age_s": f"{age:.3f}"}
            store = self._memory_store
            if store is not None and rt.name in store.reports:
                values.update(memory_restore=store.reports[rt.name].describe(),
                              checkpoints_written=store.writes.get(rt.name, 0))
            statuses.append(DiagnosticStatus(
                level=bytes([level]), name=f"{hw}: stream {rt.name}", message=text, hardware_id=hw,
                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()]))
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


class _StopSignal:
    """SIGINT/SIGTERM handler of ``main``: it only records the signal; ``main`` then stops gracefully.

    rclpy's own handlers shut the ROS context down at once, so the answers to the questions still
    waiting could no longer be sent; this one lets ``main`` fail them, send the responses, save the
    memory and then shut down. A second SIGINT (a terminal's Ctrl-C reaches the process twice, from
    the terminal and from ``ros2 launch``) is ignored; a second SIGTERM ends the process at once.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: Optional[int] = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            if signum == signal.SIGTERM:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
            return
        self.signum = signum
        self.event.set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "shutdown"


def _spin_until(executor, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)


def _stop_gracefully(node: "LiveVLMNode", executor, why: str) -> None:
    """Stop the worker (failing every question) while the executor keeps spinning, so the responses go
    out; then the memory is saved (``memory_dir``) and the executor spins until the last response left."""
    node.get_logger().info(f"{why}: stopping (questions waiting get an error response, memory saved)")
    closer = threading.Thread(target=node.release_engine, name="livevlm_stop", daemon=True)
    closer.start()
    _spin_until(executor, lambda: not closer.is_alive() and not node.requests_in_flight(), 60.0)
    _spin_until(executor, lambda: False, 0.2)  # the last responses' sends


def main(args: Optional[List[str]] = None) -> int:
    """``livevlm_node``: run the node; with ``autostart`` configure + activate at once.

    Returns the process exit status: 0 after a clean shutdown (SIGINT / SIGTERM: questions in flight
    get an error response and the memory is saved first), 1 when configure or activate fails under
    ``autostart``, 2 for invalid parameter overrides.
    """
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = _StopSignal()
    # `kill -USR1 <pid>` prints every thread's Python stack to stderr (a hung shutdown, a stuck
    # worker) without stopping the node.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    node: Optional[LiveVLMNode] = None
    executor: Optional[NodeExecutor] = None
    try:
        try:
            node = LiveVLMNode()
        except (rclpy.exceptions.ParameterException, ValueError) as exc:
            print(f"[livevlm] invalid parameters: {exc}", file=sys.stderr)
            return 2
        streams = len(node.get_parameter("streams").value or [])
        executor = NodeExecutor(num_threads=max(5, streams + 4))
        executor.add_node(node)
        if node.get_parameter("autostart").value and not stop.event.is_set():
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (see the error above); exiting")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: activate failed; exiting")
                return 1
        while not stop.event.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        if rclpy.ok():
            _stop_gracefully(node, executor, stop.name)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.release_engine()
        if executor is not None:
            # Bounded: a callback still running in the executor's thread pool must not keep the
            # process alive (the interpreter joins those threads at exit).
            executor.shutdown(timeout_sec=5.0, wait_for_threads=False)
        if node is not None:
            try:
                node.destroy_node()
            except Exception:
                pass
        rclpy.try_shutdown()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # try_shutdown may put Python's handler back
    return 0


if __name__ == "__main__":
    sys.exit(main())
