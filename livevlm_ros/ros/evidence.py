"""Evidence and memory-view messages: engine results and stream snapshots -> ROS messages.

* :func:`evidence_stamps`: the evidence frames of an answer or watch (the engine's
  :class:`~livevlm_ros.engine.results.EvidenceFrame`, ordered by the attention mass the first
  answer token put on each frame's tokens) as ``builtin_interfaces/Time`` header stamps;
* :func:`evidence_images`: their JPEG thumbnails from the stream's
  :class:`~livevlm_ros.io.thumbnails.ThumbnailRing` as ``sensor_msgs/CompressedImage`` with the
  original header (stamp, the stream's ``frame_id``);
* :func:`memory_view_image`: the ``~/memory_view`` picture of every stream, rendered by
  :func:`~livevlm_ros.io.memory_view.render_memory_view` from the snapshots the worker keeps
  (:attr:`StreamRuntime.timeline`), so it never waits on or touches the model.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from livevlm_ros.io.memory_view import StreamView, render_memory_view
from livevlm_ros.io.thumbnails import ThumbnailRing

from .questions import seconds_to_stamp

__all__ = ["to_time", "evidence_stamps", "evidence_images", "memory_view_image", "rgb_image_msg"]


def to_time(t: Optional[float]) -> Time:
    """Stream seconds -> ``builtin_interfaces/Time`` (``None`` -> zero)."""
    sec, nanosec = seconds_to_stamp(t)
    return Time(sec=sec, nanosec=nanosec)


def evidence_stamps(evidence: Sequence) -> List[Time]:
    """Header stamps of ``evidence`` frames (most attention first)."""
    return [to_time(e.time) for e in evidence]


def evidence_images(evidence: Sequence, ring: Optional[ThumbnailRing], frame_id: str, limit: int) -> List[CompressedImage]:
    """JPEG thumbnails of the first ``limit`` evidence frames the ring still holds (same order)."""
    images: List[CompressedImage] = []
    if ring is None:
        return images
    for item in evidence:
        if len(images) >= limit:
            break
        thumb = ring.get(item.frame)
        if thumb is None:
            continue
        msg = CompressedImage(format="jpeg", data=thumb.jpeg)
        msg.header.stamp = to_time(thumb.stamp_s)
        msg.header.frame_id = frame_id
        images.append(msg)
    return images


def memory_view_image(streams: Iterable) -> np.ndarray:
    """RGB uint8 picture of every stream's memory from the worker's snapshots (see the module doc)."""
    from livevlm_ros.engine.results import Timeline

    views = []
    for rt in streams:
        timeline = rt.timeline or Timeline(None, None, [], 1, None, None, None)
        thumbnails = rt.thumbnails.items() if rt.thumbnails is not None else []
        views.append(StreamView(rt.name, timeline, list(rt.last_evidence_times), thumbnails))
    return render_memory_view(views)


def rgb_image_msg(rgb: np.ndarray, stamp: Time, frame_id: str = "") -> Image:
    """``sensor_msgs/Image`` (rgb8) of an RGB uint8 ``(H, W, 3)`` array."""
    height, width = rgb.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=3 * width,
                data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg
