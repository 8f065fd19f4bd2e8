"""``livevlm_demo``: the whole pipeline in one command, no camera and no files needed.

Usage::

    livevlm_demo [--bag BAG | --video VIDEO] [--model M] [--device D] [--dtype T]
                 [--questions Q [Q ...]] [--duration S] [--rate HZ] [--sample-fps F]

1. starts the livevlm node as its own process (``python -m livevlm_ros.ros.node --ros-args -p ...``,
   node ``/livevlm_demo/livevlm``), its log lines prefixed with ``[node]``;
2. publishes a camera stream into it: by default the synthetic scene of
   :mod:`livevlm_ros.io.synthetic_scene` (shapes crossing the view on a known timeline) as
   ``sensor_msgs/Image`` at ``--rate`` Hz; ``--video`` a recording as JPEG ``CompressedImage``;
   ``--bag`` a rosbag2's image topic with its original timing and ``/clock`` (the node then runs
   with ``use_sim_time``);
3. asks questions through the ``~/ask_streaming`` action at known stream times, printing each
   answer as it streams, its latency and the stream's memory status (``~/memory_status``), and
   for the synthetic scene what was visible at that time and the whole ground-truth timeline;
4. shuts the node down (SIGINT, then SIGTERM) and exits 0 when every question was answered.

The default model is the built-in tiny one: its weights are random, so the answers show the
plumbing (streaming, latency, memory) and not what is in the images. ``--model`` takes a hub id
or a checkpoint directory. A question ``"T:QUESTION"`` is asked at stream second T; plain
questions are spread over the stream. ``ROS_DOMAIN_ID`` is the caller's;
``ROS_AUTOMATIC_DISCOVERY_RANGE`` defaults to ``LOCALHOST``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from livevlm_ros.ros.questions import seconds_to_stamp
from livevlm_ros.tools.ros_cli import (
    compressed_image_msg,
    image_msg,
    init_rclpy,
    split_ros_args,
    stop_process,
    tool_argv,
)

__all__ = ["main", "schedule_questions", "Scheduled"]

NAMESPACE = "/livevlm_demo"
NODE = f"{NAMESPACE}/livevlm"
TOPIC = f"{NAMESPACE}/camera/image"
TINY = ("tiny-llava-onevision", "tiny-smolvlm")
DEFAULT_QUESTIONS = ["What do you see?", "What moved across the view?", "What happened in the last 5 seconds?"]
BANNER = """\
==============================================================================
 livevlm_demo is running the built-in TINY test model {model!r}.
 Its weights are RANDOM: the answers below are NOT about the images. They show
 the plumbing: streaming answers, latency, the bounded video memory.
 For real answers: --model llava-hf/llava-onevision-qwen2-0.5b-ov-hf --device cuda --dtype float16
=============================================================================="""


@dataclass(frozen=True)
class Scheduled:
    """A question asked at stream second ``at`` (``last_seconds`` > 0: only that recent memory)."""

    at: float
    question: str
    last_seconds: float = 0.0


def schedule_questions(questions: Optional[Sequence[str]], duration_s: float) -> List[Scheduled]:
    """Questions with their stream times: ``"T:Q"`` at T; plain ones spread over the stream's
    second half (the last at the end). The default set ends with a ``last_seconds=5`` question."""
    if not questions:
        fractions = (0.45, 0.75, 1.0)
        return [Scheduled(round(f * duration_s, 2), q, 5.0 if "last 5 seconds" in q else 0.0)
                for f, q in zip(fractions, DEFAULT_QUESTIONS, strict=True)]
    plain = [q for q in questions if not _timed(q)]
    out = [Scheduled(*_timed(q)) for q in questions if _timed(q)]
    for k, q in enumerate(plain):
        out.append(Scheduled(round(duration_s * (0.5 + 0.5 * (k + 1) / len(plain)), 2), q))
    return sorted(out, key=lambda s: s.at)


def _timed(text: str) -> Optional[Tuple[float, str]]:
    head, sep, question = text.partition(":")
    try:
        at = float(head)
    except ValueError:
        return None
    return (at, question.strip()) if sep and question.strip() and at >= 0 else None


# ============================================================================ sources
class Source:
    """Frames to publish: ``frames()`` yields ``(stream seconds, rgb)`` at the source's pace."""

    transport = "raw"
    describe_truth: Callable[[], str] = staticmethod(lambda: "")
    visible_at: Optional[Callable[[float], List[str]]] = None

    def frames(self) -> Iterator[Tuple[float, np.ndarray]]:
        raise NotImplementedError


class SceneSource(Source):
    def __init__(self, duration_s: float, rate_hz: float):
        from livevlm_ros.io.synthetic_scene import SyntheticScene

        self.scene = SyntheticScene(width=384, height=288, fps=rate_hz, duration_s=duration_s)
        self.describe_truth = self.scene.describe
        self.visible_at = self.scene.visible_at
        self.name = self.scene.name

    def frames(self):
        return iter(self.scene)


class VideoFileSource(Source):
    transport = "compressed"  # a 768x432 raw frame would exceed Fast DDS's default 512 KB segment

    def __init__(self, path: str, rate_hz: float):
        from livevlm_ros.io.sources import VideoSource

        self.video = VideoSource(path, fps=rate_hz)
        self.name = self.video.name

    def frames(self):
        return iter(self.video)


# ============================================================================ node process
def _node_command(args, transport: str, use_sim_time: bool) -> List[str]:
    params = {
        "model": args.model, "device": args.device, "dtype": args.dtype, "sample_fps": args.sample_fps,
        "clip_frames": 4, "max_new_tokens": args.max_new_tokens, "status_period_s": 0.5,
        "streams": "[camera]", "streams.camera.transport": transport, "streams.camera.topic": TOPIC,
        "use_sim_time": "true" if use_sim_time else "false",
    }
    cmd = [sys.executable, "-m", "livevlm_ros.ros.node", "--ros-args", "-r", f"__ns:={NAMESPACE}"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={value}"]
    return cmd + list(args.ros_args)


def _forward(stream, prefix: str) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


def _fastdds_profile() -> Optional[str]:
    """config/fastdds_large_images.xml of the installed package, or of this source tree."""
    candidates = [Path(__file__).resolve().parents[2] / "config" / "fastdds_large_images.xml"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.insert(0, Path(get_package_share_directory("livevlm_ros")) / "config" / "fastdds_large_images.xml")
    except Exception:  # not installed with colcon, or AMENT_PREFIX_PATH unset
        pass
    return next((str(p) for p in candidates if p.is_file()), None)


# ============================================================================ the demo
class Demo:
    """Client side of the demo: publisher thread, action client, memory-status subscriber."""

    def __init__(self, rclpy, args):
        from rclpy.action import ActionClient
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from livevlm_interfaces.action import Ask as AskAction
        from livevlm_interfaces.msg import MemoryStatus

        self.args = args
        self.node = rclpy.create_node("livevlm_demo_client")
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self.action = ActionClient(self.node, AskAction, f"{NODE}/ask_streaming")
        self.AskGoal = AskAction.Goal
        self.status: Optional[MemoryStatus] = None
        self.node.create_subscription(MemoryStatus, f"{NODE}/memory_status", self._on_status, 10)
        self.msg_types = {"raw": Image, "compressed": CompressedImage}
        self.qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.stop = threading.Event()
        self.published = 0
        self.stream_time = 0.0  # seconds of stream published so far

    def _on_status(self, msg) -> None:
        self.status = msg

    # ---------------------------------------------------------------- publishing
    def publish_source(self, source: Source, duration_s: float) -> threading.Thread:
        pub = self.node.create_publisher(self.msg_types[source.transport], TOPIC, self.qos)
        self._wait_subscriber(pub)
        start_stamp = self.node.get_clock().now().nanoseconds * 1e-9

        def run():
            wall0 = time.monotonic()
            for t, rgb in source.frames():
                if self.stop.is_set() or t > duration_s:
                    break
                self.stop.wait(max(0.0, wall0 + t - time.monotonic()))
                stamp = _stamp(start_stamp + t)
                pub.publish(compressed_image_msg(rgb, stamp) if source.transport == "compressed"
                            else image_msg(rgb, stamp))
                self.published += 1
                self.stream_time = t
            self.stop.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def play_bag(self, bag: str, duration_s: float) -> Tuple[threading.Thread, str]:
        from livevlm_ros.tools.replay import BagPlayer

        probe = _bag_image_topics(bag)
        topic = next((t for t, m in probe.items() if m.endswith("CompressedImage")), next(iter(probe)))
        transport = "compressed" if probe[topic].endswith("CompressedImage") else "raw"
        player = BagPlayer(self.node, bag, [topic], rate=self.args.rate_factor, clock_hz=40.0,
                           remap={topic: TOPIC}, log=lambda s: print(s, flush=True))
        print(f"[demo] playing {topic} of {player.path} ({player.bag_s:.1f} s) with /clock", flush=True)
        player.wait_for_subscribers(10.0)
        timer = threading.Timer(duration_s / self.args.rate_factor, self.stop.set)
        timer.daemon = True
        timer.start()
        wall0 = time.monotonic()

        def run():
            summary = player.play(stop=self.stop)
            self.published = sum(summary.published.values())
            self.stop.set()

        def clock():
            while not self.stop.wait(0.1):
                self.stream_time = (time.monotonic() - wall0) * self.args.rate_factor

        threading.Thread(target=clock, daemon=True).start()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, transport

    def _wait_subscriber(self, pub, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)

    # ---------------------------------------------------------------- asking
    def ask(self, q: Scheduled) -> bool:
        goal = self.AskGoal(question=q.question, last_seconds=q.last_seconds, timeout_s=60.0)
        t0 = time.monotonic()
        printed = [False]

        def on_feedback(msg):
            if not printed[0]:
                sys.stdout.write("    answer: ")
                printed[0] = True
            sys.stdout.write(msg.feedback.new_text)
            sys.stdout.flush()

        future = self.action.send_goal_async(goal, feedback_callback=on_feedback)
        if not _wait(future, 30.0) or not future.result().accepted:
            print("    (goal not accepted)")
            return False
        result_future = future.result().get_result_async()
        if not _wait(result_future, 120.0):
            print("    (no result)")
            return False
        r = result_future.result().result
        rtt = time.monotonic() - t0
        if printed[0]:
            sys.stdout.write("\n")
        elif r.answer:
            print(f"    answer: {r.answer}")
        if not r.success:
            print(f"    error: {r.error}")
        print(f"    latency: first token {r.time_to_first_token_s * 1e3:.0f} ms, answer "
              f"{r.total_latency_s * 1e3:.0f} ms (round trip {rtt * 1e3:.0f} ms); {r.frames_seen} frames seen, "
              f"{r.memory_tokens} memory tokens")
        return bool(r.success)

    def print_status(self) -> None:
        msg = self.status
        if msg is None or not msg.streams:
            print("    memory: (no status yet)")
            return
        s = msg.streams[0]
        budget = f"/{s.budget_tokens}" if s.budget_tokens else " (unbounded)"
        print(f"    memory: {s.memory_tokens}{budget} tokens; frames received {s.frames_received}, sampled "
              f"{s.frames_sampled}, ingested {s.frames_ingested}, dropped {s.frames_dropped}, rejected "
              f"{s.frames_rejected}; ingest {s.ingest_rate_hz:.1f} Hz, newest frame {s.newest_frame_age_s:.2f} s old")

    def wait_ready(self, proc: subprocess.Popen, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if self.action.wait_for_server(timeout_sec=0.5):
                return True
        return False

    def close(self) -> None:
        self.stop.set()
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()


def _bag_image_topics(bag: str) -> dict:
    from livevlm_ros.io.sources import IMAGE_MSGTYPES, SourceError, bag_path, open_bag_reader

    with open_bag_reader(bag_path(Path(bag))) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_MSGTYPES}
    if not topics:
        raise SourceError(f"{bag}: no sensor_msgs Image/CompressedImage topic")
    return topics


def _stamp(t: float):
    from builtin_interfaces.msg import Time

    sec, nanosec = seconds_to_stamp(t)
    return Time(sec=sec, nanosec=nanosec)


def _wait(future, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return future.done()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livevlm_demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bag", help="rosbag2 to play (its image topic, original timing, /clock)")
    src.add_argument("--video", help="video file to publish, e.g. /work/shared/data/videos/car-detection.mp4")
    p.add_argument("--model", default=TINY[0], help=f"hub id, checkpoint directory or {'/'.join(TINY)} (default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (default float32)")
    p.add_argument("--questions", nargs="+", metavar="Q", help='questions, plain or "T:QUESTION" (T: stream seconds)')
    p.add_argument("--duration", type=float, default=12.0, help="seconds of stream to publish (default 12)")
    p.add_argument("--rate", type=float, default=4.0, help="frames per second published (scene/video; default 4)")
    p.add_argument("--rate-factor", type=float, default=1.0, help="bag playback speed factor (default 1)")
    p.add_argument("--sample-fps", type=float, default=2.0, help="the node's sample_fps (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="answer length limit (default 24)")
    p.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for the node (default 120)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    own, ros_args = split_ros_args(tool_argv(argv))
    args = build_parser().parse_args(own)
    args.ros_args = ros_args[1:] if ros_args[:1] == ["--ros-args"] else ros_args
    if not (args.duration > 0 and args.rate > 0 and args.rate_factor > 0):
        print("livevlm_demo: --duration, --rate and --rate-factor must be > 0", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = _fastdds_profile()
    if profile:
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", profile)
    schedule = schedule_questions(args.questions, args.duration)
    if args.model in TINY:
        print(BANNER.format(model=args.model), flush=True)

    source: Optional[Source] = None
    if args.video:
        source = VideoFileSource(args.video, args.rate)
    elif not args.bag:
        source = SceneSource(args.duration, args.rate)
    transport = source.transport if source else "compressed"
    if args.bag:
        transport = "compressed" if any(m.endswith("CompressedImage") for m in _bag_image_topics(args.bag).values()) \
            else "raw"

    print(f"[demo] ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0 (default)')}, discovery "
          f"{os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}; starting the node {NODE} ({args.model} on {args.device})",
          flush=True)
    t_start = time.monotonic()
    proc = subprocess.Popen(_node_command(args, transport, use_sim_time=bool(args.bag)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    threading.Thread(target=_forward, args=(proc.stdout, "[node] "), daemon=True).start()
    rclpy = init_rclpy([], "livevlm_demo")
    demo = Demo(rclpy, args)
    answered = 0
    try:
        if not demo.wait_ready(proc, args.startup_timeout):
            print(f"[demo] the node did not come up (exit status {proc.poll()}); see its log above", flush=True)
            return 1
        print(f"[demo] node ready after {time.monotonic() - t_start:.1f} s; publishing "
              f"{source.name if source else args.bag} on {TOPIC} [{transport}]", flush=True)
        if args.bag:
            publisher, _ = demo.play_bag(args.bag, args.duration)
        else:
            publisher = demo.publish_source(source, args.duration)
        for q in schedule:
            while demo.stream_time < q.at and not demo.stop.is_set():
                time.sleep(0.02)
            window = f" (last {q.last_seconds:g} s)" if q.last_seconds else ""
            print(f"\n[demo] t={demo.stream_time:5.1f} s  Q: {q.question}{window}", flush=True)
            if source is not None and source.visible_at is not None:
                seen = source.visible_at(demo.stream_time)
                print(f"    ground truth now: {', '.join(seen) if seen else 'nothing in view'}")
            answered += demo.ask(q)
            demo.print_status()
        demo.stop.set()
        publisher.join(5.0)
        if source is not None and source.describe_truth():
            print("\n[demo] ground-truth timeline of the scene (stream seconds):\n" + source.describe_truth())
        print(f"\n[demo] {answered}/{len(schedule)} questions answered; {demo.published} frames published")
    except KeyboardInterrupt:
        print("\n[demo] interrupted", flush=True)
    finally:
        demo.close()
        rclpy.try_shutdown()
        rc = stop_process(proc)
        print(f"[demo] node stopped (exit status {rc}); total {time.monotonic() - t_start:.1f} s", flush=True)
    return 0 if answered == len(schedule) else 1


if __name__ == "__main__":
    sys.exit(main())
