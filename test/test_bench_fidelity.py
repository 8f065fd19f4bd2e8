"""The fidelity study's pieces: caption streams, bootstrap statistics, the coverage simulation, and a
tiny-model run of the whole harness (random weights: its answers are noise, only the plumbing is checked)."""

import json

import numpy as np
import pytest

from livevlm_ros.bench.fidelity import arms, coverage, report, runner, stats, streams
from livevlm_ros.engine import load_video_llm


# ------------------------------------------------------------------ streams
def test_streams_are_deterministic_per_seed():
    assert streams.make_stream(5) == streams.make_stream(5)
    assert streams.make_stream(5) != streams.make_stream(6)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("frames", [48, 120])
def test_events_persist_in_paraphrases_one_per_third(seed, frames):
    s = streams.make_stream(seed, frames, event_frames=4)
    assert s.frames == len(s.times) == frames and list(s.times) == sorted(s.times)
    assert [e.position for e in s.events] == list(streams.POSITIONS)
    owner = s.event_of_frame()
    for k, event in enumerate(s.events):
        third = streams.POSITIONS.index(event.position)
        assert third * frames / 3 <= event.first and event.last < (third + 1) * frames / 3
        assert event.last - event.first + 1 == 4
        captions = s.captions[event.first:event.last + 1]
        assert len(set(captions)) == 4  # paraphrases, not one caption repeated
        assert all(event.colour in c.lower() and event.object in c for c in captions)
        assert owner[event.first:event.last + 1] == [k] * 4
    assert s.events[-1].last <= frames - 4  # "late" lies before the newest 3 frames
    assert len({e.object for e in s.events}) == len({e.colour for e in s.events}) == 3
    fillers = [c.lower().replace(".", " ").replace(",", " ").split() for c, o in zip(s.captions, owner) if o < 0]
    assert not any(word in streams.COLOURS for words in fillers for word in words)
    assert not any(e.object in words for e in s.events for words in fillers)


@pytest.mark.parametrize("seed", range(10))
def test_questions_offer_gold_and_the_other_events_colours(seed):
    s = streams.make_stream(seed)
    for q in s.questions:
        assert len(q.options) == streams.OPTIONS_PER_QUESTION == len(set(q.options))
        assert q.options[q.gold].lower() == q.event.colour and q.event.object in q.text
        assert {e.colour.capitalize() for e in s.events} <= set(q.options)


def test_streams_too_short_for_their_events_are_refused():
    with pytest.raises(ValueError, match="frames"):
        streams.make_stream(0, frames=20, event_frames=4)


def test_greedy_answers_are_read_by_their_first_colour_word():
    assert streams.predicted_colour("The van was red.") == "red"
    assert streams.predicted_colour("Blue, not red") == "blue"
    assert streams.predicted_colour("I do not know") is None


# ------------------------------------------------------------------ statistics
def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = stats.bootstrap(rng.integers(0, 2, 30))
    large = stats.bootstrap(rng.integers(0, 2, 3000))
    assert small.low <= small.mean <= small.high and large.low <= large.mean <= large.high
    assert (large.high - large.low) < (small.high - small.low) / 5
    assert abs(large.mean - 0.5) < 0.05 and large.n == 3000
    constant = stats.bootstrap([1.0] * 12)
    assert (constant.mean, constant.low, constant.high) == (1.0, 1.0, 1.0)
    assert np.isnan(stats.bootstrap([]).mean)


def test_cluster_bootstrap_is_wider_when_questions_of_a_stream_agree():
    """Three questions per stream that always share their outcome carry one stream's worth of evidence."""
    rng = np.random.default_rng(1)
    per_stream = rng.integers(0, 2, 40)
    values = np.repeat(per_stream, 3)
    clusters = np.repeat(np.arange(40), 3)
    iid = stats.bootstrap(values)
    clustered = stats.bootstrap(values, clusters)
    assert clustered.mean == iid.mean
    assert (clustered.high - clustered.low) > 1.4 * (iid.high - iid.low)


def test_paired_difference_sees_a_consistent_gain_that_unpaired_noise_hides():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 200)
    better = base + 0.2  # same questions, every one 0.2 better
    diff = stats.paired_difference(better, base, np.arange(200))
    assert diff.mean == pytest.approx(0.2) and diff.excludes_zero and diff.high - diff.low < 1e-9
    same = stats.paired_difference(base, base, np.arange(200))
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero
    with pytest.raises(ValueError):
        stats.paired_difference([1, 2], [1], [0, 1])


# ------------------------------------------------------------------ coverage simulation
def test_coverage_simulation_stream_buckets_cover_the_oldest_quarter():
    memory = coverage.simulate("memory", budget=300, clips=40)
    stream = coverage.simulate("stream", budget=300, clips=40)
    assert sum(memory) == pytest.approx(1.0) and sum(stream) == pytest.approx(1.0)
    assert memory[0] < 0.02 and memory[-1] > 0.8
    assert min(stream) > 0.1


# ------------------------------------------------------------------ the harness on a tiny model
@pytest.fixture(scope="module")
def tiny_study():
    model = load_video_llm("tiny-smolvlm")
    settings = runner.StudySettings(
        seeds=(0, 1), lengths=(runner.StreamLength("5x", 36, 0.2),), event_frames=3,
        memory_arms=arms.select(arms.MEMORY_ARMS, ("full", "sliding", "vsb", "vsb/frames")),
        retrieval_arms=arms.RETRIEVAL_ARMS)
    progress = []
    result = runner.run_study(model, settings, on_progress=progress.append)
    return settings, result, progress


def test_harness_asks_every_question_of_every_arm(tiny_study):
    settings, result, progress = tiny_study
    assert len(progress) == runner.total_ingests(settings) == 2 * 4
    seen = {(q["seed"], q["arm"], q["question"]) for q in result["questions"]}
    expected_arms = ["full", "full+par", "full+par-max", "sliding", "sliding+par", "vsb", "vsb+par", "vsb+par-max",
                     "vsb+par-attn", "vsb+par-contrast", "vsb+par-default", "vsb+par-max-floor", "vsb/frames"]  # each memory arm with its own retrieval arms
    assert seen == {(s, a, k) for s in (0, 1) for a in expected_arms for k in range(3)}
    for q in result["questions"]:
        assert q["correct"] in (0, 1) and np.isfinite(q["margin"])
        greedy = q["memory"] in ("full", "vsb") or q["retrieval"] != "none"
        assert (q["greedy_correct"] in (0, 1)) == greedy and ("answer" in q) == greedy
        if q["retrieval"] == "none":
            assert not greedy or q["recall"] == pytest.approx(1.0) or np.isnan(q["recall"])  # all of memory read
        else:
            assert len(q["page_hit"]) == len(q["recall_per_layer"]) == 2  # one per layer (tiny-smolvlm: 2)
            assert len(q["page_bias"]) == 5
    size = result["sizes"]["5x"]
    assert size["budget_tokens"] == round(0.2 * size["stream_tokens"])


def test_harness_retention_full_keeps_everything_and_sliding_forgets_the_start(tiny_study):
    _, result, _ = tiny_study
    for r in result["retention"]:
        if r["position"] == "ages":
            continue
        if r["memory"] == "full":
            assert r["per_layer"] == pytest.approx([1.0] * len(r["per_layer"]))
        if r["memory"] == "sliding" and r["position"] == "early":
            assert max(r["per_layer"]) == 0.0
        if r["memory"] == "vsb":
            assert max(r["per_layer"]) < 1.0
    ages = [r["ages"] for r in result["retention"] if r["position"] == "ages" and r["memory"] == "sliding"]
    assert all(sum(a[5:]) == 0 for a in ages)  # a sliding window holds no old half


def test_report_tables_targets_and_plots(tiny_study, tmp_path):
    _, result, _ = tiny_study
    summary = report.summarize(result)
    block = summary["lengths"]["5x"]
    full = block["arms"]["full"]
    assert set(full) >= {"accuracy", "early", "middle", "late", "margin", "greedy"}
    assert block["arms"]["vsb"]["vs_full"]["n"] == 6
    assert block["arms"]["vsb+par"]["vs_vsb"]["n"] == 6 and block["arms"]["vsb+par"]["pages"]["pages"] > 0
    assert full["vs_sliding"]["n"] == 6
    targets = report.targets(summary)
    assert {t["arm"] for t in targets} == set(report.TARGET_ARMS)
    at_least_vsb = [t for t in targets if t["arm"] == "vsb+par-default" and t["target"].startswith("at least VSB")]
    assert len(at_least_vsb) == 3  # one per event position
    # the tiny memory is under the default floor: PaR reads it whole, so it answers exactly as VSB does
    assert all(t["met"] and t["sure"] and t["value"]["mean"] == 0 for t in at_least_vsb)
    pages = block["arms"]["vsb+par"]["pages"]
    assert 0 < pages["kept"] < pages["pages"] and 0 <= pages["chance"] <= 1
    assert block["arms"]["vsb+par-default"]["pages"]["kept"] == block["arms"]["vsb+par-default"]["pages"]["pages"]
    text = report.markdown(summary, {"description": "tiny"}, report.ORDER)
    assert "| vsb+par-max |" in text and "PaR page diagnosis" in text and "| chance |" in text
    compact = report.compact_table(summary, "5x").splitlines()
    assert compact[0].startswith("| arm | overall |") and len(compact) == 2 + len(block["arms"])
    assert any(row.startswith("| vsb+par-default | ") and row.endswith(" | 6 |") for row in compact)
    paths = report.plot(summary, str(tmp_path))
    assert all((tmp_path / p.split("/")[-1]).stat().st_size > 0 for p in paths)
    json.dumps(summary)  # serialisable


def test_merge_adds_shards_and_later_records_replace_earlier_ones(tiny_study, tmp_path):
    from livevlm_ros.bench.fidelity import study

    _, result, _ = tiny_study
    meta = {"description": "tiny", "coverage_simulation": {}}
    by_seed = [{"questions": [q for q in result["questions"] if q["seed"] == s],
                "retention": [r for r in result["retention"] if r["seed"] == s], "sizes": result["sizes"]}
               for s in (0, 1)]
    rerun = {"questions": [dict(q, correct=1 - q["correct"]) for q in by_seed[1]["questions"] if q["arm"] == "vsb"],
             "retention": [], "sizes": result["sizes"]}
    for name, part in (("a", by_seed[0]), ("b", by_seed[1]), ("c", rerun)):
        study.write(str(tmp_path / name), "fidelity", part, meta)
    merged = tmp_path / "merged"
    study.merge([str(tmp_path / n) for n in ("a", "b", "c")], str(merged))
    records = json.loads((merged / "fidelity_records.json").read_text())
    assert len(records["questions"]) == len(result["questions"])  # seeds added, the rerun replaced, not appended
    assert len(records["retention"]) == len(result["retention"])
    original = {(q["seed"], q["arm"], q["question"]): q["correct"] for q in result["questions"]}
    for q in records["questions"]:
        flipped = q["seed"] == 1 and q["arm"] == "vsb"
        assert q["correct"] == (1 - original[(q["seed"], q["arm"], q["question"])] if flipped
                                else original[(q["seed"], q["arm"], q["question"])])


def test_score_bias_is_the_z_score_by_fifth_of_memory_oldest_first():
    import torch

    from livevlm_ros.bench.fidelity import probes

    rising = probes.score_bias(torch.arange(10.0))
    assert rising.shape == (5,) and bool((rising[1:] > rising[:-1]).all())
    assert abs(float(rising.sum())) < 1e-9  # z-scores of equal-sized stretches average to 0
    flat = probes.score_bias(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    assert torch.allclose(flat, torch.zeros(5, dtype=torch.float64))
    masked = probes.score_bias(torch.tensor([5.0, -torch.inf, 1.0, 1.0, 1.0]))
    assert torch.isnan(masked[1]) and masked[0] > 0  # an unusable page is left out


def test_every_preset_is_a_cli_choice_and_names_only_known_arms():
    """runner.plan drops retrieval names it does not know, so a misspelt preset would silently ask less."""
    from livevlm_ros.bench.cli import build_parser
    from livevlm_ros.bench.fidelity.study import PRESETS

    choices = next(a.choices for a in build_parser()._actions if a.dest == "fidelity_preset")
    assert tuple(choices) == tuple(PRESETS)
    known = {r.name for r in arms.RETRIEVAL_ARMS}
    for name, settings in PRESETS.items():
        memory_names = {m.name for m in settings.memory_arms}
        named = [m.retrievals for m in settings.memory_arms] + list((settings.long_plan or {}).values())
        assert all(set(n) <= known for n in named if n is not None), name
        assert set(settings.long_plan or {}) <= memory_names, name
        assert all(runner.plan(settings, i) for i in range(len(settings.lengths))), name
    options = runner.plan(PRESETS["options"], 0)
    assert [m.name for m, _ in options] == ["vsb"] + [a.name for a in arms.SCORE_MEMORY]
    assert all([r.name for r in chosen] == ["none"] for _, chosen in options)


def test_study_settings_narrow_a_preset_and_refuse_unknown_names():
    from livevlm_ros.bench.fidelity.study import CORE, QUICK, study_settings

    s = study_settings("full", lengths=["5x"], memories=["random", "sliding", "topk"], retrievals=["none", "par"],
                       seeds=40, shard=(1, 2))
    assert [m.name for m in s.memory_arms] == ["random", "sliding", "topk"]
    assert [r.name for r in s.retrieval_arms] == ["none", "par"]
    assert s.seeds == tuple(range(1, 40, 2)) and s.lengths == CORE.lengths
    assert [[r.name for r in chosen] for _, chosen in runner.plan(s, 0)] == [["none", "par"]] * 3
    core = study_settings("core", memories=["random"], retrievals=["none", "par"])
    assert [[r.name for r in chosen] for _, chosen in runner.plan(core, 0)] == [["none"]]  # core asks it without
    assert study_settings("full", lengths=["10x"], seed_start=40, seeds=4).seeds == (40, 41, 42, 43)
    assert study_settings("core", quick=True) == QUICK
    with pytest.raises(ValueError, match="unknown memory arms"):
        study_settings("core", memories=["vsb/frames"])  # an arm of another preset
    with pytest.raises(ValueError, match="unknown lengths"):
        study_settings("core", lengths=["10x"])
    with pytest.raises(ValueError, match="shard"):
        study_settings("core", shard=(2, 2))
