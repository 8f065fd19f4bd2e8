"""livevlm_offline --save-memory / --load-memory (real tiny models): ingest once, question many times.

A recording ingested and questioned at its end gives exactly the answers that the saved memory, loaded
in another run, gives (token for token, same spans and memory sizes); a bad or mismatched memory file is
a clear error with exit status 1; SOURCE and --load-memory exclude each other.
"""

import json

import numpy as np
import pytest
from PIL import Image

from livevlm_ros.tools import offline

QUESTIONS = ["999:What happened first?", "999:What colour was the last frame?"]
#: What must be equal between the run that ingested the frames and the run that loaded its memory.
SAME = ("question", "answer", "error", "frames_seen", "span_start", "span_end", "memory_tokens", "context_tokens",
        "pages_retrieved", "pages_total", "new_tokens", "stop_reason")


def scene_folder(tmp_path, count=14):
    from livevlm_ros.io.synthetic_scene import SyntheticScene

    folder = tmp_path / "frames"
    folder.mkdir()
    scene = SyntheticScene(width=64, height=48, fps=2.0, duration_s=count / 2.0)
    for k in range(count):
        Image.fromarray(scene.render(k / 2.0)).save(folder / f"f{k:03d}.png")
    return str(folder)


def run_json(argv, capsys):
    status = offline.main([*argv, "--json", "--no-progress"])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out.strip() else None), err


def asks():
    return [arg for q in QUESTIONS for arg in ("--ask", q)]


@pytest.mark.parametrize("model,policy", [("tiny-llava-onevision", "vsb"), ("tiny-smolvlm", "rekv")])
def test_saved_memory_answers_exactly_as_the_run_that_ingested_it(tmp_path, capsys, model, policy):
    memory = str(tmp_path / "memory.safetensors")
    options = ["--model", model, "--memory", policy, "--clip-frames", "4", "--budget", "96", "--max-new-tokens", "6",
               "--fps", "0", "--folder-fps", "2"]
    status, ingested, _ = run_json([scene_folder(tmp_path), *options, *asks(), "--save-memory", memory], capsys)
    assert status == 0 and ingested["source"]["frames_ingested"] == 14
    status, loaded, _ = run_json([*options, *asks(), "--load-memory", memory], capsys)
    assert status == 0, loaded
    assert [{k: a[k] for k in SAME} for a in loaded["answers"]] == [{k: a[k] for k in SAME} for a in ingested["answers"]]
    assert loaded["memory"] == ingested["memory"]
    assert [a["asked_at"] for a in loaded["answers"]] == [6.5, 6.5] and all(a["after_end"] for a in loaded["answers"])
    assert loaded["source"]["kind"] == "RestoredSource" and loaded["source"]["time_offset_s"] == 0.0
    # loaded and saved again: the same memory, questioned a third time
    again = str(tmp_path / "again.safetensors")
    status, third, _ = run_json([*options, *asks(), "--load-memory", memory, "--save-memory", again], capsys)
    assert status == 0 and [a["answer"] for a in third["answers"]] == [a["answer"] for a in ingested["answers"]]


def test_bad_or_mismatched_memory_files_exit_1_with_a_clear_error(tmp_path, capsys):
    memory = tmp_path / "memory.safetensors"
    options = ["--clip-frames", "4", "--fps", "0"]
    assert run_json([scene_folder(tmp_path, 6), *options, "--save-memory", str(memory)], capsys)[0] == 0
    status, out, err = run_json([*options, "--budget", "50", "--load-memory", str(memory), *asks()], capsys)
    assert status == 1 and out is None and "another engine configuration" in err and str(memory) in err
    status, _, err = run_json([*options, "--model", "tiny-smolvlm", "--load-memory", str(memory)], capsys)
    assert status == 1 and "another model" in err
    data = memory.read_bytes()
    memory.write_bytes(data[: len(data) // 3])
    status, _, err = run_json([*options, "--load-memory", str(memory)], capsys)
    assert status == 1 and "unreadable (truncated or corrupt)" in err
    status, _, err = run_json([*options, "--load-memory", str(tmp_path / "missing.safetensors")], capsys)
    assert status == 1 and "no checkpoint at" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    status, _, err = run_json([scene_folder(other, 4), *options, "--save-memory", str(blocker / "m.safetensors")],
                              capsys)
    assert status == 1 and "cannot write memory to" in err


@pytest.mark.parametrize("argv,message", [
    (["--ask", "1:q"], "SOURCE (or --load-memory PATH)"),
    (["video.mp4", "--load-memory", "m.safetensors"], "either SOURCE or --load-memory"),
])
def test_source_and_load_memory_exclude_each_other(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        offline.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_saved_file_is_the_engine_checkpoint_with_the_source_recorded(tmp_path, capsys):
    from livevlm_ros.engine.persistence import FORMAT_VERSION, load_checkpoint

    memory = tmp_path / "memory.safetensors"
    folder = scene_folder(tmp_path, 5)
    assert run_json([folder, "--fps", "0", "--save-memory", str(memory)], capsys)[0] == 0
    checkpoint = load_checkpoint(str(memory))
    assert checkpoint.meta["format_version"] == FORMAT_VERSION and checkpoint.meta["model"] == "tiny-llava-onevision"
    assert checkpoint.meta["offline"]["kind"] == "FolderSource" and folder in checkpoint.meta["offline"]["source"]
    assert checkpoint.summary["frames_ingested"] == 5 and np.isclose(checkpoint.summary["newest_time"], 4.0)
