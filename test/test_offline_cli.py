"""livevlm_offline: argument parsing, ask scheduling (fake engine), JSON contract (real tiny model)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from livevlm_ros.engine import EmptyMemoryError, EngineConfig, InvalidFrameError, ModelLoadError
from livevlm_ros.engine.results import AskResult, MemoryStats
from livevlm_ros.io.sources import SourceError
from livevlm_ros.io.synthetic_scene import SyntheticScene
from livevlm_ros.tools import offline

try:
    from livevlm_ros.engine import load_video_llm  # noqa: F401

    ENGINE_MISSING = None
except ImportError as err:  # the engine is written in parallel; these tests need the real one
    ENGINE_MISSING = f"livevlm_ros.engine.load_video_llm does not exist yet ({err})"
needs_engine = pytest.mark.skipif(ENGINE_MISSING is not None, reason=ENGINE_MISSING or "")

from shared_data import CAR_BAG, SHARED_DATA, VIDEO  # noqa: E402

needs_data = pytest.mark.skipif(
    not VIDEO.is_file(), reason=f"shared data not found at {SHARED_DATA} (set LIVEVLM_SHARED_DATA)"
)
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------


def parse(*argv):
    return offline.build_parser().parse_args(["source.mp4", *argv])


def test_defaults():
    args = parse()
    assert (args.model, args.device, args.dtype, args.fps) == ("tiny-llava-onevision", "cpu", "float32", 1.0)
    assert args.asks == [] and not args.json and not args.no_progress and args.topic is None
    assert offline.config_from_args(args) == EngineConfig()


def test_every_engine_config_field_has_an_option():
    parser = offline.build_parser()
    dests = {action.dest: action for action in parser._actions}
    for field in dataclasses.fields(EngineConfig):
        assert field.name in dests, f"no option for EngineConfig.{field.name}"
        assert dests[field.name].help and "default" in dests[field.name].help
    assert "--budget" in dests["budget_tokens"].option_strings
    assert "--clip-frames" in dests["clip_frames"].option_strings


def test_config_options_map_to_fields():
    args = parse(
        "--memory",
        "rekv",
        "--retrieval",
        "par-pe",
        "--budget",
        "500",
        "--clip-frames",
        "4",
        "--saliency-share",
        "0.25",
        "--page-size",
        "8",
        "--retrieval-ratio",
        "0.5",
        "--rekv-frames",
        "3",
        "--observation-tokens",
        "7",
        "--bucket-capacity",
        "2",
        "--short-term-frames",
        "1",
        "--max-new-tokens",
        "9",
        "--system-prompt",
        "Be brief.",
    )
    assert offline.config_from_args(args) == EngineConfig(
        memory="rekv",
        retrieval="par-pe",
        budget_tokens=500,
        clip_frames=4,
        saliency_share=0.25,
        page_size=8,
        retrieval_ratio=0.5,
        rekv_frames=3,
        observation_tokens=7,
        bucket_capacity=2,
        short_term_frames=1,
        max_new_tokens=9,
        system_prompt="Be brief.",
    )


def test_asks_parse():
    args = parse("--ask", "12.5:What is on the road?", "--ask", "0: first ", "--ask", "3:a: b")
    assert args.asks == [offline.Ask(12.5, "What is on the road?"), offline.Ask(0.0, "first"), offline.Ask(3.0, "a: b")]


@pytest.mark.parametrize("bad", ["no colon", ":q", "x:q", "-1:q", "5:", "5:   ", "nan:q", "inf:q"])
def test_bad_ask_is_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as info:
        parse("--ask", bad)
    assert info.value.code == 2
    assert "T:QUESTION" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--memory", "lru"], ["--retrieval", "all"], ["--fps", "-1"], ["--clip-frames", "x"]])
def test_bad_option_values_are_usage_errors(argv):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2


def test_invalid_config_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        offline.main(["whatever.mp4", "--clip-frames", "0"])
    assert info.value.code == 2
    assert "clip_frames must be in [1, 1024]" in capsys.readouterr().err


def test_a_negative_ask_time_gets_the_ask_syntax_message(capsys):
    """D8: argparse took "-3:what?" for an option ("expected one argument")."""
    with pytest.raises(SystemExit) as info:
        offline.main(["source.mp4", "--ask", "-3:what?"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "T >= 0 seconds since the first frame, got '-3:what?'" in err and "expected one argument" not in err
    assert offline.parse_args(["s.mp4", "--ask", "2:ok", "--json"]).asks == [offline.Ask(2.0, "ok")]
    with pytest.raises(SystemExit):  # a missing value is still argparse's error
        offline.parse_args(["s.mp4", "--ask", "--json"])


def test_missing_source_exits_1(capsys):
    assert offline.main(["/nonexistent/video.mp4", "--no-progress"]) == 1
    assert "no such file or directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# Scheduling with a fake engine
# ------------------------------------------------------------------------------------------


class FakeStream:
    """Records calls; ``ask`` raises EmptyMemoryError before any frame or for question "boom"."""

    def __init__(self, model=None, config=None):
        self.config = config
        self.log = []
        self.times = []

    def ingest(self, frame, timestamp):
        if frame.shape[0] == 1:
            raise InvalidFrameError("1-pixel-high frame")
        self.times.append(timestamp)
        self.log.append(("ingest", timestamp))

    def flush(self):
        self.log.append(("flush",))
        return 0

    def ask(self, question, **kwargs):
        self.log.append(("ask", question))
        if not self.times or question == "boom":
            raise EmptyMemoryError("no frame in memory")
        return AskResult(
            answer=f"A:{question}",
            ttft_s=0.01,
            total_s=0.02,
            frames_seen=len(self.times),
            span_start=self.times[0],
            span_end=self.times[-1],
            memory_tokens=10 * len(self.times),
            context_tokens=5.0,
            pages_retrieved=1.0,
            pages_total=2.0,
            new_tokens=3,
            stop_reason="eos",
        )

    def stats(self):
        return MemoryStats(
            tokens=10 * len(self.times),
            budget=100,
            prefix_tokens=2,
            long_term_tokens=0,
            short_term_tokens=0,
            frames_ingested=len(self.times),
            frames_pending=0,
            oldest_time=self.times[0] if self.times else None,
            newest_time=self.times[-1] if self.times else None,
            max_position_id=7,
            max_position_embeddings=512,
            device_kv_bytes=0,
            host_kv_bytes=0,
        )


def scene(seconds=6.0, fps=2.0):
    return SyntheticScene(width=32, height=32, fps=fps, duration_s=seconds)


def test_asks_are_asked_when_the_stream_reaches_their_time():
    stream = FakeStream()
    asks = [
        offline.Ask(2.0, "at two"),
        offline.Ask(0.0, "at zero"),
        offline.Ask(2.2, "between"),
        offline.Ask(99.0, "after end"),
        offline.Ask(2.0, "also at two"),
    ]
    run = offline.run_stream(stream, scene(), asks, progress=False)
    assert stream.log[:3] == [("ingest", 0.0), ("ask", "at zero"), ("ingest", 0.5)]
    index = stream.log.index
    assert index(("ingest", 2.0)) < index(("ask", "at two")) < index(("ask", "also at two")) < index(("ingest", 2.5))
    assert index(("ask", "also at two")) < index(("ask", "between")) < index(("ingest", 2.5))
    assert stream.log[-3:] == [("ingest", 5.5), ("flush",), ("ask", "after end")]
    assert [a["question"] for a in run.answers] == ["at zero", "at two", "also at two", "between", "after end"]
    assert [a["asked_at"] for a in run.answers] == [0.0, 2.0, 2.0, 2.0, 5.5]
    assert run.frames_ingested == 12 and run.time_offset_s == 0.0


def test_engine_error_is_reported_and_run_continues():
    run = offline.run_stream(
        FakeStream(), scene(), [offline.Ask(1.0, "boom"), offline.Ask(2.0, "fine")], progress=False
    )
    boom, fine = run.answers
    assert boom["error"] == "EmptyMemoryError: no frame in memory" and boom["answer"] is None
    assert set(boom) == set(fine)  # same keys either way
    assert fine["error"] is None and fine["answer"] == "A:fine"


class LateScene(SyntheticScene):
    """The synthetic scene stamped from 1000 s on (like a bag's header stamps)."""

    def _lazy_frames(self):
        return ((t + 1000.0, decode) for t, decode in super()._lazy_frames())


def test_duration_limit_and_relative_times():
    stream = FakeStream()
    source = LateScene(width=32, height=32, fps=2.0, duration_s=10.0)
    run = offline.run_stream(stream, source, [], duration_s=2.0, progress=False)
    assert stream.times == [0.0, 0.5, 1.0, 1.5, 2.0] and run.time_offset_s == 1000.0


def test_rejected_frames_are_skipped_with_a_warning():
    class Source(SyntheticScene):
        def _lazy_frames(self):
            for t, decode in super()._lazy_frames():
                yield t, (lambda: np.zeros((1, 4, 3), np.uint8)) if t == 1.0 else decode

    warnings = []
    run = offline.run_stream(
        FakeStream(), Source(width=32, height=32, duration_s=2.0), [], progress=False, warn=warnings.append
    )
    assert run.frames_skipped == 1 and run.frames_ingested == 3
    assert warnings == ["frame at 1.000 s skipped: 1-pixel-high frame"]


class BrokenScene(SyntheticScene):
    """Becomes unreadable after 1 s, like a bag with a corrupt chunk."""

    def _lazy_frames(self):
        for t, decode in super()._lazy_frames():
            if t > 1.0:
                raise SourceError("scene.bag: reading /cam failed: corrupt chunk")
            yield t, decode


def test_unreadable_source_still_answers_from_what_was_read():
    warnings = []
    run = offline.run_stream(
        FakeStream(), BrokenScene(width=32, height=32), [offline.Ask(5.0, "late")], progress=False, warn=warnings.append
    )
    assert run.frames_ingested == 3 and run.answers[0]["answer"] == "A:late"
    assert warnings == ["source stopped early: scene.bag: reading /cam failed: corrupt chunk"]


def fake_model(is_tiny=True):
    return SimpleNamespace(name="fake-model", is_tiny=is_tiny, device="cpu", dtype="torch.float32")


@pytest.fixture
def fake_engine(monkeypatch):
    monkeypatch.setattr(offline, "load_video_llm", lambda model, device, dtype: fake_model())
    monkeypatch.setattr(offline, "LiveVLMStream", FakeStream)


def image_folder(tmp_path, count=4):
    from PIL import Image

    for k in range(count):
        Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(tmp_path / f"f{k}.png")
    return str(tmp_path)


def test_main_json_with_fake_engine(fake_engine, tmp_path, capsys):
    status = offline.main(
        [image_folder(tmp_path), "--json", "--no-progress", "--fps", "0", "--ask", "1:q1", "--ask", "9:q2"]
    )
    out, err = capsys.readouterr()
    assert status == 0
    report = json.loads(out)  # exactly one JSON object, nothing else on stdout
    assert [a["question"] for a in report["answers"]] == ["q1", "q2"]
    assert report["random_weights"] is True and report["model"] == "fake-model" and report["dtype"] == "float32"
    assert report["memory"]["frames_ingested"] == 4 == report["source"]["frames_ingested"]
    assert report["source"]["kind"] == "FolderSource" and report["config"] == dataclasses.asdict(EngineConfig())
    assert "RANDOM WEIGHTS" in err


def test_main_human_output_with_fake_engine(fake_engine, tmp_path, capsys):
    assert offline.main([image_folder(tmp_path), "--no-progress", "--ask", "2:what?"]) == 0
    out = capsys.readouterr().out
    assert out.count("RANDOM WEIGHTS") == 2 and "NOT about the images" in out
    assert "Q: what?" in out and "A: A:what?" in out and "memory: 40 tokens (budget 100), 4 frames ingested" in out


def test_failed_questions_exit_3_with_the_output_complete(fake_engine, tmp_path, capsys):
    """D2: every question failing (or some) is a failed run, not exit 0."""
    folder = image_folder(tmp_path)
    assert offline.main([folder, "--json", "--no-progress", "--ask", "1:boom", "--ask", "2:fine"]) == 3
    out, err = capsys.readouterr()
    report = json.loads(out)  # the JSON is still complete
    assert [a["error"] for a in report["answers"]] == ["EmptyMemoryError: no frame in memory", None]
    assert "1 of 2 question(s) failed: [1.00 s] EmptyMemoryError: no frame in memory" in err
    assert offline.main([folder, "--no-progress", "--ask", "1:boom"]) == offline.EXIT_QUESTIONS_FAILED
    assert "ERROR: EmptyMemoryError" in capsys.readouterr().out
    assert offline.main([folder, "--no-progress", "--ask", "1:fine"]) == 0


def test_an_ask_after_the_end_shows_when_it_was_answered(fake_engine, tmp_path, capsys):
    """D6: the text showed the requested [200.00 s] though the answer came from the last frame."""
    assert offline.main([image_folder(tmp_path), "--no-progress", "--ask", "200:late?", "--ask", "1:early?"]) == 0
    out = capsys.readouterr().out
    assert "[    3.00 s] Q: late?   (asked for 200.00 s, after the end of the source)" in out
    assert "[  200.00 s]" not in out and "[    1.00 s] Q: early?" in out


class BackwardsScene(SyntheticScene):
    """The synthetic scene with one frame stamped 0.3 s before the frame it follows."""

    def _lazy_frames(self):
        for t, decode in super()._lazy_frames():
            yield t, decode
            if t == 1.0:
                yield 0.7, decode


def test_frames_going_back_in_time_are_reported(fake_engine, monkeypatch, tmp_path, capsys):
    """D3: they were dropped without a word (FrameSource.out_of_order was never reported)."""
    monkeypatch.setattr(offline, "open_source", lambda *a, **k: BackwardsScene(width=32, height=32, duration_s=2.0))
    assert offline.main(["scene", "--json", "--no-progress", "--fps", "0", "--ask", "1.5:q"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["source"]["frames_out_of_order"] == 1 and report["source"]["frames_ingested"] == 4
    assert "warning: frame at 0.700 s dropped: its stamp went back 0.300 s before the last kept frame" in err
    assert offline.main(["scene", "--no-progress", "--fps", "0"]) == 0
    assert "1 frame(s) dropped: their time went backwards" in capsys.readouterr().out


def test_only_the_first_frames_going_back_are_warned_about_one_by_one():
    warnings = []
    run = offline.OfflineRun(FakeStream(), [], warn=warnings.append)
    run.relative(10.0)
    for k in range(8):
        run.out_of_order(9.0 - k, "stamp went back")
    assert run.frames_out_of_order == 8 and len(warnings) == offline.OUT_OF_ORDER_WARNINGS
    assert warnings[-1].endswith("(further ones are counted, not shown)")


def test_model_load_failure_exits_1(monkeypatch, tmp_path, capsys):
    def fail(model, device, dtype):
        raise ModelLoadError(f"model directory {model!r} does not exist")

    monkeypatch.setattr(offline, "load_video_llm", fail)
    assert offline.main([image_folder(tmp_path), "--model", "/no/such/model"]) == 1
    assert "could not load model '/no/such/model'" in capsys.readouterr().err


def test_printable_escapes_control_characters():
    assert offline.printable("a\rb\x00c\u00e9") == "a\\rb\\x00c\u00e9"


# ------------------------------------------------------------------------------------------
# The real engine with the tiny (random-weight) model on real recordings
# ------------------------------------------------------------------------------------------

ANSWER_KEYS = {
    "time",
    "question",
    "answer",
    "error",
    "ttft_s",
    "total_s",
    "frames_seen",
    "memory_tokens",
    "pages_retrieved",
}
MEMORY_KEYS = {"tokens", "budget", "frames_ingested", "max_position_id", "max_position_embeddings", "coverage"}


@needs_engine
@needs_data
def test_json_contract_tiny_model_on_real_video(capsys):
    status = offline.main(
        [
            str(VIDEO),
            "--fps",
            "2",
            "--duration",
            "4",
            "--json",
            "--no-progress",
            "--max-new-tokens",
            "4",
            "--clip-frames",
            "4",
            "--ask",
            "3:What is on the road?",
            "--ask",
            "0:Anything?",
            "--ask",
            "60:After the end?",
            "--ask",
            "2:" + "x" * 50,
            "--max-question-chars",
            "40",
        ]
    )
    out, err = capsys.readouterr()
    assert status == offline.EXIT_QUESTIONS_FAILED, err  # the too-long question failed
    report = json.loads(out)
    answers = report["answers"]
    assert [a["time"] for a in answers] == [0.0, 2.0, 3.0, 60.0]
    assert [a["after_end"] for a in answers] == [False, False, False, True]
    for entry in answers:
        assert set(entry) >= ANSWER_KEYS
    first, too_long, mid, late = answers
    assert too_long["error"].startswith("InvalidQuestionError") and too_long["answer"] is None
    for entry in (first, mid, late):
        assert entry["error"] is None and isinstance(entry["answer"], str) and entry["ttft_s"] > 0
    # frames at 0, .56, 1.04, 1.52, 2, 2.56 | 3.04, 3.52, 4
    assert [first["frames_seen"], mid["frames_seen"], late["frames_seen"]] == [1, 6, 9]
    assert set(report["memory"]) >= MEMORY_KEYS and report["memory"]["frames_ingested"] == 9
    assert report["memory"]["max_position_id"] < report["memory"]["max_position_embeddings"]
    coverage = report["memory"]["coverage"]
    assert len(coverage) == 10 and abs(sum(coverage) - 1.0) < 1e-6
    assert report["model"] == "tiny-llava-onevision" and report["random_weights"] is True
    assert report["source"]["time_offset_s"] == 0.0 and report["source"]["kind"] == "VideoSource"
    assert "RANDOM WEIGHTS" in err


@needs_engine
@needs_data
def test_cli_subprocess_on_real_bag():
    """The installed-style entry (python -m) on the raw bag topic: stdout is exactly one JSON object."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "livevlm_ros.tools.offline",
            str(CAR_BAG),
            "--topic",
            "/camera/image_raw",
            "--fps",
            "0",
            "--duration",
            "6",
            "--json",
            "--max-new-tokens",
            "3",
            "--memory",
            "sliding",
            "--budget",
            "64",
            "--ask",
            "5:Is there a car?",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (answer,) = report["answers"]
    assert answer["error"] is None and answer["frames_seen"] == 7  # raw topic: 1.25 Hz, 0 .. 4.8 s
    assert report["source"]["time_offset_s"] == 1_700_000_000.0 and report["source"]["topic"] == "/camera/image_raw"
    assert report["memory"]["frames_ingested"] == 8 and report["config"]["memory"] == "sliding"


@needs_engine
@needs_data
def test_watch_evidence_and_memory_plots_on_real_video(tmp_path, capsys):
    """--watch edges, --evidence-dir thumbnails and --memory-plot(-dir) PNGs with the tiny model (p_yes is noise:
    threshold 0 makes the watch fire at its first evaluation, whatever the model says)."""
    from PIL import Image

    plot, plots, evidence = tmp_path / "memory.png", tmp_path / "plots", tmp_path / "evidence"
    status = offline.main([str(VIDEO), "--fps", "2", "--duration", "6", "--json", "--no-progress", "--max-new-tokens",
                           "2", "--clip-frames", "4", "--evidence", "3", "--ask", "4:What is on the road?",
                           "--watch", "1:Is a car in view?", "--watch-threshold", "0", "--evidence-dir",
                           str(evidence), "--memory-plot", str(plot), "--memory-plot-dir", str(plots)])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = json.loads(out)
    (answer,) = report["answers"]
    assert 1 <= len(answer["evidence"]) <= 3
    for item in answer["evidence"]:
        assert answer["span_start"] <= item["time"] <= answer["span_end"] and item["mass"] > 0
        assert Image.open(item["thumbnail"]).format == "JPEG"
    assert Image.open(answer["memory_plot"]).size == (960, 260)
    assert report["memory_plot"] == str(plot) and Image.open(plot).mode == "RGB"
    (watch,) = report["watches"]
    assert watch["condition"] == "Is a car in view?" and watch["threshold"] == 0.0 and watch["error"] is None
    times = [e["time"] for e in watch["evaluations"]]
    assert times and times[0] >= 1.0 and times == sorted(times)  # from T0 on, once per clip
    assert watch["fired"] and [e["state"] for e in watch["edges"]] == [True]  # threshold 0: true at once
    assert watch["edges"][0]["time"] == times[0] and len(watch["edges"][0]["evidence"]) == 3
    assert all(e["state"] for e in watch["evaluations"])


def test_bad_watch_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        offline.main(["source.mp4", "--watch", "nocolon"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        offline.main(["source.mp4", "--watch", "1:ok?", "--watch-threshold", "2"])
    assert exc.value.code == 2 and "threshold" in capsys.readouterr().err
