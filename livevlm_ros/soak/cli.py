"""``livevlm_soak``: hold the livevlm node under sustained load and report whether it stays bounded.

Usage::

    livevlm_soak --duration SECONDS --out DIR [--warmup S] [--sample-period S] [--seed N]
                 [--max-rss-growth-mb 50] [--max-lost-questions 0] [--max-crashes 0]
                 [--param NAME:=VALUE ...]
    livevlm_soak --replot DIR      # draw DIR's PNGs again from DIR/soak.json

1. starts the node as its own process (``python -m livevlm_ros.ros.node``, node
   ``/livevlm_soak/livevlm``) with config/livevlm_tiny_cpu.yaml and two streams: ``cam_raw``
   (sensor_msgs/Image rgb8 640x480) and ``cam_jpeg`` (sensor_msgs/CompressedImage JPEG 640x480);
   with checkpoints every ``--checkpoint-period`` s into DIR/memory when the node has them
   (:mod:`.features`);
2. publishes both cameras at ``--rate`` Hz over rclpy + Fast DDS on loopback, ``--malformed``
   of the frames corrupt and one jump of the header stamps ``--jump-back`` s back per camera;
3. two clients ask every ``--ask-period`` s (``~/ask`` service and ``~/ask_streaming`` action, random
   stream and ``last_seconds``); one continuous Watch goal when the node serves ``~/watch``;
4. samples every ``--sample-period`` s: node RSS, device memory (when the node reports it),
   per-stream memory tokens, newest-frame age, dropped/rejected counts, question counts;
5. writes DIR/soak.json, DIR/soak.png, DIR/rss.png (node log and ROS logs in DIR/logs) and exits
   1 on a crash, a question without a response or RSS growing more than ``--max-rss-growth-mb``
   after warm-up (2 for bad arguments).

``ROS_DOMAIN_ID`` is the caller's; ``ROS_AUTOMATIC_DISCOVERY_RANGE`` defaults to ``LOCALHOST``.
The tiny model has random weights: the answers are noise, only the plumbing is measured.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from livevlm_ros.tools.demo import _fastdds_profile
from livevlm_ros.tools.ros_cli import init_rclpy, split_ros_args, stop_process, tool_argv

from .features import checkpoint_parameters, watch_support
from .load import CameraPlan, QuestionPlan, due_questions
from .report import build_report, plot, write_report
from .sampler import StatusMonitor, device_memory_mb, rss_mb, stream_row
from .stats import Thresholds

__all__ = ["main", "build_parser", "default_warmup"]

NAMESPACE = "/livevlm_soak"
NODE = f"{NAMESPACE}/livevlm"
CAMERAS = (("cam_raw", "raw"), ("cam_jpeg", "compressed"))
CONFIG_FILE = "livevlm_tiny_cpu.yaml"


def default_warmup(duration_s: float, sample_period_s: float) -> float:
    """20% of the run, at least one sample period, at most 60 s."""
    return min(60.0, max(sample_period_s, 0.2 * duration_s))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livevlm_soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, help="seconds of load (e.g. 60 in CI, 600); required")
    p.add_argument("--out", help="output directory (created); required")
    p.add_argument("--replot", metavar="DIR", help="only draw DIR's PNGs again from its soak.json")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds left out of the figures (default: 20%% of --duration, at least one sample period, "
                        "at most 60 s)")
    p.add_argument("--sample-period", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--rate", type=float, default=30.0, help="frames per second per camera (default 30)")
    p.add_argument("--malformed", type=float, default=0.05, help="share of corrupt frames (default 0.05)")
    p.add_argument("--jump-back", type=float, default=5.0,
                   help="seconds the header stamps jump back, once per camera (default 5)")
    p.add_argument("--ask-period", type=float, default=2.0, help="seconds between questions per client (default 2)")
    p.add_argument("--ask-timeout", type=float, default=20.0, help="timeout_s of each question (default 20)")
    p.add_argument("--grace", type=float, default=30.0,
                   help="seconds past --ask-timeout to wait for the last responses before counting a "
                        "question lost (default 30)")
    p.add_argument("--checkpoint-period", type=float, default=60.0,
                   help="checkpoint_period_s when the node has checkpoints (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the malformed frames and questions (default 0)")
    p.add_argument("--config", default=None, help=f"node parameter file (default config/{CONFIG_FILE})")
    p.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter override (repeatable)")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the node (default 180)")
    p.add_argument("--max-rss-growth-mb", type=float, default=50.0,
                   help="fail when RSS grows more than this after warm-up (MB, default 50)")
    p.add_argument("--max-lost-questions", type=int, default=0, help="fail above this many lost questions (0)")
    p.add_argument("--max-crashes", type=int, default=0, help="fail above this many node crashes (0)")
    p.add_argument("--rss-slope-target", type=float, default=1.0,
                   help="RSS slope target, MB/min (reported as met or not; default 1)")
    return p


def node_parameters(config: str, ask_timeout_s: float, checkpoints) -> Dict[str, object]:
    """The node's parameters: ``config``'s, minus its stream entries, plus the soak's two cameras,
    ``ask_timeout_s`` and the checkpoint parameters when available (a :class:`~.features.Feature`)."""
    from livevlm_ros.ros.parameters import parameters_from_yaml

    params = {k: v for k, v in parameters_from_yaml(config).items() if k != "streams" and not k.startswith("streams.")}
    params["streams"] = [name for name, _ in CAMERAS]
    for name, transport in CAMERAS:
        params[f"streams.{name}.transport"] = transport
        params[f"streams.{name}.topic"] = f"{NAMESPACE}/{name}/image"
    params["ask_timeout_s"] = float(ask_timeout_s)
    if checkpoints.available:
        params.update(checkpoints.detail)
    return params


def _node_command(args, params_file: str) -> List[str]:
    cmd = [sys.executable, "-m", "livevlm_ros.ros.node", "--ros-args", "-r", f"__ns:={NAMESPACE}",
           "--params-file", params_file]
    for override in args.param:
        cmd += ["-p", override]
    return cmd + list(args.ros_args)


def _dir_usage(path: str) -> Dict[str, object]:
    """Files, bytes and newest modification time (epoch s, None when empty) under ``path``."""
    files = [p for p in Path(path).rglob("*") if p.is_file()] if os.path.isdir(path) else []
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "newest_mtime": max((p.stat().st_mtime for p in files), default=None)}


def _checkpoint_summary(feature, memory_dir: str, samples: List[Dict]) -> Dict[str, object]:
    """The checkpoint entry of the report: status, the directory at the end, and how many sample
    rows saw a newer file than the row before (a lower bound on the checkpoints written)."""
    out: Dict[str, object] = {"status": feature.describe("checkpoints")}
    if feature.available:
        mtimes = [s["checkpoint_dir"]["newest_mtime"] for s in samples]
        out.update(_dir_usage(memory_dir))
        out["rows_with_a_new_checkpoint"] = sum(b is not None and (a is None or b > a)
                                               for a, b in zip([None] + mtimes[:-1], mtimes))
    return out


class Soak:
    """One run: node process, client node (publishers, clients, status) and the sample loop."""

    def __init__(self, args, out: str):
        self.args, self.out = args, out
        self.memory_dir = os.path.join(out, "memory")
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.samples: List[Dict] = []
        self.crashes = 0
        self.crash_note = ""
        self.skipped_questions = 0  # scheduled while this process was stalled more than --ask-period
        self.max_loop_gap_s = 0.0   # longest gap between two turns of the load loop (s): contention

    def _start_node(self) -> subprocess.Popen:
        profile = _fastdds_profile()
        config = self.args.config or (str(Path(profile).parent / CONFIG_FILE) if profile else "")
        if not config or not os.path.isfile(config):
            raise FileNotFoundError(f"node parameter file {config or CONFIG_FILE!r} not found (use --config)")
        import yaml

        self.checkpoints = checkpoint_parameters(self.memory_dir, self.args.checkpoint_period)
        params = node_parameters(config, self.args.ask_timeout, self.checkpoints)
        params_file = os.path.join(self.logs, "node_params.yaml")
        with open(params_file, "w", encoding="utf-8") as handle:
            yaml.safe_dump({"/**": {"ros__parameters": params}}, handle, sort_keys=False)
        cmd = _node_command(self.args, params_file)
        self.node_config = {"config": config, "parameters": params, "overrides": cmd[cmd.index(params_file) + 1:]}
        self._node_log = open(os.path.join(self.logs, "node.log"), "wb")
        return subprocess.Popen(cmd, stdout=self._node_log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), stdin=subprocess.DEVNULL)

    def run(self) -> int:
        from rclpy.executors import MultiThreadedExecutor

        from .players import AskClients, CameraPlayer, QuestionLog, WatchClient

        args = self.args
        t_start = time.monotonic()
        proc = self._start_node()
        print(f"[soak] node {NODE} starting (pid {proc.pid}; log {self.logs}/node.log); "
              f"{self.checkpoints.describe('checkpoints')}", flush=True)
        rclpy = init_rclpy([], "livevlm_soak")
        node = rclpy.create_node("livevlm_soak_client")
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        log = QuestionLog()
        clients = AskClients(node, NODE, log, args.ask_timeout)
        duration = args.duration
        plans = [CameraPlan(name, transport, args.rate, args.malformed,
                            jump_at_s=duration * (0.4 + 0.15 * k), jump_back_s=args.jump_back, seed=args.seed + k)
                 for k, (name, transport) in enumerate(CAMERAS)]
        cameras = [CameraPlayer(node, plan, f"{NAMESPACE}/{plan.name}/image", duration, seed=args.seed + 10 + k)
                   for k, plan in enumerate(plans)]
        questions = QuestionPlan(AskClients.CLIENTS, tuple(n for n, _ in CAMERAS), args.ask_period,
                                 seed=args.seed).questions(duration)
        watch = WatchClient(node, NODE, watch_support(), CAMERAS[0][0])
        stop = threading.Event()
        try:
            ready = self._wait_ready(proc, clients, cameras, t_start)
            if ready is not None:
                return ready
            watch.start(10.0, on_status=lambda s: print(f"[soak] {s}", flush=True))
            print(f"[soak] node ready after {time.monotonic() - t_start:.1f} s; {watch.status}; load for "
                  f"{duration:g} s (warm-up {self.warmup:g} s, a sample every {args.sample_period:g} s)", flush=True)
            t0 = time.monotonic()
            monitor = StatusMonitor(node, NODE, t0, lambda: {c.plan.name: c.stamp_offset_s for c in cameras})
            start_stamp = node.get_clock().now().nanoseconds * 1e-9
            for cam in cameras:
                cam.start(start_stamp, t0, stop)
            self._load_loop(proc, t0, questions, clients, cameras, monitor, log, watch)
            stop.set()
            for cam in cameras:
                cam.join(5.0)
            # the node's counters at the end: once the frames sent last have been counted
            monitor.wait_settled(5.0)
            drained = self._drain(log, args.ask_timeout + args.grace)
            watch.stop(5.0)
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            executor.shutdown(timeout_sec=2.0)
            node.destroy_node()
            rclpy.try_shutdown()
            rc = stop_process(proc)
            self._node_log.close()
        if self.crashes == 0 and rc != 0:
            self.crashes, self.crash_note = 1, f"unclean exit at shutdown (status {rc})"
        final_status, ages = monitor.snapshot()
        counters = {s.name: stream_row(s, 0.0) for s in (final_status.streams if final_status else [])}
        report = build_report(
            config=self._config(plans), samples=self.samples, records=log.snapshot(), t0=t0, ages=ages,
            cameras={c.plan.name: {"transport": c.plan.transport, "published": c.published,
                                   "malformed_published": c.malformed_published,
                                   "jump_at_s": c.plan.jump_at_s, "jump_back_s": c.plan.jump_back_s,
                                   "worst_publish_lateness_s": c.late_s_max,
                                   "node_counters_at_end": {k: v for k, v in counters.get(c.plan.name, {}).items()
                                                            if k.startswith("frames_")}} for c in cameras},
            crashes=self.crashes, shutdown={"exit_status": rc, "note": self.crash_note,
                                            "pending_after_drain": drained, "load_s": elapsed},
            contention={"client_loop_max_gap_s": self.max_loop_gap_s,
                        "publish_lateness_max_s": max(c.late_s_max for c in cameras),
                        "questions_skipped_client_late": self.skipped_questions},
            watch=watch.as_dict(elapsed),
            checkpoints=_checkpoint_summary(self.checkpoints, self.memory_dir, self.samples),
            thresholds=self.thresholds)
        write_report(self.out, report)
        try:
            plot(self.out, report)
        except ImportError as exc:
            print(f"[soak] no plots: {exc}", flush=True)
        self._print(report)
        return 0 if report["verdict"]["passed"] else 1

    def _wait_ready(self, proc, clients, cameras, t_start) -> Optional[int]:
        deadline = t_start + self.args.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                print(f"[soak] the node exited during startup (status {proc.returncode}); see "
                      f"{self.logs}/node.log", flush=True)
                return 1
            if clients.wait_ready(0.5) and all(c.subscribed() for c in cameras):
                return None
        print(f"[soak] the node was not ready after {self.args.startup_timeout:g} s", flush=True)
        return 1

    def _load_loop(self, proc, t0, questions, clients, cameras, monitor, log, watch) -> None:
        """Ask on schedule and sample every period until the end or a node death."""
        next_q, k, last = 0, 0, 0.0
        period = self.args.sample_period
        while True:
            now = time.monotonic() - t0
            if proc.poll() is not None:
                self.crashes = 1
                self.crash_note = f"node exited during the run at {now:.1f} s (status {proc.returncode})"
                print(f"[soak] CRASH: {self.crash_note}", flush=True)
                return
            self.max_loop_gap_s = max(self.max_loop_gap_s, now - last)
            last = now
            send, skipped, next_q = due_questions(questions, next_q, now, self.args.ask_period)
            self.skipped_questions += skipped
            for q in send:
                clients.ask(q)
            if k * period <= now and k * period <= self.args.duration:
                self._sample(round(now, 2), proc.pid, cameras, monitor, log, watch)
                k = max(k + 1, int(now // period) + 1)  # slots missed while stalled are not caught up
            if now >= self.args.duration and k * period > self.args.duration:
                return
            time.sleep(0.02)

    def _sample(self, t_s, pid, cameras, monitor, log, watch) -> None:
        status, _ = monitor.snapshot()
        offsets = {c.plan.name: c.stamp_offset_s for c in cameras}
        records = log.snapshot()
        row = {
            "t_s": t_s, "rss_mb": rss_mb(pid), "device_memory_mb": device_memory_mb(status),
            "load1": os.getloadavg()[0],
            "streams": {s.name: stream_row(s, offsets.get(s.name, 0.0)) for s in (status.streams if status else [])},
            "questions": {"sent": len(records), "answered": sum(r.outcome == "answered" for r in records),
                          "errored": sum(r.outcome == "errored" for r in records),
                          "pending": sum(r.outcome is None for r in records)},
            "watch_feedback": watch.feedbacks,
            "checkpoint_dir": _dir_usage(self.memory_dir),
        }
        self.samples.append(row)
        tokens = ", ".join(f"{n} {s['memory_tokens']} tok" for n, s in row["streams"].items())
        print(f"[soak] t={t_s:5.0f} s  RSS {row['rss_mb']:.1f} MB  {tokens}  questions {row['questions']}  "
              f"load {row['load1']:.1f}", flush=True)

    @staticmethod
    def _drain(log, wait_s: float) -> int:
        """Wait until every question has a response, at most ``wait_s`` after the last one sent."""
        records = log.snapshot()
        deadline = max([time.monotonic()] + [r.sent_at for r in records]) + wait_s
        while log.pending() and time.monotonic() < deadline:
            time.sleep(0.1)
        return log.pending()

    def _config(self, plans) -> Dict:
        a = self.args
        return {"duration_s": a.duration, "warmup_s": self.warmup, "sample_period_s": a.sample_period,
                "rate_hz": a.rate, "malformed_fraction": a.malformed, "jump_back_s": a.jump_back,
                "ask_period_s": a.ask_period, "ask_timeout_s": a.ask_timeout, "seed": a.seed,
                "cameras": {p.name: p.transport for p in plans}, "node": self.node_config}

    @staticmethod
    def _print(report: Dict) -> None:
        r, q, age = report["rss"], report["questions"], report["frame_age_s"]["all"]

        def f(x, d=2):
            return "n/a" if x is None else f"{x:.{d}f}"

        print(f"[soak] RSS slope after warm-up {f(r['slope_mb_per_min'])} ± {f(r['slope_se_mb_per_min'])} MB/min "
              f"(target < {r['slope_target_mb_per_min']:g}), growth {f(r['growth_after_warmup_mb'], 1)} MB, "
              f"peak {f(r['peak_mb'], 1)} MB; device memory {report['device_memory']}", flush=True)
        print(f"[soak] newest-frame age p50 {f(age['p50'])} s, p99 {f(age['p99'])} s; ask round trip p50 "
              f"{f(q['round_trip_s']['p50'])} s, p99 {f(q['round_trip_s']['p99'])} s", flush=True)
        print(f"[soak] questions sent {q['sent']}, answered {q['answered']}, errored {q['errored']}, lost "
              f"{q['lost']}; crashes {report['crashes']}; {report['watch']['status']}; "
              f"{report['checkpoints']['status']}", flush=True)
        c = report["contention"]
        print(f"[soak] machine: {c.get('cpus')} CPUs, load average mean {f(c.get('load1_mean'), 1)}, max "
              f"{f(c.get('load1_max'), 1)}; this process stalled up to {f(c['client_loop_max_gap_s'])} s "
              f"({c['questions_skipped_client_late']} questions skipped meanwhile)", flush=True)
        v = report["verdict"]
        print("[soak] PASS" if v["passed"] else "[soak] FAIL: " + "; ".join(v["failures"]), flush=True)

    @property
    def warmup(self) -> float:
        a = self.args
        return a.warmup if a.warmup is not None else default_warmup(a.duration, a.sample_period)

    @property
    def thresholds(self) -> Thresholds:
        a = self.args
        return Thresholds(a.max_rss_growth_mb, a.max_lost_questions, a.max_crashes, a.rss_slope_target)


def _replot(out_dir: str) -> int:
    import json

    try:
        with open(os.path.join(out_dir, "soak.json"), encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError) as exc:
        print(f"livevlm_soak: cannot read {out_dir}/soak.json: {exc}", file=sys.stderr)
        return 2
    for path in plot(out_dir, report):
        print(path)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    own, ros_args = split_ros_args(tool_argv(argv))
    parser = build_parser()
    args = parser.parse_args(own)
    args.ros_args = ros_args[1:] if ros_args[:1] == ["--ros-args"] else ros_args
    if args.replot:
        return _replot(args.replot)
    if args.duration is None or args.out is None:
        parser.error("--duration and --out are required (or --replot DIR)")
    problems = [name for name, ok in (("--duration", args.duration > 0), ("--sample-period", args.sample_period > 0),
                                      ("--rate", args.rate > 0), ("--ask-period", args.ask_period > 0),
                                      ("--malformed", 0 <= args.malformed < 1)) if not ok]
    if problems:
        print(f"livevlm_soak: invalid {', '.join(problems)} (durations/periods/rate > 0, malformed in [0, 1))",
              file=sys.stderr)
        return 2
    try:
        Soak(args, args.out).thresholds
    except ValueError as exc:
        print(f"livevlm_soak: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", os.path.join(os.path.abspath(args.out), "logs", "ros"))
    profile = _fastdds_profile()
    if profile:
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", profile)
    try:
        return Soak(args, os.path.abspath(args.out)).run()
    except KeyboardInterrupt:
        print("[soak] interrupted", flush=True)
        return 1
    except FileNotFoundError as exc:
        print(f"livevlm_soak: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
