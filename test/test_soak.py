"""livevlm_soak: the report statistics (slope and its standard error, percentiles, question
accounting, verdict), the load plans (malformed share, the stamp jump, question schedule), the
payloads the node must refuse, the two feature switches, and the installed console script."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import requires_ros

from livevlm_ros.io.image_codec import ImageDecodeError, decode_compressed_image, decode_raw_image
from livevlm_ros.soak.features import CHECKPOINT_PARAMETERS, checkpoint_parameters, watch_support
from livevlm_ros.soak.load import (
    MALFORMED_KINDS,
    CameraPlan,
    FrameBank,
    QuestionPlan,
    due_questions,
    malformed_payload,
)
from livevlm_ros.soak.players import QuestionLog
from livevlm_ros.soak.report import build_report, plot, question_summary, rss_summary, write_report
from livevlm_ros.soak.sampler import rss_mb
from livevlm_ros.soak.stats import (
    QuestionCounts,
    Thresholds,
    count_questions,
    linear_fit,
    percentiles,
    verdict,
)


# ------------------------------------------------------------------------------ statistics
def test_linear_fit_matches_numpy_polyfit_slope_and_standard_error():
    rng = np.random.default_rng(1)
    x = np.linspace(0, 9, 40)
    y = 3.0 + 0.7 * x + rng.normal(0, 0.5, x.size)
    fit = linear_fit(x, y)
    coef, cov = np.polyfit(x, y, 1, cov=True)  # cov scaled by chi2 / (n - 2)
    assert fit.n == 40
    assert fit.slope == pytest.approx(coef[0], rel=1e-12)
    assert fit.intercept == pytest.approx(coef[1], rel=1e-12)
    assert fit.slope_se == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)


def test_linear_fit_exact_line_has_zero_error_and_two_points_have_no_error_estimate():
    fit = linear_fit([0, 1, 2, 3], [5, 7, 9, 11])
    assert (fit.slope, fit.intercept, fit.slope_se) == pytest.approx((2.0, 5.0, 0.0))
    two = linear_fit([0, 2], [1, 2])
    assert two.slope == pytest.approx(0.5) and math.isnan(two.slope_se)
    with pytest.raises(ValueError, match="at least 2"):
        linear_fit([1], [1])
    with pytest.raises(ValueError, match="all equal"):
        linear_fit([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="same length"):
        linear_fit([1, 2], [1, 2, 3])


def test_slope_standard_error_gives_95_percent_coverage_on_pure_noise():
    """|slope| / SE below Student's t(0.975, 8) = 2.306 in 95% of flat noisy series of 10 points."""
    rng = np.random.default_rng(7)
    x = np.arange(10.0)
    trials = 4000
    inside = sum(abs(f.slope) / f.slope_se < 2.306
                 for f in (linear_fit(x, rng.normal(100, 3, 10)) for _ in range(trials)))
    share = inside / trials
    assert abs(share - 0.95) < 4 * math.sqrt(0.95 * 0.05 / trials), share


def test_percentiles_interpolate_and_ignore_missing_values():
    values = list(range(1, 101))
    got = percentiles(values + [None, float("nan")])
    assert got == {"p50": pytest.approx(50.5), "p99": pytest.approx(99.01)}
    assert percentiles([]) == {"p50": None, "p99": None}
    assert percentiles([4.0], (50, 90)) == {"p50": 4.0, "p90": 4.0}


def test_question_accounting_counts_every_outcome_and_lost_ones():
    counts = count_questions(["answered", "errored", None, "answered", None])
    assert counts == QuestionCounts(sent=5, answered=2, errored=1, lost=2)
    assert count_questions([]) == QuestionCounts(0, 0, 0, 0)
    with pytest.raises(ValueError, match="unknown question outcomes"):
        count_questions(["answered", "maybe"])


def test_verdict_fails_on_a_crash_a_lost_question_or_rss_growth_and_reports_the_slope_target():
    ok = QuestionCounts(10, 9, 1, 0)
    flat, leaky = linear_fit([0, 1, 2], [100, 100.2, 100.1]), linear_fit([0, 1, 2], [100, 102, 104])
    th = Thresholds()
    good = verdict(crashes=0, questions=ok, rss_growth_mb=3.0, rss_slope=flat, thresholds=th)
    assert good.passed and good.failures == [] and good.slope_target_met is True
    slow_leak = verdict(crashes=0, questions=ok, rss_growth_mb=4.0, rss_slope=leaky, thresholds=th)
    assert slow_leak.passed and slow_leak.slope_target_met is False  # a target, not a failure
    crash = verdict(crashes=1, questions=ok, rss_growth_mb=3.0, rss_slope=flat, thresholds=th)
    assert not crash.passed and "crashed 1" in crash.failures[0]
    lost = verdict(crashes=0, questions=QuestionCounts(10, 8, 1, 1), rss_growth_mb=3.0, rss_slope=flat,
                   thresholds=th)
    assert not lost.passed and "1 of 10 questions got no response" in lost.failures[0]
    grew = verdict(crashes=0, questions=ok, rss_growth_mb=50.5, rss_slope=flat, thresholds=th)
    assert not grew.passed and "RSS grew 50.5 MB" in grew.failures[0]
    assert verdict(crashes=0, questions=ok, rss_growth_mb=50.5, rss_slope=flat,
                   thresholds=Thresholds(max_rss_growth_mb=60)).passed
    unmeasured = verdict(crashes=0, questions=ok, rss_growth_mb=None, rss_slope=None, thresholds=th)
    assert not unmeasured.passed and unmeasured.slope_target_met is None
    assert len(verdict(crashes=2, questions=QuestionCounts(3, 0, 0, 3), rss_growth_mb=99, rss_slope=None,
                       thresholds=th).failures) == 3
    with pytest.raises(ValueError):
        Thresholds(max_rss_growth_mb=-1)


def test_rss_summary_leaves_out_warm_up_and_measures_slope_in_mb_per_minute():
    t = [10.0 * k for k in range(61)]                      # 10 minutes, a sample every 10 s
    leak = [300.0 + 2.0 * (10.0 * k / 60.0) for k in range(61)]   # a 2 MB/min leak
    leak[:6] = [100, 200, 250, 280, 300, 305]               # warm-up ramp (t < 60 s)
    got = rss_summary(t, leak, warmup_s=60.0, target=1.0)
    assert got["samples_after_warmup"] == 55
    assert got["slope_mb_per_min"] == pytest.approx(2.0, abs=1e-9)
    assert got["slope_se_mb_per_min"] == pytest.approx(0.0, abs=1e-9)
    assert got["growth_after_warmup_mb"] == pytest.approx(2.0 * 9)   # from t = 60 s to 600 s
    assert got["first_mb"] == 100 and got["peak_mb"] == pytest.approx(320.0)
    assert got["second_half_from_s"] == 330.0 and got["second_half_slope_mb_per_min"] == pytest.approx(2.0)
    step = [500.0] * 61
    step[6:12] = [480.0] * 6                                  # a step after warm-up, then flat
    stepped = rss_summary(t, step, warmup_s=60.0, target=1.0)
    assert stepped["slope_mb_per_min"] > 0.5 and stepped["second_half_slope_mb_per_min"] == pytest.approx(0.0)
    gone = rss_summary([0, 10, 20], [100.0, None, None], warmup_s=5.0, target=1.0)
    assert gone["samples_after_warmup"] == 0 and gone["growth_after_warmup_mb"] is None


def _log_with(outcomes, t_sent, rtt):
    from livevlm_ros.soak.load import QuestionSpec

    log = QuestionLog()
    for k, (outcome, t, r) in enumerate(zip(outcomes, t_sent, rtt)):
        rec = log.sent(QuestionSpec(t, "service" if k % 2 else "action", "cam_raw", "q?", 0.0))
        rec.sent_at = t
        if outcome is not None:
            log.done(rec, outcome == "answered", "" if outcome == "answered" else "queue full: try later")
            rec.done_at = t + r
    return log


def test_question_summary_latency_after_warm_up_counts_per_client():
    outcomes = ["answered"] * 6 + ["errored", None]
    log = _log_with(outcomes, [0, 1, 20, 21, 22, 23, 24, 25], [9, 9, 0.1, 0.2, 0.3, 0.4, 1, 1])
    s = question_summary(log.snapshot(), t0=0.0, warmup_s=10.0)
    assert (s["sent"], s["answered"], s["errored"], s["lost"]) == (8, 6, 1, 1)
    assert s["answered_after_warmup"] == 4           # the two slow warm-up answers are left out
    assert s["round_trip_s"]["p50"] == pytest.approx(0.25)
    assert s["per_client"]["action"]["sent"] == 4 and s["per_client"]["service"]["lost"] == 1
    assert s["error_kinds"] == {"queue full": 1}
    assert log.pending() == 1


def test_question_log_keeps_the_first_response():
    log = _log_with(["answered"], [0.0], [0.5])
    rec = log.snapshot()[0]
    log.done(rec, False, "late duplicate")
    assert rec.outcome == "answered" and rec.error == ""


# ------------------------------------------------------------------------------ load plans
def test_camera_plan_malformed_share_kinds_and_one_stamp_jump():
    plan = CameraPlan("cam", "raw", rate_hz=30.0, malformed_fraction=0.05, jump_at_s=200.0, jump_back_s=5.0, seed=3)
    frames = plan.frames(600.0)
    assert len(frames) == 18000 and frames[1].t_s == pytest.approx(1 / 30)
    bad = [f for f in frames if f.malformed]
    sigma = math.sqrt(0.05 * 0.95 / len(frames))
    assert abs(len(bad) / len(frames) - 0.05) < 4 * sigma
    assert {f.malformed for f in bad} == set(MALFORMED_KINDS["raw"])
    # kinds cycle: each within one of the others
    per_kind = [sum(f.malformed == k for f in bad) for k in MALFORMED_KINDS["raw"]]
    assert max(per_kind) - min(per_kind) <= 1
    steps = np.diff([f.stamp_s for f in frames])
    back = np.flatnonzero(steps < 0)
    assert back.size == 1                                      # exactly one jump back
    assert steps[back[0]] == pytest.approx(1 / 30 - 5.0)
    assert frames[back[0] + 1].t_s >= 200.0 > frames[back[0]].t_s
    assert all(f.stamp_s == pytest.approx(f.t_s - 5.0) for f in frames[back[0] + 1:])
    assert np.allclose(steps[steps > 0], 1 / 30)
    # seeded: same plan, same frames; another seed, other malformed frames
    assert plan.frames(10.0) == CameraPlan("cam", "raw", 30.0, 0.05, 200.0, 5.0, seed=3).frames(10.0)
    assert [f.malformed for f in plan.frames(60)] != [f.malformed for f in
                                                       CameraPlan("cam", "raw", 30.0, 0.05, seed=4).frames(60)]
    assert all(f.stamp_s == f.t_s for f in CameraPlan("c", "compressed").frames(30.0))


def test_camera_plan_validates():
    for kwargs in ({"transport": "h264"}, {"rate_hz": 0}, {"malformed_fraction": 1.0}, {"jump_back_s": 0},
                   {"jump_at_s": -1}):
        with pytest.raises(ValueError):
            CameraPlan("cam", **{"transport": "raw", **kwargs})


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_good_payloads_decode_and_every_malformed_kind_is_refused_by_the_node_codec(transport):
    bank = FrameBank(transport, count=3)
    rng = np.random.default_rng(0)

    def decode(p):
        if transport == "raw":
            return decode_raw_image(p.data, p.height, p.width, p.encoding, p.step)
        return decode_compressed_image(p.data, p.format)

    frames = [decode(bank.payload(k)) for k in range(3)]
    assert all(f.shape == (480, 640, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[2])             # the square moves
    if transport == "raw":
        assert len(bank.payload(0).data) == 640 * 480 * 3
    for kind in MALFORMED_KINDS[transport]:
        with pytest.raises(ImageDecodeError):
            decode(malformed_payload(bank.payload(1), kind, rng))


def test_question_plan_every_period_per_client_random_streams_and_last_seconds():
    plan = QuestionPlan(("service", "action"), ("a", "b"), period_s=2.0, max_last_seconds=60.0, p_unlimited=0.25,
                        seed=5)
    qs = plan.questions(600.0)
    assert len(qs) == 600
    for client, offset in (("service", 0.0), ("action", 1.0)):
        times = [q.t_s for q in qs if q.client == client]
        assert len(times) == 300 and times[0] == offset and np.allclose(np.diff(times), 2.0)
    assert [q.t_s for q in qs] == sorted(q.t_s for q in qs)
    unlimited = [q for q in qs if q.last_seconds == 0.0]
    assert abs(len(unlimited) / 600 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 600)
    assert all(1.0 <= q.last_seconds <= 60.0 for q in qs if q.last_seconds)
    assert len({round(q.last_seconds, 3) for q in qs}) > 100      # random, not a few fixed values
    assert {q.stream for q in qs} == {"a", "b"}
    with pytest.raises(ValueError):
        QuestionPlan((), ("a",))


def test_due_questions_sends_on_time_and_skips_what_a_stall_made_overdue():
    qs = QuestionPlan(("service", "action"), ("a",), period_s=2.0, seed=1).questions(20.0)   # at 0, 1, 2, ... 19
    send, skipped, k = due_questions(qs, 0, 0.05, max_late_s=2.0)
    assert [q.t_s for q in send] == [0.0] and skipped == 0 and k == 1
    send, skipped, k = due_questions(qs, k, 0.5, max_late_s=2.0)
    assert send == [] and skipped == 0 and k == 1                     # nothing due yet
    send, skipped, k = due_questions(qs, k, 12.5, max_late_s=2.0)     # stalled from 0.5 s to 12.5 s
    assert [q.t_s for q in send] == [11.0, 12.0] and skipped == 10 and k == 13
    send, skipped, k = due_questions(qs, k, 100.0, max_late_s=2.0)
    assert send == [] and skipped == 7 and k == len(qs) == 20          # every question counted once


# ------------------------------------------------------------------------------ switches, sampler
def test_checkpoint_switch_follows_the_node_parameter_table(tmp_path):
    from livevlm_ros.ros.parameters import base_parameter_specs

    declared = {s.name for s in base_parameter_specs()}
    got = checkpoint_parameters(str(tmp_path), 60.0)
    assert got.available == (set(CHECKPOINT_PARAMETERS) <= declared)
    if got.available:
        assert got.detail == {"memory_dir": str(tmp_path), "checkpoint_period_s": 60.0}
    else:
        assert got.describe("checkpoints").startswith("checkpoints: not available (the node declares no parameter")


def test_watch_switch_follows_the_interfaces():
    try:
        from livevlm_interfaces.action import Watch  # noqa: F401
        importable = True
    except ImportError:
        importable = False
    got = watch_support()
    assert got.available == importable
    if not importable:
        assert got.describe("watch").startswith("watch: not available (")


def test_rss_from_proc_matches_psutil(monkeypatch):
    psutil = pytest.importorskip("psutil")
    ballast = bytearray(50_000_000)  # noqa: F841  (50 MB resident while measuring)
    ballast[::4096] = b"x" * len(ballast[::4096])
    with_psutil = rss_mb(os.getpid())
    assert with_psutil == pytest.approx(psutil.Process().memory_info().rss / 1e6, abs=5.0)
    monkeypatch.setitem(sys.modules, "psutil", None)              # import psutil -> ImportError
    from_proc = rss_mb(os.getpid())
    assert from_proc == pytest.approx(with_psutil, abs=5.0) and from_proc > 50.0
    assert rss_mb(2**22 + 12345) is None                          # no such process


# ------------------------------------------------------------------------------ report files
def test_report_json_and_plots_are_written(tmp_path):
    samples = [{"t_s": 10.0 * k, "rss_mb": 400 + 0.1 * k, "device_memory_mb": None, "load1": 1.0,
                "streams": {"cam_raw": {"memory_tokens": 200, "newest_frame_age_s": 0.3, "frames_dropped": k,
                                        "frames_rejected": 2 * k}},
                "questions": {"sent": 10 * k, "answered": 10 * k, "errored": 0, "pending": 0},
                "watch_feedback": 0, "checkpoint_dir": {"files": 0, "bytes": 0}} for k in range(8)]
    log = _log_with(["answered"] * 4, [15, 16, 30, 40], [0.2, 0.3, 0.4, 0.5])
    report = build_report(config={"duration_s": 70.0, "warmup_s": 15.0}, samples=samples, records=log.snapshot(),
                          t0=0.0, ages=[(20.0, "cam_raw", 0.2), (5.0, "cam_raw", 9.0)], cameras={}, crashes=0,
                          shutdown={"exit_status": 0}, watch={"status": "watch: not available (x)"},
                          checkpoints={"status": "checkpoints: not available (y)"}, thresholds=Thresholds())
    assert report["verdict"]["passed"] and report["device_memory"] == "N/A"
    assert report["rss"]["slope_mb_per_min"] == pytest.approx(0.6)
    assert report["frame_age_s"]["all"]["n"] == 1 and report["frame_age_s"]["cam_raw"]["p50"] == 0.2
    path = write_report(str(tmp_path), report)
    assert json.loads(Path(path).read_text())["questions"]["sent"] == 4
    pngs = plot(str(tmp_path), report)
    assert [Path(p).name for p in pngs] == ["soak.png", "rss.png"]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(p).stat().st_size < 300_000 for p in pngs)
    for p in pngs:
        os.remove(p)
    from livevlm_ros.soak.cli import main

    assert main(["--replot", str(tmp_path)]) == 0 and all(os.path.isfile(p) for p in pngs)
    assert main(["--replot", str(tmp_path / "missing")]) == 2


def test_console_script_is_installed_in_bin_and_in_the_ament_lib_layout():
    bin_dir = Path(sys.executable).parent
    script = bin_dir / "livevlm_soak"
    if not script.exists():
        pytest.skip(f"livevlm_soak not installed next to {sys.executable} (scripts/setup.sh)")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage: livevlm_soak" in out.stdout and "--max-rss-growth-mb" in out.stdout
    lib = bin_dir.parent / "lib" / "livevlm_ros" / "livevlm_soak"
    assert os.access(lib, os.X_OK), lib
    bad = subprocess.run([str(script), "--duration", "0", "--out", "/tmp/unused"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "invalid --duration" in bad.stderr


# ------------------------------------------------------------------------------ end to end
@requires_ros
def test_short_soak_end_to_end(tmp_path):
    """A 12-s soak against the real node process (~30 s): every question answered or errored, none
    lost; every camera delivered; malformed frames refused and the stamp jump taken; files written."""
    out = tmp_path / "soak"
    proc = subprocess.run([sys.executable, "-m", "livevlm_ros.soak.cli", "--duration", "12", "--out", str(out),
                           "--sample-period", "3", "--warmup", "3", "--malformed", "0.3"],
                          capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    report = json.loads((out / "soak.json").read_text())
    q = report["questions"]
    skipped = report["contention"]["questions_skipped_client_late"]   # 0 unless this machine stalls > 2 s
    assert q["sent"] + skipped == 12 and q["sent"] >= 8
    assert q["answered"] + q["errored"] == 12 and q["lost"] == 0 and q["answered"] >= 6
    assert report["crashes"] == 0 and report["shutdown"]["exit_status"] == 0
    times = [s["t_s"] for s in report["samples"]]
    assert len(times) == 5 and all(k * 3.0 <= t < k * 3.0 + 1.0 for k, t in enumerate(times)), times
    assert report["contention"]["cpus"] == os.cpu_count() and report["contention"]["client_loop_max_gap_s"] >= 0
    assert all(s["rss_mb"] > 100 for s in report["samples"])
    for name, cam in report["cameras"].items():
        counters = cam["node_counters_at_end"]
        assert cam["published"] == 360 and 60 < cam["malformed_published"] < 160, (name, cam)
        assert counters["frames_received"] >= 0.9 * cam["published"], (name, cam)
        assert counters["frames_rejected"] > 0 and counters["frames_ingested"] > 0, (name, cam)
    log = (out / "logs" / "node.log").read_text()
    assert "stream cam_raw: stamp went back" in log and "stream cam_jpeg: stamp went back" in log
    assert report["frame_age_s"]["all"]["n"] > 0 and report["frame_age_s"]["all"]["p50"] < 5.0
    assert report["watch"]["status"].startswith("watch:")
    assert report["checkpoints"]["status"].startswith("checkpoints:")
    assert (out / "soak.png").is_file() and (out / "rss.png").is_file()
    assert "[soak] PASS" in proc.stdout
