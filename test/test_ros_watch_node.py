"""Watches, evidence and the memory view on a real ROS graph (the node in its own process, tiny
random-weight model on the CPU): a Watch fires, feedback flows, cancel works, ~/events carries
the edges, watches past max_watches and bad goals are refused with a reason; Ask evidence stamps
lie inside the answer's span and their thumbnails decode; the thumbnail ring stays within its byte
bound over a long stream; ~/memory_view is published and decodes.

A random-weight model's p_yes is noise, so the watches here use threshold 0 (always true) or 1
(never true) where the outcome must be known, and otherwise check consistency (events = the
state changes seen in feedback), never content.
"""

import io
import time

import numpy as np
import pytest
from PIL import Image as PILImage
from ros_helpers import CameraPublisher, action_client, goal_result, requires_ros, send_goal, wait_until

pytestmark = requires_ros

TOPIC = "/test_watch_cam/image_raw"
RING_BYTES = 30_000
PARAMS = {
    "model": "tiny-llava-onevision", "device": "cpu", "dtype": "float32",
    "sample_fps": 4.0, "status_period_s": 0.5, "ask_timeout_s": 20.0, "max_new_tokens": 4,
    "clip_frames": 2, "budget_tokens": 256, "max_watches": 2, "max_question_chars": 200,
    "thumbnail_ring_bytes": RING_BYTES, "evidence_frames": 3, "max_evidence_images": 2,
}


def _seconds(t) -> float:
    return t.sec + t.nanosec * 1e-9


@pytest.fixture(scope="module")
def node(node_process, ros_client):
    from livevlm_interfaces.srv import Ask

    proc = node_process(PARAMS, remaps=[f"image:={TOPIC}"])
    assert ros_client.client(Ask, "/livevlm/ask").wait_for_service(timeout_sec=90.0), proc.output()
    return proc


@pytest.fixture(scope="module")
def camera(ros_client, node):
    from livevlm_ros.io.synthetic_scene import SyntheticScene

    scene = SyntheticScene(width=320, height=240, fps=30.0, duration_s=24.0)
    cam = CameraPublisher(ros_client, TOPIC, "raw", lambda t: scene.render(t % 24.0), 20.0).wait_for_subscriber()
    cam.start()
    yield cam
    cam.stop()


@pytest.fixture(scope="module")
def status(ros_client, node):
    from livevlm_interfaces.msg import MemoryStatus

    return ros_client.subscribe(MemoryStatus, "/livevlm/memory_status")


@pytest.fixture(scope="module")
def events(ros_client, node):
    from livevlm_interfaces.msg import WatchEvent

    return ros_client.subscribe(WatchEvent, "/livevlm/events")


def start_watch(ros_client, feedback=None, **fields):
    from livevlm_interfaces.action import Watch

    fields.setdefault("condition", "Is a red ball in view?")
    return send_goal(action_client(ros_client, Watch, "/livevlm/watch"), Watch.Goal(**fields), feedback)


def result_of(handle, timeout=60.0):
    return goal_result(handle, timeout)


def frames_ingested(status):
    wait_until(lambda: status, 10.0, "a MemoryStatus")
    return status[-1].streams[0].frames_ingested


def test_watch_fires_with_feedback_evidence_and_a_rising_event(ros_client, camera, status, events):
    from action_msgs.msg import GoalStatus

    wait_until(lambda: frames_ingested(status) >= 4, 30.0, "frames in memory")
    feedback = []
    handle = start_watch(ros_client, lambda f: feedback.append(f.feedback), threshold=0.0, consecutive=2,
                         return_evidence_images=True)
    response = result_of(handle)
    result = response.result
    assert response.status == GoalStatus.STATUS_SUCCEEDED, result.error
    assert result.fired and result.error == "" and result.evaluations == 2  # two in a row: consecutive=2
    assert 0.0 <= result.p_yes <= 1.0 and _seconds(result.stamp) > 0
    assert [f.evaluations for f in feedback] == [1, 2] and [f.state for f in feedback] == [False, True]
    assert _seconds(feedback[-1].stamp) == pytest.approx(_seconds(result.stamp))
    assert 1 <= len(result.evidence_stamps) <= 3
    assert all(_seconds(s) <= _seconds(result.stamp) + 1e-6 for s in result.evidence_stamps)
    assert 1 <= len(result.evidence_images) <= 2
    for image in result.evidence_images:
        assert image.format == "jpeg" and image.header.frame_id == "camera"
        assert PILImage.open(io.BytesIO(bytes(image.data))).size == (160, 120)
    watch_id = bytes(handle.goal_id.uuid).hex()
    wait_until(lambda: any(e.watch_id == watch_id for e in events), 5.0, "the rising edge on ~/events")
    mine = [e for e in events if e.watch_id == watch_id]
    assert len(mine) == 1 and mine[0].state and mine[0].stream == "camera"
    assert mine[0].condition == "Is a red ball in view?" and _seconds(mine[0].stamp) == pytest.approx(
        _seconds(result.stamp))


def test_continuous_watch_reports_every_edge_and_cancel_stops_it_at_once(ros_client, camera, events, status):
    from action_msgs.msg import GoalStatus

    feedback = []
    handle = start_watch(ros_client, lambda f: feedback.append(f.feedback), threshold=0.5, continuous=True,
                         condition="Is the scene moving?")
    wait_until(lambda: len(feedback) >= 6, 60.0, "six evaluations")
    t0 = time.monotonic()
    cancel = handle.cancel_goal_async()
    wait_until(cancel.done, 5.0, "the cancel response")
    response = result_of(handle, timeout=5.0)
    assert time.monotonic() - t0 < 2.0  # at once, not after the next evaluation
    assert response.status == GoalStatus.STATUS_CANCELED and response.result.error == ""
    count = len(feedback)
    time.sleep(1.5)
    assert len(feedback) == count  # no evaluation after the cancel
    watch_id = bytes(handle.goal_id.uuid).hex()
    states, changes = False, []
    for f in feedback:
        if f.state != states:
            changes.append((f.state, _seconds(f.stamp)))
            states = f.state
    edges = [(e.state, _seconds(e.stamp)) for e in events if e.watch_id == watch_id]
    assert edges == changes  # every rising and falling edge, nothing else
    assert response.result.fired == any(state for state, _ in changes)
    stamps = [_seconds(f.stamp) for f in feedback]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # one evaluation per clip at most


def test_watches_past_max_watches_are_refused_with_the_reason(ros_client, camera, status):
    from action_msgs.msg import GoalStatus

    running = [start_watch(ros_client, threshold=1.0, continuous=True) for _ in range(2)]
    wait_until(lambda: status and status[-1].streams[0].active_watches == 2, 10.0, "two active watches")
    third = result_of(start_watch(ros_client, threshold=1.0), timeout=10.0)
    assert third.status == GoalStatus.STATUS_ABORTED and "max_watches=2" in third.result.error
    for handle in running:
        handle.cancel_goal_async()
    for handle in running:
        response = result_of(handle, timeout=10.0)
        assert response.status == GoalStatus.STATUS_CANCELED and not response.result.fired  # 1.0: never true
    wait_until(lambda: status[-1].streams[0].active_watches == 0, 10.0, "no active watch")


@pytest.mark.parametrize("fields, words", [
    ({"condition": "   "}, "empty"),
    ({"condition": "x" * 300}, "characters"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": -0.5}, "threshold"),
    ({"stream": "nope"}, "unknown stream"),
])
def test_bad_watch_goals_are_refused_and_the_node_keeps_serving(ros_client, camera, fields, words):
    from action_msgs.msg import GoalStatus

    from livevlm_interfaces.srv import Ask

    response = result_of(start_watch(ros_client, **fields), timeout=10.0)
    assert response.status == GoalStatus.STATUS_ABORTED and words in response.result.error
    answer = ros_client.call(Ask, "/livevlm/ask", Ask.Request(question="still there?", max_new_tokens=1))
    assert answer.success, answer.error


def test_ask_evidence_stamps_lie_in_the_span_and_thumbnails_decode(ros_client, camera):
    from livevlm_interfaces.srv import Ask

    plain = ros_client.call(Ask, "/livevlm/ask", Ask.Request(question="What moved?", max_new_tokens=2))
    assert plain.success and plain.evidence_images == []
    assert 1 <= len(plain.evidence_stamps) <= 3
    for response in (plain, ros_client.call(Ask, "/livevlm/ask", Ask.Request(
            question="What moved?", max_new_tokens=2, return_evidence_images=True))):
        lo, hi = _seconds(response.span_start), _seconds(response.span_end)
        assert all(lo - 1e-6 <= _seconds(s) <= hi + 1e-6 for s in response.evidence_stamps)
    images = response.evidence_images
    assert 1 <= len(images) <= 2  # max_evidence_images
    stamps = [_seconds(s) for s in response.evidence_stamps]
    for image in images:
        assert any(abs(_seconds(image.header.stamp) - s) < 1e-6 for s in stamps)
        rgb = np.asarray(PILImage.open(io.BytesIO(bytes(image.data))).convert("RGB"))
        assert rgb.shape == (120, 160, 3) and rgb.std() > 1.0


def test_thumbnail_ring_stays_within_its_byte_bound_over_a_long_stream(camera, status):
    start = frames_ingested(status)
    seen = []
    deadline = time.monotonic() + 60.0
    while frames_ingested(status) < start + 40 and time.monotonic() < deadline:
        n = len(status)
        wait_until(lambda: len(status) > n, 5.0, "a MemoryStatus")
        seen.append(status[-1])
    assert frames_ingested(status) >= start + 40, "the stream did not go on"
    assert all(msg.thumbnail_ring_bytes == RING_BYTES for msg in seen)
    streams = [msg.streams[0] for msg in seen]
    assert all(0 < s.thumbnail_bytes <= RING_BYTES for s in streams)
    assert max(s.thumbnail_bytes for s in streams) > RING_BYTES // 2  # the bound, not the stream, limits it
    assert all(s.thumbnails < s.frames_ingested for s in streams[-3:])


def test_memory_view_is_published_and_decodes(ros_client, camera):
    from sensor_msgs.msg import Image

    views = ros_client.subscribe(Image, "/livevlm/memory_view", 1)
    wait_until(lambda: views, 20.0, "a ~/memory_view image")
    msg = views[-1]
    assert msg.encoding == "rgb8" and msg.step == 3 * msg.width and msg.width >= 640 and msg.height >= 200
    rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
    assert rgb.std() > 10  # bars, labels and thumbnails were drawn
    assert (rgb[..., 2].astype(int) - rgb[..., 0] > 60).any()  # the blue token bars
