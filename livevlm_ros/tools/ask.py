"""``livevlm_ask``: ask the livevlm node a question from a terminal.

Usage::

    livevlm_ask "What just drove past?" [--stream S] [--last-seconds N] [--since T] [--until T]
                [--max-new-tokens N] [--timeout S] [--node /livevlm] [--service] [--json] [--wait S]

By default the question goes through the ``~/ask_streaming`` action: the answer is printed as
it is generated (one feedback per token), then the latency figures. Ctrl-C cancels the goal:
the node stops generating and the partial answer is printed. ``--service`` uses ``~/ask``
instead (one response). ``--json`` prints one JSON object with every response field and the
client-side round trip, nothing else.

Exit status: 0 answered, 1 the node answered with an error, 2 no node / bad arguments,
130 cancelled with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

from livevlm_ros.io.sources import stamp_to_seconds
from livevlm_ros.ros.questions import seconds_to_stamp
from livevlm_ros.tools.ros_cli import DeferredInterrupt, init_rclpy, split_ros_args, tool_argv

__all__ = ["build_parser", "main", "result_dict"]

_FIELDS = ("success", "answer", "error", "time_to_first_token_s", "total_latency_s", "frames_seen",
           "memory_tokens", "pages_retrieved")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livevlm_ask", description="Ask the livevlm node about what its cameras saw.")
    p.add_argument("question")
    p.add_argument("--stream", default="", help="stream name (default: the node's first stream)")
    p.add_argument("--last-seconds", type=float, default=0.0, metavar="N",
                   help="only memory from the last N seconds of stream time")
    p.add_argument("--since", type=float, default=None, metavar="T", help="window start, header-stamp seconds")
    p.add_argument("--until", type=float, default=None, metavar="T", help="window end, header-stamp seconds")
    p.add_argument("--max-new-tokens", type=int, default=0, metavar="N", help="answer length limit (0: node default)")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S",
                   help="limit on queue wait + answer in the node (0: node default)")
    p.add_argument("--node", default="/livevlm", help="fully qualified node name (default /livevlm)")
    p.add_argument("--service", action="store_true", help="use the ~/ask service instead of the streaming action")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.add_argument("--wait", type=float, default=10.0, metavar="S", help="seconds to wait for the node (default 10)")
    return p


def _fill_request(request, args) -> None:
    request.question = args.question
    request.stream = args.stream
    request.last_seconds = args.last_seconds
    request.max_new_tokens = args.max_new_tokens
    request.timeout_s = args.timeout
    if args.since is not None or args.until is not None:
        request.use_time_window = True
        for name in ("since", "until"):
            value = getattr(args, name)
            if value is not None:
                stamp = getattr(request, name)
                stamp.sec, stamp.nanosec = seconds_to_stamp(value)


def _seconds(stamp) -> Optional[float]:
    return stamp_to_seconds(stamp) or None


def result_dict(result, round_trip_s: float, tokens: int, cancelled: bool = False) -> dict:
    """The response/result fields as plain JSON-able values (+ client-side figures)."""
    out = {name: getattr(result, name) for name in _FIELDS}
    out.update(span_start=_seconds(result.span_start), span_end=_seconds(result.span_end),
               round_trip_s=round_trip_s, tokens_streamed=tokens, cancelled=cancelled)
    return out


def _print_stats(d: dict) -> None:
    span = ""
    if d["span_start"] is not None and d["span_end"] is not None:
        span = (f", memory span {d['span_end'] - d['span_start']:.1f} s "
                f"(stamps {d['span_start']:.2f}-{d['span_end']:.2f})")
    tokens = f", {d['tokens_streamed']} tokens streamed" if d["tokens_streamed"] else ""
    print(f"[first token {d['time_to_first_token_s'] * 1e3:.0f} ms, node latency {d['total_latency_s'] * 1e3:.0f} ms, "
          f"round trip {d['round_trip_s'] * 1e3:.0f} ms{tokens}; {d['frames_seen']} frames seen, "
          f"{d['memory_tokens']} memory tokens, {d['pages_retrieved']:.1f} pages retrieved{span}]")


#: Ctrl-C is delivered between executor turns, never inside rclpy (see DeferredInterrupt).
INTERRUPT = DeferredInterrupt()


def _spin_until(executor, future, deadline: Optional[float] = None) -> bool:
    while not future.done():
        if deadline is not None and time.monotonic() > deadline:
            return False
        with INTERRUPT.deferred():
            executor.spin_once(timeout_sec=0.05)
    return True


def _ask_service(node, executor, args) -> tuple:
    from livevlm_interfaces.srv import Ask

    client = node.create_client(Ask, f"{args.node}/ask")
    if not client.wait_for_service(timeout_sec=args.wait):
        raise LookupError(f"service {args.node}/ask")
    request = Ask.Request()
    _fill_request(request, args)
    t0 = time.monotonic()
    future = client.call_async(request)
    _spin_until(executor, future)
    return future.result(), time.monotonic() - t0, 0, False


def _ask_action(node, executor, args) -> tuple:
    from rclpy.action import ActionClient

    from livevlm_interfaces.action import Ask as AskAction

    client = ActionClient(node, AskAction, f"{args.node}/ask_streaming")
    if not client.wait_for_server(timeout_sec=args.wait):
        raise LookupError(f"action {args.node}/ask_streaming")
    goal = AskAction.Goal()
    _fill_request(goal, args)
    tokens = [0]
    printed = [""]  # the answer text written so far

    def write_answer(text: str) -> None:
        # from partial_answer, not new_text: a feedback message that never arrives leaves no hole
        if not args.json and text.startswith(printed[0]) and len(text) > len(printed[0]):
            sys.stdout.write(text[len(printed[0]):])
            sys.stdout.flush()
            printed[0] = text

    def on_feedback(msg):
        tokens[0] = msg.feedback.tokens_generated
        write_answer(msg.feedback.partial_answer)

    t0 = time.monotonic()
    cancelled = False
    goal_future = client.send_goal_async(goal, feedback_callback=on_feedback)
    handle = result_future = None
    try:
        _spin_until(executor, goal_future)
        handle = goal_future.result()
        if not handle.accepted:
            raise RuntimeError("the goal was rejected")
        result_future = handle.get_result_async()
        _spin_until(executor, result_future)
    except KeyboardInterrupt:
        cancelled = True
        if handle is None:  # not accepted yet: wait for it so it can be cancelled
            _spin_until(executor, goal_future, time.monotonic() + 5.0)
            handle = goal_future.result()
        if not args.json:
            sys.stderr.write("\n[cancelling...]\n")
        _spin_until(executor, handle.cancel_goal_async(), time.monotonic() + 5.0)
        # Ask for the result once more if the first request got no answer in time.
        for retry in (False, True):
            if result_future is None or retry:
                result_future = handle.get_result_async()
            if _spin_until(executor, result_future, time.monotonic() + 5.0):
                break
    response = result_future.result() if result_future is not None else None
    if response is not None:
        # The result can overtake the last feedback messages (it comes on another channel) and
        # rclpy drops a goal's feedback once its result is in: the rest of the answer is here.
        write_answer(response.result.answer)
    if not args.json:
        sys.stdout.write("\n")
    if response is None:  # only reachable after a cancel: report it instead of crashing
        result = AskAction.Result(success=False, error="cancelled; the node sent no final result in time")
        return result, time.monotonic() - t0, tokens[0], cancelled
    return response.result, time.monotonic() - t0, tokens[0], cancelled


def main(argv: Optional[Sequence[str]] = None) -> int:
    own, ros_args = split_ros_args(tool_argv(argv))
    args = build_parser().parse_args(own)
    rclpy = init_rclpy(ros_args, "livevlm_ask")
    INTERRUPT.install()
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("livevlm_ask")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        try:
            ask = _ask_service if args.service else _ask_action
            result, round_trip, tokens, cancelled = ask(node, executor, args)
        except LookupError as exc:
            print(f"livevlm_ask: no {exc} after {args.wait:g} s: is the livevlm node running and active, "
                  "on this ROS_DOMAIN_ID, with this name (--node)?", file=sys.stderr)
            return 2
        d = result_dict(result, round_trip, tokens, cancelled)
        if args.json:
            print(json.dumps(d))
        else:
            if args.service and d["answer"]:
                print(d["answer"])
            if not d["success"]:
                print(f"livevlm_ask: {d['error']}", file=sys.stderr)
            _print_stats(d)
        if cancelled:
            return 130
        return 0 if d["success"] else 1
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a running goal
        return 130
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
