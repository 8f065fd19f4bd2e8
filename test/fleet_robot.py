"""One robot of the fleet launch test (test_launch_fleet.py), run as its own process in its
own namespace (``--ros-args -r __ns:=/robot1``).

It does what a robot of the "one GPU box, several robots" deployment does (docs/INSTALL.md):
publishes its camera as JPEG ``sensor_msgs/CompressedImage`` on ``camera/image_raw/compressed``
(relative: ``/robot1/camera/image_raw/compressed``) with reliable QoS, and asks the edge node's
``~/ask_streaming`` action about its own stream. ``--stamp-offset`` shifts its header stamps, so
that the robots' frames cover disjoint stamp ranges and an answer's span tells whose memory it
came from. Prints one line ``RESULT {json}`` and exits 0 when the answer succeeded and its span
lies within this robot's own frames, 1 otherwise (2: nothing to ask before ``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def main(argv=None) -> int:
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    from livevlm_interfaces.action import Ask
    from livevlm_interfaces.msg import MemoryStatus
    from livevlm_ros.io.synthetic_scene import SyntheticScene
    from livevlm_ros.tools.ros_cli import compressed_image_msg, split_ros_args, tool_argv

    own, ros_args = split_ros_args(tool_argv(argv))
    parser = argparse.ArgumentParser(prog="fleet_robot")
    parser.add_argument("--stream", required=True, help="this robot's stream name on the edge node")
    parser.add_argument("--edge-node", required=True, help="the edge node, e.g. /edge/livevlm")
    parser.add_argument("--stamp-offset", type=float, default=0.0, help="seconds added to the header stamps")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    parser.add_argument("--min-frames", type=int, default=3, help="frames the edge must have ingested first")
    parser.add_argument("--timeout", type=float, default=90.0, help="give up after this many seconds")
    args = parser.parse_args(own)

    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node("robot_camera")
    action = ActionClient(node, Ask, f"{args.edge_node}/ask_streaming")  # before spinning starts
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    publisher = node.create_publisher(CompressedImage, "camera/image_raw/compressed", qos)
    ingested = {"n": 0}

    def on_status(msg):
        for s in msg.streams:
            if s.name == args.stream:
                ingested["n"] = s.frames_ingested

    node.create_subscription(MemoryStatus, f"{args.edge_node}/memory_status", on_status, 10)
    stamps = []
    stop = threading.Event()
    scene = SyntheticScene(width=320, height=240, fps=args.rate, duration_s=20.0)

    def camera():
        t0 = time.monotonic()
        while not stop.is_set():
            now = node.get_clock().now().nanoseconds * 1e-9 + args.stamp_offset
            sec, frac = divmod(now, 1.0)
            stamp = Time(sec=int(sec), nanosec=min(int(frac * 1e9), 999_999_999))
            publisher.publish(compressed_image_msg(scene.render((time.monotonic() - t0) % 20.0), stamp, quality=80,
                                                   frame_id=f"{args.stream}_camera"))
            stamps.append(now)
            stop.wait(1.0 / args.rate)

    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    threads = [threading.Thread(target=executor.spin), threading.Thread(target=camera)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.timeout
    try:
        while not (action.server_is_ready() and ingested["n"] >= args.min_frames):
            if time.monotonic() > deadline:
                print(f"RESULT {json.dumps({'error': 'no action server / frames before the timeout'})}", flush=True)
                return 2
            time.sleep(0.1)
        goal = Ask.Goal(question=f"What does {args.stream}'s camera see?", stream=args.stream, max_new_tokens=8)
        sent = action.send_goal_async(goal)
        while not sent.done():
            time.sleep(0.01)
        answer = sent.result().get_result_async()
        while not answer.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        if not answer.done():
            print(f"RESULT {json.dumps({'error': 'no answer before the timeout'})}", flush=True)
            return 1
        r = answer.result().result
        span = [r.span_start.sec + r.span_start.nanosec * 1e-9, r.span_end.sec + r.span_end.nanosec * 1e-9]
        own_frames = [min(stamps), max(stamps)]
        # stamps are rounded to nanoseconds in the message: allow 1 us
        own = own_frames[0] - 1e-6 <= span[0] <= span[1] <= own_frames[1] + 1e-6
        print("RESULT " + json.dumps({"stream": args.stream, "success": r.success, "error": r.error,
                                      "frames_seen": r.frames_seen, "span": span, "own_frames": own_frames,
                                      "own_stream": own, "answer": r.answer}), flush=True)
        return 0 if r.success and own and r.frames_seen > 0 else 1
    finally:
        stop.set()
        executor.shutdown(timeout_sec=2.0)
        for thread in threads:
            thread.join(5.0)
        action.destroy()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
