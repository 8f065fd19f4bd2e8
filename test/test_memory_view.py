"""The thumbnail ring and the memory-view picture (pure Python: no ROS)."""

import io

import numpy as np
import pytest
from engine_helpers import random_frames, stream_of
from PIL import Image

from livevlm_ros.io.memory_view import StreamView, render_memory_view
from livevlm_ros.io.thumbnails import ThumbnailRing, encode_thumbnail


def test_thumbnails_are_small_jpegs_that_decode():
    frame = random_frames(1, height=480, width=640)[0]
    jpeg = encode_thumbnail(frame)
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and max(image.size) == 160
    ring = ThumbnailRing(max_bytes=10**6)
    thumb = ring.add(3, 1.5, frame)
    assert thumb.decode().shape == (120, 160, 3) and ring.get(3) == thumb


def test_ring_stays_within_its_byte_bound_and_keeps_only_retained_frames():
    frames = random_frames(50, seed=1, height=120, width=160)
    ring = ThumbnailRing(max_bytes=40_000)
    for i, frame in enumerate(frames * 4):  # a long stream
        ring.add(i, 0.1 * i, frame)
        assert ring.nbytes <= 40_000
    assert 0 < len(ring) < 200
    newest = [t.frame for t in ring.items()]
    assert newest == sorted(newest) and newest[-1] == 199  # the oldest went first
    ring.retain(newest[::2])
    assert [t.frame for t in ring.items()] == newest[::2]
    assert ring.nbytes == sum(len(t.jpeg) for t in ring.items())
    with pytest.raises(ValueError):
        ThumbnailRing(0)


def test_memory_view_renders_every_stream():
    stream = stream_of("tiny-smolvlm", random_frames(40, seed=2), budget_tokens=150, clip_frames=4)
    result = stream.ask("what moved?", max_new_tokens=1, evidence=2)
    ring = ThumbnailRing(100_000)
    for i, frame in enumerate(random_frames(40, seed=2)):
        ring.add(i, 0.5 * i, frame)
    timeline = stream.timeline()
    assert timeline.retrieved_times and timeline.first_time == 0.0 and timeline.last_time == 19.5
    views = [StreamView("front", timeline, [e.time for e in result.evidence], ring.items()),
             StreamView("rear", stream_of("tiny-smolvlm", []).timeline())]
    image = render_memory_view(views, width=800, row_height=200)
    assert image.shape == (400, 800, 3) and image.dtype == np.uint8
    assert image.std() > 10  # something was drawn
