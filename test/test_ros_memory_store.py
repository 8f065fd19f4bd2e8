"""MemoryStore (no ROS graph, real tiny engine): when snapshots are taken, that the worker never waits on
the disk, latest-wins writes, reset ordering, restore continuing the sampler's timeline, thumbnails."""

import os
import time

import numpy as np
import pytest
import torch
from engine_helpers import random_frames
from ros_helpers import RecordingLog as Log

from livevlm_ros.engine import EngineConfig, LiveVLMStream, load_video_llm
from livevlm_ros.engine.persistence import CheckpointError, load_checkpoint, save_checkpoint
from livevlm_ros.io.frame_sampler import FrameSampler, Verdict
from livevlm_ros.io.thumbnails import ThumbnailRing
from livevlm_ros.ros.memory_store import (
    SLOW_WRITE_ENV,
    MemoryStore,
    checkpoint_path,
    sanitise,
    thumbnails_from_tensors,
    thumbnails_to_tensors,
)
from livevlm_ros.ros.parameters import QosSettings, StreamSettings
from livevlm_ros.ros.worker import StreamRuntime

CONFIG = EngineConfig(clip_frames=4, budget_tokens=96)


@pytest.fixture(scope="module")
def model():
    return load_video_llm("tiny-llava-onevision", device="cpu", dtype="float32")


def runtime(model, name="cam", policy="reset"):
    settings = StreamSettings(name=name, topic="image", transport="raw", qos=QosSettings())
    return StreamRuntime(settings, LiveVLMStream(model, CONFIG), FrameSampler(4.0, policy, require_stamps=True))


def feed(store, rt, stamps, frames=None):
    """Ingest one frame per stamp as the worker does; returns the stamps after which a snapshot was taken."""
    frames = frames or random_frames(len(stamps), seed=3)
    taken = []
    for frame, t in zip(frames, stamps):
        rt.engine.ingest(frame, t)
        if store.after_ingest(rt, t):
            taken.append(t)
    return taken


def test_periodic_snapshots_follow_stream_time_at_clip_boundaries(model, tmp_path):
    store = MemoryStore(str(tmp_path), 2.0, Log())
    rt = runtime(model)
    stamps = [10.0 + 0.25 * i for i in range(40)]  # 10 s of stream time, a clip (4 frames) per second
    taken = feed(store, rt, stamps)
    # due 2 s after the first frame (12.0), then 2 s after each snapshot; taken at the next clip's end
    assert taken == [12.75, 14.75, 16.75, 18.75]
    assert store.close()
    assert 1 <= store.writes["cam"] <= len(taken)  # fewer when the writer was behind (latest wins)
    on_disk = load_checkpoint(store.path("cam")).summary
    assert on_disk["newest_time"] == 18.75 and on_disk["frames_ingested"] == 36


def test_a_new_timeline_restarts_the_schedule(model, tmp_path):
    store = MemoryStore(str(tmp_path), 1.0, Log())
    rt = runtime(model)
    assert feed(store, rt, [50.0 + 0.25 * i for i in range(8)]) == [51.75]
    rt.engine.reset()  # what the worker does on a jump back (timestamp_jump_policy reset)
    assert feed(store, rt, [5.0 + 0.25 * i for i in range(8)]) == [6.75]
    store.close()


def test_the_worker_never_waits_for_the_disk_and_the_newest_snapshot_wins(model, tmp_path, monkeypatch):
    monkeypatch.setenv(SLOW_WRITE_ENV, "1:1.5")  # TEST HOOK: every write held 1.5 s before its rename
    log = Log()
    store = MemoryStore(str(tmp_path), 1.0, log)
    rt = runtime(model)
    started = time.perf_counter()
    taken = feed(store, rt, [0.25 * i for i in range(1, 25)])  # 3 snapshots queued behind the held write
    assert len(taken) >= 3 and time.perf_counter() - started < 1.5  # not one held write waited for
    assert not os.path.exists(store.path("cam"))
    assert store.close(timeout=30.0)
    assert store.writes["cam"] == 2  # the first, then only the newest of those queued behind it
    assert load_checkpoint(store.path("cam")).summary["newest_time"] == taken[-1]
    assert "TEST HOOK: holding checkpoint write before its rename" in log.text("warning")


def test_reset_deletes_the_file_after_a_write_in_progress(model, tmp_path, monkeypatch):
    monkeypatch.setenv(SLOW_WRITE_ENV, "1:0.5")
    store = MemoryStore(str(tmp_path), 0.0, Log())
    rt = runtime(model)
    feed(store, rt, [0.25 * i for i in range(1, 9)])
    store.snapshot(rt)  # being written (held) when the reset comes
    time.sleep(0.1)
    assert store.clear("cam")
    assert not os.path.exists(store.path("cam")) and not os.listdir(tmp_path)
    assert store.save_all([rt]) and not os.path.exists(store.path("cam"))  # nothing ingested since: no write
    store.close()


def test_save_all_writes_the_streams_that_changed_and_skips_empty_ones(model, tmp_path):
    store = MemoryStore(str(tmp_path), 0.0, Log())
    changed, empty = runtime(model, "a"), runtime(model, "b")
    feed(store, changed, [1.0, 1.25, 1.5])  # 3 frames pending in the engine: saved flushed
    store.after_ingest(empty, 1.0)  # "changed", but its engine holds no frame
    assert store.save_all([changed, empty])
    assert load_checkpoint(store.path("a")).summary["frames_ingested"] == 3
    assert not os.path.exists(store.path("b"))
    mtime = os.stat(store.path("a")).st_mtime_ns
    assert store.save_all([changed, empty]) and os.stat(store.path("a")).st_mtime_ns == mtime  # unchanged: not rewritten
    store.close()


@pytest.mark.parametrize("policy,verdict", [("reset", Verdict.KEEP), ("reject", Verdict.REJECT)])
def test_restore_continues_the_timeline_and_an_earlier_stamp_follows_the_jump_policy(model, tmp_path, policy, verdict):
    store = MemoryStore(str(tmp_path), 0.0, Log())
    source = runtime(model)
    feed(store, source, [20.0 + 0.25 * i for i in range(10)])
    assert store.save_all([source])
    log = Log()
    rt = runtime(model, policy=policy)
    report = MemoryStore(str(tmp_path), 0.0, log).restore(rt)
    assert report.restored and report.frames == 10 and report.last_stamp_s == 22.25
    assert rt.newest_ingested_stamp == 22.25 and rt.stats.frames_ingested == source.engine.stats().frames_ingested
    assert f"memory restored 10 frames, {report.tokens} memory tokens (20.000 s .. 22.250 s" in log.text("info")
    assert rt.sampler.evaluate(22.30).verdict is Verdict.SKIP  # within the next sampling slot
    assert rt.sampler.evaluate(22.50).verdict is Verdict.KEEP
    earlier = rt.sampler.evaluate(21.0)
    assert earlier.verdict is verdict and (earlier.starts_new_epoch == (policy == "reset"))


def test_stray_temporaries_of_a_killed_write_are_removed_on_restore(model, tmp_path):
    stray = tmp_path / ".tmp-cam.safetensors.abc123"
    stray.write_bytes(b"partial")
    log = Log()
    report = MemoryStore(str(tmp_path), 0.0, log).restore(runtime(model))
    assert report.outcome == "none" and not stray.exists() and "unfinished checkpoint write" in log.text("info")


def test_an_unwritable_memory_dir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        MemoryStore(str(blocker / "memory"), 1.0, Log())


def test_file_names_are_sanitised():
    assert sanitise("front_cam") == "front_cam" and sanitise("../x y") == "___x_y"
    assert checkpoint_path("/m", "a/b") == "/m/a_b.safetensors"


def test_thumbnails_round_trip_through_a_checkpoint_file(tmp_path):
    ring = ThumbnailRing(max_bytes=1 << 20)
    rng = np.random.default_rng(0)
    for frame in (3, 7, 11):
        ring.add(frame, 0.5 * frame, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    from livevlm_ros.engine.persistence import MemoryCheckpoint

    path = str(tmp_path / "t.safetensors")
    save_checkpoint(MemoryCheckpoint(thumbnails_to_tensors(ring), {"format_version": 1}), path)
    restored = ThumbnailRing(max_bytes=1 << 20)
    assert thumbnails_from_tensors(load_checkpoint(path).tensors, restored) == 3
    assert restored.items() == ring.items()
    tensors = thumbnails_to_tensors(ring)
    tensors["extra.thumbnails.length"] = tensors["extra.thumbnails.length"] + 1
    with pytest.raises(CheckpointError, match="inconsistent"):
        thumbnails_from_tensors(tensors, ThumbnailRing(max_bytes=1 << 20))
    assert thumbnails_to_tensors(ThumbnailRing(max_bytes=1 << 20)) == {}
    assert torch.equal(tensors["extra.thumbnails.frame"], torch.tensor([3, 7, 11]))
