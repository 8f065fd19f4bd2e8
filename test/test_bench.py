"""livevlm_bench: the quick run's output contract (reduced frame list), and the text-proxy generator."""

import json
import os

import pytest

from livevlm_ros.bench import cli, text_proxy
from livevlm_ros.bench.policies import POLICY_NAMES, without_eos
from livevlm_ros.engine import load_video_llm

REQUIRED_KEYS = {"policy", "frames", "ttft_s", "answer_s", "ingest_ms_per_frame", "device_kv_bytes",
                 "host_kv_bytes", "peak_rss_bytes", "oom"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``livevlm_bench --quick`` on 64 and 128 frames; full KV capped at 0.6 MB (tiny-LLaVA needs 0.53 MB at 64)."""
    out = tmp_path_factory.mktemp("bench")
    assert cli.main(["--quick", "--out", str(out), "--frames", "64", "128", "--full-kv-cap-bytes", "600000",
                     "--no-progress", "--no-fidelity"]) == 0
    with open(out / "results.json") as handle:
        return out, json.load(handle)


def test_quick_run_writes_rows_for_every_policy_model_and_length(quick_run):
    _, rows = quick_run
    assert isinstance(rows, list) and rows
    for row in rows:
        assert REQUIRED_KEYS <= set(row), REQUIRED_KEYS - set(row)
    seen = {(r["model"], r["policy"], r["frames"]) for r in rows}
    assert seen == {(m, p, n) for m in ("tiny-llava-onevision", "tiny-smolvlm") for p in POLICY_NAMES
                    for n in (64, 128)}
    measured = [r for r in rows if not r["oom"]]
    assert all(r["ttft_s"] > 0 and r["answer_s"] >= r["ttft_s"] and r["ingest_ms_per_frame"] > 0 for r in measured)
    assert all(r["answer_tokens"] == 16 for r in measured)  # EOS ignored: fixed-length answers


def test_full_kv_is_reported_out_of_memory_past_the_cap(quick_run):
    _, rows = quick_run
    full = {r["frames"]: r for r in rows if r["model"] == "tiny-llava-onevision" and r["policy"] == "full"}
    assert not full[64]["oom"] and full[64]["device_kv_bytes"] <= 600000
    assert full[128]["oom"] and full[128]["ttft_s"] is None


def test_bounded_policies_keep_device_memory_flat_and_rekv_offloads(quick_run):
    _, rows = quick_run
    by = {(r["model"], r["policy"], r["frames"]): r for r in rows}
    for model in ("tiny-llava-onevision", "tiny-smolvlm"):
        for policy in ("sliding", "rekv", "topk", "vsb", "vsb+par"):
            assert by[model, policy, 64]["device_kv_bytes"] == by[model, policy, 128]["device_kv_bytes"]
        assert by[model, "rekv", 128]["host_kv_bytes"] > by[model, "rekv", 64]["host_kv_bytes"] > 0


def test_quick_run_writes_markdown_meta_and_plots(quick_run):
    out, _ = quick_run
    for name in ("results.md", "meta.json", "latency_vs_frames.png", "memory_vs_frames.png",
                 "ingest_vs_frames.png"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "results.md").read_text()
    assert "OOM (cap)" in text and "Targets (VSB+PaR)" in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["frames_source"] and set(meta["outcomes"]) == {"tiny-llava-onevision", "tiny-smolvlm"}


def test_replot_rebuilds_outputs_from_json(quick_run):
    out, _ = quick_run
    os.remove(out / "memory_vs_frames.png")
    assert cli.main(["--replot", str(out)]) == 0
    assert (out / "memory_vs_frames.png").exists()


def test_without_eos_leaves_the_model_untouched():
    model = load_video_llm("tiny-llava-onevision")
    clone = without_eos(model)
    assert clone.eos_token_ids == frozenset() and model.eos_token_ids
    assert clone.layers is model.layers


def test_text_proxy_stream_is_deterministic_for_a_seed():
    a, b = text_proxy.make_stream(7), text_proxy.make_stream(7)
    assert a == b
    assert text_proxy.make_stream(8) != a


@pytest.mark.parametrize("seed", range(12))
def test_text_proxy_answers_are_in_the_captions(seed):
    stream = text_proxy.make_stream(seed, frames=48, needles=3)
    assert len(stream.captions) == len(stream.times) == 48
    assert list(stream.times) == sorted(stream.times)
    assert sorted(q.position for q in stream.questions) == sorted(text_proxy.POSITIONS)
    assert len({q.object for q in stream.questions}) == 3
    for question in stream.questions:
        caption = stream.captions[question.frame]
        assert question.object in caption and question.colour in caption and question.object in question.text
        assert question.position == text_proxy.POSITIONS[3 * question.frame // 48]
        others = [c for i, c in enumerate(stream.captions) if i != question.frame]
        assert not any(question.colour in c.replace(".", " ").split() for c in others)


def test_text_proxy_single_needles_rotate_through_early_middle_late():
    positions = [text_proxy.make_stream(seed).questions[0].position for seed in range(6)]
    assert positions == list(text_proxy.POSITIONS) * 2


def test_text_proxy_scoring_takes_the_first_colour_word():
    assert text_proxy.is_correct("Red.", "red")
    assert text_proxy.is_correct("The van was red, not blue", "red")
    assert not text_proxy.is_correct("The van was blue, not red", "red")
    assert not text_proxy.is_correct("I do not know", "red")


def test_attention_memory_measures_both_paths_and_the_engine_needs_less():
    """The clip-prefill memory probe at small shapes: the dense-mask path materialises an n x T mask and
    fp32 copies; the engine's path does not."""
    import torch

    from livevlm_ros.bench.attention_memory import LayerShapes, markdown, measure

    shapes = LayerShapes(heads=8, kv_heads=2, head_dim=32, memory_tokens=6000, clip_tokens=1024,
                         observation_tokens=128)
    row = measure(shapes, dtype=torch.float32)
    peak = row["peak_extra_mib"]
    assert set(peak) == {"dense-mask", "engine"}
    assert 0 <= peak["engine"] < peak["dense-mask"]
    assert "dense-mask path" in markdown([row])


def test_scoring_share_of_a_run_weighs_each_segment_by_its_ingest_time():
    from livevlm_ros.bench.report import scoring_share_of_run

    def row(frames, ms, share):
        return {"model": "m", "policy": "vsb+par", "oom": False, "frames": frames, "ingest_ms_per_frame": ms,
                "vsb_scoring_share": share}

    # segments: 64 frames x 10 ms at 50 % (a warm-up spike), then 192 frames x 10 ms at 2 %
    rows = [row(64, 10.0, 0.5), row(256, 10.0, 0.02), {**row(512, 10.0, 0.9), "oom": True}]
    assert scoring_share_of_run(rows, "m") == pytest.approx((64 * 0.5 + 192 * 0.02) / 256)
    assert scoring_share_of_run(rows, "other") is None


def test_compare_takes_each_sides_best_run_and_reports_speedups_and_spread(tmp_path, capsys):
    def run_dir(name, ttft):
        rows = [{"model": "m", "policy": "vsb+par", "frames": 256, "oom": False, "ttft_s": ttft,
                 "answer_s": 10 * ttft, "ingest_ms_per_frame": 2.0},
                {"model": "m", "policy": "full", "frames": 256, "oom": True, "ttft_s": None, "answer_s": None,
                 "ingest_ms_per_frame": None}]
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(rows))
        return str(tmp_path / name)

    before = ",".join([run_dir("b1", 0.004), run_dir("b2", 0.006)])
    after = run_dir("a1", 0.002)
    assert cli.main(["--compare", before, after]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| vsb+par | 256 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["4.00", "2.00", "2.00x"]  # TTFT ms: best before, after, speed-up
    assert cells[-2:] == ["1.50", "1.00"]  # spread: 6 ms / 4 ms before, one run after
    assert "| full |" not in table  # out-of-memory rows are not compared
    assert cli.main(["--compare", str(tmp_path / "nowhere"), after]) == 1

def test_watch_cost_counts_evaluations_and_writes_its_tables(tmp_path):
    """``--watch-cost`` on one tiny model: the scheduling it times is the node's (one evaluation per watch per
    clip, one for watches sharing a condition); sizes and times are positive; the markdown has every table."""
    assert cli.main(["--watch-cost", "--models", "tiny-smolvlm", "--watch-frames", "8", "--clip-frames", "4",
                     "--watch-memory-frames", "4", "8", "--repeats", "1", "--watch-sustained-s", "0.5", "--out",
                     str(tmp_path), "--threads", "1"]) == 0
    with open(tmp_path / "watch_cost.json") as handle:
        (row,) = json.load(handle)["rows"]
    ingest = row["ingest"]
    assert [ingest[k]["evaluations"] for k in ("0", "1", "4", "4 shared")] == [0, 2, 8, 2]  # 2 clips of 4
    assert all(v["fps"] > 0 for v in ingest.values()) and ingest["0 + view at 1 Hz"]["renders"] >= 1
    assert [m["frames"] for m in row["by_memory"]] == [4, 8]
    assert all(m["evaluate_ms"] > 0 and m["ttft_evidence_ms"] > 0 for m in row["by_memory"])
    ring = row["ring"]
    assert 0 < ring["bytes"] <= ring["bound"] and ring["thumbnails"] <= ring["frames_in_memory"]
    assert row["view_size"] == [260, 960, 3] and 0 < row["render_cpu_share"] < 1
    table = (tmp_path / "watch_cost.md").read_text()
    assert table.count("| tiny-smolvlm |") == 1 + 2 + 1
