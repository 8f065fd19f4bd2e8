"""Persistent memory and clean stops, with the node as its own process on a real ROS graph (tiny model, CPU).

* crash test: periodic checkpoints, SIGKILL inside the next checkpoint write (the slow-write test hook
  holds it between the synced temporary file and its rename), restart: the memory of the last complete
  checkpoint is restored (status and log say what), questions are answered, the timeline continues,
  an earlier stamp goes through ``timestamp_jump_policy``, deactivate saves, ``~/reset`` deletes the file;
* bad checkpoints (truncated, garbage, newer format, another engine config, another model) are moved
  aside with a warning, the stream starts empty, the node keeps running;
* no question left hanging: questions running or queued when the node deactivates, shuts down
  (lifecycle) or gets SIGTERM get an error response / aborted goal within 2 s; SIGTERM saves the memory.
"""

import glob
import hashlib
import os
import threading
import time

import pytest

from ros_helpers import CameraPublisher, raw_image_msg, requires_ros, sensor_qos, wait_until

pytestmark = requires_ros

TOPIC = "/persist_cam/image_raw"
PARAMS = {
    "model": "tiny-llava-onevision", "device": "cpu", "dtype": "float32",
    "sample_fps": 4.0, "status_period_s": 0.2, "ask_timeout_s": 30.0, "max_queued_questions": 4,
    "streams.camera.topic": TOPIC, "clip_frames": 4, "budget_tokens": 256, "max_new_tokens": 8,
    "checkpoint_period_s": 1.0,
}
#: A long answer (~2 s of generation on a CPU) that is still running when the node is stopped.
LONG_ANSWER = 500
#: Item 6: every question gets its response within this many seconds of the stop.
GRACE_S = 2.0


def scene_render():
    from livevlm_ros.io.synthetic_scene import SyntheticScene

    scene = SyntheticScene(width=320, height=240, fps=30.0, duration_s=24.0)
    return lambda t: scene.render(t % 24.0)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def stamp_s(t):
    return t.sec + t.nanosec * 1e-9


class Node:
    """One node process and what the test client sees of it."""

    def __init__(self, node_process, ros_client, name, params, env=None):
        from livevlm_interfaces.msg import MemoryStatus
        from livevlm_interfaces.srv import Ask

        self.name, self.ros_client = name, ros_client
        self.status = ros_client.subscribe(MemoryStatus, f"/{name}/memory_status")
        self.proc = node_process(params, name=name, env=env)
        assert ros_client.client(Ask, f"/{name}/ask").wait_for_service(timeout_sec=90.0), self.proc.output()

    def streams(self, timeout=5.0):
        n = len(self.status)
        wait_until(lambda: len(self.status) > n, timeout, "a MemoryStatus message")
        return {s.name: s for s in self.status[-1].streams}

    def ask(self, timeout=30.0, **fields):
        from livevlm_interfaces.srv import Ask

        fields.setdefault("question", "What is in view?")
        return self.ros_client.call(Ask, f"/{self.name}/ask", Ask.Request(**fields), timeout)

    def ask_async(self, **fields):
        from livevlm_interfaces.srv import Ask

        fields.setdefault("question", "What is in view?")
        return self.ros_client.client(Ask, f"/{self.name}/ask").call_async(Ask.Request(**fields))

    def reset(self, stream=""):
        from livevlm_interfaces.srv import Reset

        return self.ros_client.call(Reset, f"/{self.name}/reset", Reset.Request(stream=stream))

    def transition_async(self, tid):
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.ros_client.client(ChangeState, f"/{self.name}/change_state")
        assert client.wait_for_service(timeout_sec=10.0)
        return client.call_async(ChangeState.Request(transition=Transition(id=tid)))

    def transition(self, tid):
        future = self.transition_async(tid)
        wait_until(future.done, 60.0, "the lifecycle transition")
        return future.result().success

    def goal_async(self, feedback=None, **fields):
        from rclpy.action import ActionClient

        from livevlm_interfaces.action import Ask as AskAction

        key = f"action_{self.name}"
        if not hasattr(self.ros_client, key):
            setattr(self.ros_client, key, ActionClient(self.ros_client.node, AskAction, f"/{self.name}/ask_streaming"))
        client = getattr(self.ros_client, key)
        assert client.wait_for_server(timeout_sec=10.0)
        sent = client.send_goal_async(AskAction.Goal(**fields), feedback_callback=feedback)
        wait_until(sent.done, 10.0, "goal acceptance")
        handle = sent.result()
        assert handle.accepted
        return handle.get_result_async()


def publish_stamped(ros_client, topic, stamps):
    """One grey frame per stamp (s), 0.1 s apart in wall time."""
    import numpy as np
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image

    pub = ros_client.node.create_publisher(Image, topic, sensor_qos())
    wait_until(lambda: pub.get_subscription_count() > 0, 10.0, "the node's subscription")
    for t in stamps:
        sec = int(t)
        pub.publish(raw_image_msg(np.full((240, 320, 3), 90, np.uint8), Time(sec=sec, nanosec=int((t - sec) * 1e9))))
        time.sleep(0.1)
    ros_client.node.destroy_publisher(pub)


# ============================================================================ crash test
def test_sigkill_inside_a_checkpoint_write_restores_the_last_complete_checkpoint(node_process, ros_client, tmp_path):
    from livevlm_ros.engine.persistence import load_checkpoint
    from livevlm_ros.ros.memory_store import SLOW_WRITE_ENV, SLOW_WRITE_LOG

    memory_dir = tmp_path / "memory"
    params = {**PARAMS, "memory_dir": str(memory_dir)}
    path = str(memory_dir / "camera.safetensors")
    # TEST HOOK: the 2nd and later checkpoint writes are held 120 s before their rename
    first = Node(node_process, ros_client, "livevlm_crash", params, env={**os.environ, SLOW_WRITE_ENV: "2:120"})
    with CameraPublisher(ros_client, TOPIC, "raw", scene_render(), 30.0).wait_for_subscriber():
        wait_until(lambda: os.path.exists(path), 30.0, "the first checkpoint")
        saved_digest = sha(path)
        saved = load_checkpoint(path).summary
        wait_until(lambda: SLOW_WRITE_LOG in first.proc.output(), 30.0, "the next checkpoint write to be held")
        temporaries = glob.glob(str(memory_dir / ".tmp-camera.safetensors.*"))
        assert len(temporaries) == 1 and os.path.getsize(temporaries[0]) > 0  # written and synced, not renamed
        first.proc.proc.kill()  # SIGKILL in the middle of the write
        first.proc.wait_exit(10.0)
    assert first.proc.returncode == -9
    assert sha(path) == saved_digest  # the last complete checkpoint, untouched
    assert saved["frames_ingested"] >= 4 and saved["memory_tokens"] > 0

    second = Node(node_process, ros_client, "livevlm_crash2", params)
    camera = second.streams()["camera"]
    assert camera.memory_restore.startswith(f"restored {saved['frames_ingested']} frames")
    assert camera.restored_frames == saved["frames_ingested"] and camera.restored_tokens == saved["memory_tokens"]
    assert stamp_s(camera.restored_oldest_stamp) == pytest.approx(saved["oldest_time"], abs=1e-6)
    assert stamp_s(camera.restored_newest_stamp) == pytest.approx(saved["newest_time"], abs=1e-6)
    assert camera.memory_tokens == saved["memory_tokens"] and camera.frames_ingested == 0
    out = second.proc.output()
    assert f"memory restored {saved['frames_ingested']} frames, {saved['memory_tokens']} memory tokens" in out
    assert "unfinished checkpoint write" in out and not glob.glob(str(memory_dir / ".tmp-*"))
    answer = second.ask(max_new_tokens=4)
    assert answer.success, answer.error
    assert answer.memory_tokens == saved["memory_tokens"] and answer.frames_seen > 0
    restored_newest = stamp_s(camera.restored_newest_stamp)

    # later frames continue the restored timeline (nothing is cleared)
    with CameraPublisher(ros_client, TOPIC, "raw", scene_render(), 30.0).wait_for_subscriber():
        wait_until(lambda: second.streams()["camera"].frames_ingested >= 4, 20.0, "new frames ingested")
    time.sleep(0.5)
    camera = second.streams()["camera"]
    assert stamp_s(camera.oldest_stamp) <= restored_newest < stamp_s(camera.newest_stamp)
    assert camera.memory_tokens > saved["memory_tokens"]
    # deactivate saves what the periodic checkpoints have not yet
    from lifecycle_msgs.msg import Transition

    assert second.transition(Transition.TRANSITION_DEACTIVATE)
    on_disk = load_checkpoint(path).summary
    assert on_disk["newest_time"] == pytest.approx(stamp_s(camera.newest_stamp), abs=1e-6)
    assert on_disk["memory_tokens"] == camera.memory_tokens
    assert second.transition(Transition.TRANSITION_ACTIVATE)

    # a stamp before the checkpoint's last one goes through timestamp_jump_policy (reset): a new timeline
    earlier = [restored_newest - 50.0 + 0.25 * i for i in range(4)]  # one clip
    publish_stamped(ros_client, TOPIC, earlier)
    wait_until(lambda: stamp_s(second.streams()["camera"].oldest_stamp) == pytest.approx(earlier[0], abs=1e-6),
               10.0, "the memory restarted at the earlier stamp")
    assert "memory cleared (timestamp_jump_policy reset)" in second.proc.output()

    # ~/reset also deletes the checkpoint
    assert os.path.exists(path)
    assert second.reset().success
    assert not os.path.exists(path)
    assert second.streams()["camera"].memory_tokens < saved["memory_tokens"]
    assert second.proc.stop() == 0
    assert not os.path.exists(path)  # an empty memory is not saved on shutdown


# ============================================================================ bad files
def _checkpoint_files(tmp_path):
    """A good checkpoint for the node's settings, and bad ones, in ``tmp_path/memory``."""
    import numpy as np

    from livevlm_ros.engine import LiveVLMStream, load_video_llm
    from livevlm_ros.engine.persistence import save_checkpoint
    from livevlm_ros.ros.parameters import settings_from_parameters

    engine = settings_from_parameters(PARAMS).engine
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(8)]

    def checkpoint(model="tiny-llava-onevision", config=engine):
        stream = LiveVLMStream(load_video_llm(model, device="cpu", dtype="float32"), config)
        for i, frame in enumerate(frames):
            stream.ingest(frame, 100.0 + 0.25 * i)
        return stream.checkpoint()

    memory = tmp_path / "memory"
    memory.mkdir()
    good = checkpoint()
    save_checkpoint(good, str(memory / "good.safetensors"))
    data = (memory / "good.safetensors").read_bytes()
    (memory / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (memory / "garbage.safetensors").write_bytes(b"\x00\xff" * 4096)
    good.meta["format_version"] = 99
    save_checkpoint(good, str(memory / "future.safetensors"))
    save_checkpoint(checkpoint(config=engine.replace(budget_tokens=128)), str(memory / "otherconfig.safetensors"))
    save_checkpoint(checkpoint(model="tiny-smolvlm"), str(memory / "othermodel.safetensors"))
    return memory


def test_bad_checkpoints_are_moved_aside_and_the_streams_start_empty(node_process, ros_client, tmp_path):
    memory = _checkpoint_files(tmp_path)
    bad = {"truncated": "unreadable", "garbage": "unreadable", "future": "format version 99",
           "otherconfig": "another engine configuration", "othermodel": "another model"}
    digests = {name: sha(memory / f"{name}.safetensors") for name in bad}
    names = ["good", *bad]
    params = {**PARAMS, "memory_dir": str(memory), "streams": names,
              **{f"streams.{n}.topic": f"/persist_bad/{n}" for n in names}}
    params.pop("streams.camera.topic")
    node = Node(node_process, ros_client, "livevlm_badfiles", params)
    streams = node.streams()
    assert streams["good"].memory_restore.startswith("restored 8 frames") and streams["good"].memory_tokens > 0
    assert node.ask(stream="good", max_new_tokens=2).success
    for name, reason in bad.items():
        status = streams[name]
        assert status.memory_restore.startswith("rejected: ") and reason in status.memory_restore, status.memory_restore
        assert status.newest_stamp.sec == 0 and status.restored_frames == 0  # empty (the prompt prefix only)
        assert status.memory_tokens < streams["good"].memory_tokens
        assert not (memory / f"{name}.safetensors").exists()
        (aside,) = glob.glob(str(memory / f"{name}.safetensors.rejected-*"))  # kept, not deleted
        assert sha(aside) == digests[name] and aside in status.memory_restore
        r = node.ask(stream=name)
        assert not r.success and "nothing to answer from" in r.error
    out = node.proc.output()
    assert out.count("checkpoint rejected: ") == len(bad) and "Traceback" not in out
    assert node.proc.alive()
    assert node.proc.stop() == 0


# ============================================================================ no question left hanging
def _questions_in_flight(node):
    """One long action goal being answered, then two service calls and one goal queued behind it."""
    answering = threading.Event()
    running = node.goal_async(feedback=lambda _m: answering.set(), question="Describe everything in detail.",
                              max_new_tokens=LONG_ANSWER)
    assert answering.wait(20.0), "the long answer did not start"
    queued = [node.ask_async(question="q1", max_new_tokens=2), node.ask_async(question="q2", max_new_tokens=2),
              node.goal_async(question="q3", max_new_tokens=2)]
    time.sleep(0.2)  # they reach the node's queue
    return [running] + queued


def _check_all_failed_within_grace(futures, t0, stopping_words):
    from action_msgs.msg import GoalStatus

    try:
        wait_until(lambda: all(f.done() for f in futures), GRACE_S, "every question's response")
    except AssertionError:
        raise AssertionError(f"responses after {GRACE_S} s: {[f.done() for f in futures]} (running goal, 2 calls, goal)")
    elapsed = time.monotonic() - t0
    results = [f.result() for f in futures]
    for r in results:
        if hasattr(r, "status"):  # an action result
            assert r.status == GoalStatus.STATUS_ABORTED, r.status
            r = r.result
        assert not r.success and any(w in r.error for w in stopping_words), r.error
    return elapsed


def test_no_question_left_hanging_on_deactivate_and_lifecycle_shutdown(node_process, ros_client, tmp_path):
    from lifecycle_msgs.msg import Transition

    node = Node(node_process, ros_client, "livevlm_hang", PARAMS)
    elapsed = {}
    with CameraPublisher(ros_client, TOPIC, "raw", scene_render(), 30.0).wait_for_subscriber():
        for name, tid in (("deactivate", Transition.TRANSITION_DEACTIVATE),
                          ("lifecycle shutdown", Transition.TRANSITION_ACTIVE_SHUTDOWN)):
            wait_until(lambda: node.ask(max_new_tokens=1).success, 20.0, "an answer")
            futures = _questions_in_flight(node)
            t0 = time.monotonic()
            transition = node.transition_async(tid)
            elapsed[name] = _check_all_failed_within_grace(futures, t0, ["shutting down or deactivating"])
            wait_until(transition.done, 30.0, f"the {name}")
            assert transition.result().success
            if tid == Transition.TRANSITION_DEACTIVATE:
                assert node.transition(Transition.TRANSITION_ACTIVATE)
    print(f"\nresponses within {elapsed} s")
    assert node.proc.alive()
    assert node.proc.stop() == 0


def test_no_question_left_hanging_on_sigterm_and_the_memory_is_saved(node_process, ros_client, tmp_path):
    import signal

    from livevlm_ros.engine.persistence import load_checkpoint

    memory_dir = tmp_path / "memory"
    params = {**PARAMS, "memory_dir": str(memory_dir), "checkpoint_period_s": 0.0}  # saved on the signal only
    node = Node(node_process, ros_client, "livevlm_sigterm", params)
    with CameraPublisher(ros_client, TOPIC, "raw", scene_render(), 30.0).wait_for_subscriber():
        wait_until(lambda: node.ask(max_new_tokens=1).success, 20.0, "a first answer")
        assert not (memory_dir / "camera.safetensors").exists()
        futures = _questions_in_flight(node)
        t0 = time.monotonic()
        node.proc.proc.send_signal(signal.SIGTERM)
        sigterm_s = _check_all_failed_within_grace(futures, t0, ["shutting down or deactivating"])
        rc = node.proc.wait_exit(30.0)
    print(f"\nresponses after SIGTERM within {sigterm_s:.3f} s; exit {rc} after {time.monotonic() - t0:.2f} s")
    out = node.proc.output()
    assert rc == 0 and "Traceback" not in out, out[-3000:]
    saved = load_checkpoint(str(memory_dir / "camera.safetensors")).summary
    assert saved["frames_ingested"] > 0 and saved["memory_tokens"] > 0
