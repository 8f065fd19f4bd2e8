"""Shared plumbing of the console scripts that talk to ROS (livevlm_replay, livevlm_ask, livevlm_demo)."""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import contextmanager
from typing import List, Optional, Sequence, Tuple

__all__ = [
    "split_ros_args",
    "init_rclpy",
    "tool_argv",
    "image_msg",
    "jpeg_bytes",
    "compressed_image_msg",
    "stop_process",
    "DeferredInterrupt",
]


def split_ros_args(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split ``argv`` (without the program name) into the tool's own arguments and the
    ``--ros-args ... [--]`` sections meant for rclpy.

    Only explicit ``--ros-args`` sections go to rclpy: a tool option value such as
    ``--remap a:=b`` must not be taken by rcl for a (deprecated, bare) remap rule.
    """
    own: List[str] = []
    ros: List[str] = []
    in_ros = False
    for arg in argv:
        if arg == "--ros-args":
            in_ros = True
            ros.append(arg)
        elif in_ros and arg == "--":
            in_ros = False
            ros.append(arg)
        else:
            (ros if in_ros else own).append(arg)
    return own, ros


def init_rclpy(ros_args: Sequence[str], prog: str):
    """``rclpy.init`` with only ``ros_args``, and *without* rclpy's signal handlers, so Ctrl-C
    raises ``KeyboardInterrupt`` in the tool (which then cancels or stops cleanly) instead of
    shutting the context down under it. Returns the ``rclpy`` module."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=[prog, *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    return rclpy


class DeferredInterrupt:
    """Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` at once, except inside :meth:`deferred` (around
    ``executor.spin_once``), where it is held until the block ends.

    Raised inside rclpy's C++ bindings (while a taken message is converted), a ``KeyboardInterrupt``
    comes out as another exception (pybind11: ``TypeError: Unable to convert function return value``),
    so the tool would crash instead of cancelling its goal. Call :meth:`install` once, in the main thread.
    """

    def __init__(self) -> None:
        self.pending = False
        self._depth = 0

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self._depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self.pending and not self._depth:
                self.pending = False
                raise KeyboardInterrupt


def tool_argv(argv: Optional[Sequence[str]]) -> List[str]:
    """The arguments after the program name (``sys.argv[1:]`` when ``argv`` is None)."""
    return list(sys.argv[1:] if argv is None else argv)


def image_msg(rgb, stamp, encoding: str = "bgr8", frame_id: str = "camera"):
    """An RGB uint8 (H, W, 3) array as a ``sensor_msgs/Image`` (``bgr8`` or ``rgb8``)."""
    import numpy as np
    from sensor_msgs.msg import Image

    if encoding not in ("bgr8", "rgb8"):
        raise ValueError(f"encoding must be bgr8 or rgb8, got {encoding!r}")
    pixels = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = encoding, 0, msg.width * 3
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def jpeg_bytes(rgb, quality: int = 85) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG bytes (Pillow)."""
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def compressed_image_msg(rgb, stamp, quality: int = 85, frame_id: str = "camera", data: Optional[bytes] = None):
    """An RGB array as a JPEG ``sensor_msgs/CompressedImage`` (or ``data`` as given, format "jpeg")."""
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.format = "jpeg"
    msg.data = jpeg_bytes(rgb, quality) if data is None else data
    return msg


def stop_process(proc: subprocess.Popen, sigint_wait: float = 10.0, sigterm_wait: float = 5.0) -> int:
    """Stop a ROS node process the way ``ros2 launch`` does: SIGINT, wait; SIGTERM, wait; SIGKILL.

    (A node idle in ``spin`` occasionally misses the first SIGINT.) Returns the exit status.
    """
    for sig, wait in ((signal.SIGINT, sigint_wait), (signal.SIGTERM, sigterm_wait)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.kill()
    return proc.wait()
