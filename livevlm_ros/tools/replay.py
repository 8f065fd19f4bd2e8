"""``livevlm_replay``: play a bag's topics into ROS 2 with the original timing (no ``ros2 bag`` needed).

Usage::

    livevlm_replay BAG [--topics T [T ...]] [--rate R] [--loop] [--clock [HZ]]
                   [--remap FROM:=TO ...] [--wait-for-subscribers S] [--duration S] [--qos {reliable,best_effort}]
                   [--ros-args ...]

``BAG`` is a rosbag2 directory (.mcap or .db3 inside), a bare .mcap/.db3 file, or a ROS 1 .bag.
Messages are read with ``rosbags`` and published through rclpy as the serialized CDR bytes they
are stored as (``publisher.publish(raw_bytes)``: no deserialization), at the bag's receive-time
spacing divided by ``--rate``. ROS 1 bags are converted on the fly to the CDR of the ROS 2
message types (a ROS 1 ``Header``'s ``seq`` is dropped, as ``rosbags-convert`` does).

* ``--clock [HZ]`` publishes ``/clock`` (``rosgraph_msgs/Clock``) with the bag time, before every
  message and at HZ (default 40) in between: run the node with ``use_sim_time:=true``.
* ``--loop`` plays the bag again and again (header stamps then jump back at each restart, which
  exercises the node's ``timestamp_jump_policy``); ``--duration S`` stops after S wall seconds.
* ``--wait-for-subscribers S`` waits up to S s for every topic to have a subscriber first (a
  best-effort subscriber misses the first messages while it matches).

Prints a summary (messages per topic, loops, bag and wall time). Ctrl-C stops cleanly.
Exit status: 0 done, 1 the bag cannot be read, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from livevlm_ros.io.sources import SourceError, bag_path, open_bag_reader
from livevlm_ros.tools.ros_cli import init_rclpy, split_ros_args, tool_argv

__all__ = ["BagPlayer", "ReplaySummary", "cdr_converter", "message_class", "main"]

DEFAULT_CLOCK_HZ = 40.0


def cdr_converter(reader, msgtype: str) -> Optional[Callable[[bytes], bytes]]:
    """How to turn ``reader``'s stored bytes of ``msgtype`` into the CDR that rclpy publishes:
    ``None`` for a rosbag2 (already CDR); for a ROS 1 bag, a converter to the ROS 2 definition.

    A ROS 1 message is converted against the *ROS 2* type (rosbags' converter, as
    ``rosbags-convert`` does): a ROS 1 ``std_msgs/Header`` carries a ``seq`` that ROS 2 dropped,
    and converting with the bag's own (ROS 1) definitions writes it into the CDR, where it shifts
    every later field (``frame_id`` read from the stamp's bytes: "Invalid string length").
    """
    if reader.is2:
        return None
    from rosbags.convert.converter import generate_message_converter

    ros2 = _ros2_typestore()
    if msgtype not in ros2.fielddefs:
        raise SourceError(f"{msgtype}: no ROS 2 definition of this ROS 1 type to convert it to")
    convert = generate_message_converter(reader.typestore, ros2, msgtype, msgtype, {}, src_is2=False, dst_is2=True)
    return lambda raw: bytes(convert(raw))


@functools.lru_cache(maxsize=1)
def _ros2_typestore():
    """The ROS 2 message definitions rosbags ships (built once per process)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def message_class(msgtype: str):
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class (ImportError if not installed)."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


@dataclass
class ReplaySummary:
    """What a replay did.

    Attributes:
        published: messages published per (output) topic.
        loops: complete passes over the bag (a pass cut short is not counted).
        bag_s: bag time covered by one pass (s).
        wall_s: wall time of the whole replay (s).
        stopped: True when stopped early (Ctrl-C, ``--duration`` or ``stop``).
    """

    published: Counter = field(default_factory=Counter)
    loops: int = 0
    bag_s: float = 0.0
    wall_s: float = 0.0
    stopped: bool = False

    def format(self) -> str:
        lines = [f"replayed {sum(self.published.values())} messages in {self.wall_s:.1f} s "
                 f"({self.loops} complete pass(es) of {self.bag_s:.1f} s of bag time"
                 f"{', stopped early' if self.stopped else ''})"]
        for topic, n in sorted(self.published.items()):
            lines.append(f"  {topic}: {n} messages ({n / self.wall_s:.1f}/s)" if self.wall_s else f"  {topic}: {n}")
        return "\n".join(lines)


class BagPlayer:
    """Publishes the messages of a bag through an rclpy node, with the original timing.

    Args:
        node: the rclpy node to publish with.
        bag: bag path (see the module docstring).
        topics: bag topics to play (default: every topic whose message type is installed).
        rate: playback speed factor (> 0).
        clock_hz: publish ``/clock`` at this rate (Hz), ``None`` for no clock.
        remap: ``{bag topic: published topic}``.
        reliable: publisher reliability (REP-2003: camera publishers are reliable).
        log: where progress lines go.
    """

    def __init__(self, node, bag, topics: Optional[Sequence[str]] = None, rate: float = 1.0,
                 clock_hz: Optional[float] = None, remap: Optional[Dict[str, str]] = None, reliable: bool = True,
                 log: Callable[[str], None] = print) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.node, self.rate, self.clock_hz, self.log = node, float(rate), clock_hz, log
        self.path = bag_path(Path(bag))
        remap = dict(remap or {})
        with open_bag_reader(self.path) as reader:
            available = {c.topic: c.msgtype for c in reader.connections}
            self.bag_s = reader.duration / 1e9
            self._converters = {}  # msgtype -> stored bytes to CDR (None: stored as CDR)
            unconvertible = {}  # msgtype -> why it cannot be converted
            for msgtype in set(available.values()):
                try:
                    self._converters[msgtype] = cdr_converter(reader, msgtype)
                except SourceError as exc:
                    unconvertible[msgtype] = str(exc)
        wanted = list(topics) if topics else list(available)
        missing = [t for t in wanted if t not in available]
        if missing:
            listing = ", ".join(f"{t} [{m}]" for t, m in sorted(available.items()))
            raise SourceError(f"{self.path}: no topic(s) {missing}; topics in the bag: {listing}")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, durability=DurabilityPolicy.VOLATILE,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
        self.topics: Dict[str, str] = {}  # bag topic -> msgtype
        self.publishers = {}
        for topic in wanted:
            cls, problem = None, unconvertible.get(available[topic])
            try:
                cls = message_class(available[topic])
            except (ImportError, AttributeError, ValueError):
                problem = f"message type {available[topic]} is not installed"
            if problem:
                if topics:
                    raise SourceError(f"{topic}: {problem}")
                log(f"[replay] skipping {topic}: {problem}")
                continue
            self.topics[topic] = available[topic]
            self.publishers[topic] = node.create_publisher(cls, remap.get(topic, topic), qos)
        if not self.publishers:
            raise SourceError(f"{self.path}: nothing to play")
        self._clock_pub = None
        if clock_hz:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = node.create_publisher(Clock, "/clock", 10)

    def wait_for_subscribers(self, timeout: float) -> List[str]:
        """Wait until every topic has a subscriber; returns the topics still without one."""
        deadline = time.monotonic() + timeout
        while True:
            lonely = [t for t, p in self.publishers.items() if p.get_subscription_count() == 0]
            if not lonely or time.monotonic() > deadline:
                return lonely
            time.sleep(0.05)

    def _publish_clock(self, bag_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
        self._clock_pub.publish(msg)

    def _sleep_until(self, target: float, wall0: float, bag0: int, stop: threading.Event) -> bool:
        """Sleep until monotonic ``target``, publishing /clock meanwhile; False if stopped."""
        while True:
            now = time.monotonic()
            if stop.is_set():
                return False
            if now >= target:
                return True
            step = target - now
            if self._clock_pub is not None:
                self._publish_clock(bag0 + int((now - wall0) * self.rate * 1e9))
                step = min(step, 1.0 / self.clock_hz)
            stop.wait(step)

    def play(self, loop: bool = False, stop: Optional[threading.Event] = None) -> ReplaySummary:
        """Play once (or until ``stop`` with ``loop``); returns the summary (also after Ctrl-C)."""
        stop = stop or threading.Event()
        summary = ReplaySummary(bag_s=self.bag_s)
        start = time.monotonic()
        try:
            with open_bag_reader(self.path) as reader:
                connections = [c for c in reader.connections if c.topic in self.publishers]
                while not stop.is_set():
                    wall0, bag0 = time.monotonic(), None
                    for connection, bag_ns, raw in reader.messages(connections=connections):
                        if bag0 is None:
                            bag0 = bag_ns
                        if not self._sleep_until(wall0 + (bag_ns - bag0) / 1e9 / self.rate, wall0, bag0, stop):
                            break
                        if self._clock_pub is not None:
                            self._publish_clock(bag_ns)
                        convert = self._converters[connection.msgtype]
                        data = bytes(raw) if convert is None else convert(raw)
                        self.publishers[connection.topic].publish(data)
                        summary.published[self.publishers[connection.topic].topic_name] += 1
                    else:
                        summary.loops += 1
                        if not loop:
                            break
                        continue
                    break  # stopped inside the pass
        except KeyboardInterrupt:
            stop.set()
        finally:
            summary.stopped = stop.is_set()
            summary.wall_s = time.monotonic() - start
        return summary


def _parse_remap(text: str):
    source, sep, target = text.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"expected FROM:=TO, got {text!r}")
    return source, target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livevlm_replay", description="Play a rosbag2 (.mcap/.db3) or ROS 1 bag into ROS 2 with the original "
        "timing, publishing the stored CDR bytes through rclpy.",
        epilog="Example: livevlm_replay /work/shared/data/rosbag2/car_detection_camera --topics "
        "/camera/image_raw/compressed --clock --loop   (node: use_sim_time:=true)")
    parser.add_argument("bag", help="rosbag2 directory, .mcap/.db3 file or ROS 1 .bag")
    parser.add_argument("--topics", nargs="+", metavar="T", help="bag topics to play (default: all)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--loop", action="store_true", help="play again and again (stamps jump back each time)")
    parser.add_argument("--clock", type=float, nargs="?", const=DEFAULT_CLOCK_HZ, default=None, metavar="HZ",
                        help=f"publish /clock with the bag time at HZ (default {DEFAULT_CLOCK_HZ:g}) for use_sim_time")
    parser.add_argument("--remap", type=_parse_remap, action="append", default=[], metavar="FROM:=TO",
                        help="publish bag topic FROM on topic TO (repeatable)")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds for every topic to have a subscriber before playing")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S wall seconds")
    parser.add_argument("--qos", choices=("reliable", "best_effort"), default="reliable",
                        help="publisher reliability (default reliable, as camera drivers per REP-2003)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    own, ros_args = split_ros_args(tool_argv(argv))
    args = build_parser().parse_args(own)
    if not args.rate > 0:
        print("livevlm_replay: --rate must be > 0", file=sys.stderr)
        return 2
    rclpy = init_rclpy(ros_args, "livevlm_replay")
    node = rclpy.create_node("livevlm_replay")
    stop = threading.Event()
    try:
        try:
            player = BagPlayer(node, args.bag, args.topics, args.rate, args.clock, dict(args.remap),
                               reliable=args.qos == "reliable")
        except (SourceError, ValueError) as exc:
            print(f"livevlm_replay: {exc}", file=sys.stderr)
            return 1
        print(f"[replay] {player.path}: {len(player.topics)} topic(s), {player.bag_s:.1f} s of bag time, "
              f"rate {args.rate:g}{', looping' if args.loop else ''}{', /clock' if args.clock else ''}", flush=True)
        for topic, msgtype in player.topics.items():
            print(f"[replay]   {topic} -> {player.publishers[topic].topic_name} [{msgtype}]", flush=True)
        if args.wait_for_subscribers > 0:
            lonely = player.wait_for_subscribers(args.wait_for_subscribers)
            if lonely:
                print(f"[replay] no subscriber after {args.wait_for_subscribers:g} s on {lonely}; playing anyway",
                      flush=True)
        if args.duration is not None:
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True
            timer.start()
        print(player.play(loop=args.loop, stop=stop).format(), flush=True)
        time.sleep(0.2)  # let the last reliable samples go out
        return 0
    finally:
        stop.set()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
