"""Checkpoints through the entry points a user runs: the offline runner and the node.

* Real-layout checkpoints (SmolVLM2 and SmolVLM as on the hub, the 2024 llava-hf layout) answer
  through ``livevlm_offline``, by directory and by hub id from an offline hub cache, and the node
  configures and answers with SmolVLM2 by hub id.
* D4: a mistyped model name fails at once, with the hub reachable in principle (``HF_HUB_OFFLINE``
  unset): the hub endpoint is a closed port on this machine, so nothing leaves it. Before the fix,
  transformers retried five times (about 27 s of back-off, "Retrying in 8s [Retry 5/5]").
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from checkpoint_layouts import SMOLVLM2_REPO, install_in_hub_cache
from ros_helpers import CameraPublisher, requires_ros, wait_until

from livevlm_ros.tools import offline

REPO = Path(__file__).resolve().parents[1]
#: seconds a failing load may take beyond a start that fails before loading a model (measured in the
#: same test); the hub's retries took 23 s of back-off alone
FAIL_FAST_MARGIN_S = 10.0
LOG_TIME = r"\[(\d+\.\d+)\] \[[^\]]+\]: "


def image_folder(directory: Path, count: int = 4) -> str:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(directory / f"f{k}.png")
    return str(directory)


def reachable_hub_env(tmp_path: Path) -> dict:
    """Offline mode off, an empty hub cache, and a hub endpoint that refuses at once (a closed local port)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf_home"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def offline_cache_env(cache: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_offline(args, env, timeout=120.0):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "livevlm_ros.tools.offline", *args], capture_output=True,
                            text=True, timeout=timeout, cwd=REPO, env=env)
    return result, time.monotonic() - started


# ----------------------------------------------------------------------------------- D4
@pytest.fixture(scope="module")
def runner_start_s(tmp_path_factory):
    """Seconds ``livevlm_offline`` takes to start and exit 1 without touching a model (a missing source):
    the baseline of the fail-fast checks, measured under the same machine load."""
    tmp = tmp_path_factory.mktemp("baseline")
    result, elapsed = run_offline([str(tmp / "no_such_video.mp4"), "--no-progress"], reachable_hub_env(tmp))
    assert result.returncode == 1, result.stderr
    return elapsed


@pytest.mark.parametrize("name, message", [
    ("tiny-nope", "not a built-in test model; those are tiny-llava-onevision, tiny-smolvlm"),
    ("llava-onevison-qwen2", "not a directory here and not a Hugging Face hub id"),
    ("someone/no-such-model", "could not download 'someone/no-such-model' from the hub"),
])
def test_offline_runner_fails_at_once_on_a_mistyped_model(name, message, tmp_path, runner_start_s):
    result, elapsed = run_offline([image_folder(tmp_path / "frames"), "--model", name, "--no-progress"],
                                  reachable_hub_env(tmp_path))
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and f"could not load model {name!r}" in result.stderr
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr
    assert elapsed < runner_start_s + FAIL_FAST_MARGIN_S, f"{elapsed:.1f} s vs {runner_start_s:.1f} s:\n{result.stderr}"


def configure_seconds(log: str) -> float:
    """Seconds from the node's "loading model" line to its "configure failed" line (ROS log stamps)."""
    started = re.search(LOG_TIME + "loading model", log)
    failed = re.search(LOG_TIME + "configure failed", log)
    assert started and failed, log
    return float(failed.group(1)) - float(started.group(1))


@requires_ros
def test_node_configure_fails_at_once_on_a_mistyped_model(node_process, tmp_path):
    env = reachable_hub_env(tmp_path)
    cpu = {"device": "cpu", "dtype": "float32"}
    baseline = node_process({**cpu, "model": "/no/such/checkpoint"}, name="livevlm_nopath", env=env)
    mistyped = node_process({**cpu, "model": "tiny-nope"}, name="livevlm_mistyped", env=env)
    assert baseline.wait_exit(90.0) == 1 and mistyped.wait_exit(90.0) == 1, mistyped.output()
    out = mistyped.output()
    assert "could not load model 'tiny-nope'" in out and "not a built-in test model" in out
    assert "Retrying" not in out and "Traceback" not in out
    # the same engine import in both; only the hub's retries (23 s) would separate them
    assert configure_seconds(out) < configure_seconds(baseline.output()) + FAIL_FAST_MARGIN_S, out


# ----------------------------------------------------------------------------------- real layouts, offline runner
@pytest.mark.parametrize("name", ["smolvlm2-video", "smolvlm-v1", "llava-onevision-2024-08"])
def test_offline_runner_answers_with_a_real_layout_directory(name, layout_dir, tmp_path, capsys):
    status = offline.main([image_folder(tmp_path / "frames"), "--model", str(layout_dir(name)), "--json",
                           "--no-progress", "--max-new-tokens", "3", "--clip-frames", "2", "--ask", "1:What is there?"])
    out, err = capsys.readouterr()
    assert status == 0, err
    (answer,) = json.loads(out)["answers"]
    assert answer["error"] is None and answer["new_tokens"] >= 1 and answer["frames_seen"] == 2


def test_offline_runner_answers_with_a_hub_id_from_the_offline_cache(layout_dir, tmp_path):
    install_in_hub_cache(layout_dir("smolvlm2-video"), tmp_path / "hub", SMOLVLM2_REPO)
    result, _ = run_offline([image_folder(tmp_path / "frames"), "--model", SMOLVLM2_REPO, "--json", "--no-progress",
                             "--max-new-tokens", "3", "--ask", "2:What is there?"], offline_cache_env(tmp_path / "hub"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == SMOLVLM2_REPO and report["random_weights"] is False
    (answer,) = report["answers"]
    assert answer["error"] is None and answer["frames_seen"] == 3


def test_offline_runner_reads_no_frame_when_the_weights_are_missing(layout_dir, tmp_path, monkeypatch, capsys):
    import shutil

    directory = Path(shutil.copytree(layout_dir("smolvlm-v1"), tmp_path / "no_weights"))
    (directory / "model.safetensors").unlink()
    frames_read = []
    real_open = offline.open_source

    def spy(*args, **kwargs):
        source = real_open(*args, **kwargs)

        def no_frames():
            frames_read.append(True)
            raise AssertionError("a frame was read before the model loaded")
            yield  # a generator, like the sources' own

        source._lazy_frames = no_frames
        return source

    monkeypatch.setattr(offline, "open_source", spy)
    assert offline.main([image_folder(tmp_path / "frames"), "--model", str(directory), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "has no weights: expected model.safetensors" in err and "found: added_tokens.json" in err
    assert frames_read == []


# ----------------------------------------------------------------------------------- real layout, node
@requires_ros
def test_node_configures_and_answers_with_smolvlm2_by_hub_id(layout_dir, tmp_path, node_process, ros_client):
    from livevlm_interfaces.srv import Ask

    install_in_hub_cache(layout_dir("smolvlm2-video"), tmp_path / "hub", SMOLVLM2_REPO)
    proc = node_process({"model": SMOLVLM2_REPO, "device": "cpu", "dtype": "float32", "sample_fps": 2.0,
                         "clip_frames": 2, "streams.camera.topic": "/hub_layout/image"},
                        name="livevlm_hub_layout", env=offline_cache_env(tmp_path / "hub"))
    client = ros_client.client(Ask, "/livevlm_hub_layout/ask")
    assert client.wait_for_service(timeout_sec=90.0), proc.output()
    rng = np.random.default_rng(3)
    camera = CameraPublisher(ros_client, "/hub_layout/image", "raw",
                             lambda t: rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), 10.0)
    camera.wait_for_subscriber().start()
    try:
        wait_until(lambda: camera.count >= 15, 20.0, "1.5 s of camera frames")
        response = ros_client.call(Ask, "/livevlm_hub_layout/ask", Ask.Request(question="What is there?",
                                                                             max_new_tokens=3), 60.0)
    finally:
        camera.stop()
    assert response.success, response.error
    assert response.frames_seen >= 1
    assert f"model '{SMOLVLM2_REPO}' loaded" in proc.output()
