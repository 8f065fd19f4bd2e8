"""FrameSampler, the sampler of every entry point: the slot grid at sample_fps, jitter, stamps
going backwards, epochs; and the node and the offline sources keeping the same frames (D10)."""

import math

import pytest

from livevlm_ros.io.frame_sampler import FrameSampler, JumpPolicy, Verdict


def kept(sampler, stamps):
    return [t for t in stamps if sampler.offer(t).keep]


def test_keeps_one_frame_per_slot_of_stamp_time():
    sampler = FrameSampler(sample_fps=2.0, tolerance_s=0.0)
    stamps = [100.0 + k / 30.0 for k in range(90)]  # 3 s of a 30 Hz camera
    # 100.0, then the first stamp in each following 0.5 s slot
    assert kept(sampler, stamps) == pytest.approx([100.0, 100.5, 101.0, 101.5, 102.0, 102.5])


def test_rate_is_sample_fps_even_when_the_source_rate_is_not_a_multiple():
    stamps = [k * 0.08 for k in range(377)]  # 12.5 fps, 30.16 s
    out = kept(FrameSampler(2.0), stamps)
    assert len(out) == 61  # 2 per second + the first; "1/fps after the last kept frame" keeps only 54
    slots = [math.floor(t / 0.5 + 1e-9) for t in out]
    assert slots == list(range(61))  # exactly one frame per half-second slot


def test_exact_grid_and_float_noise():
    assert len(kept(FrameSampler(1.0), [k / 30.0 for k in range(300)])) == 10  # 10 s at 30 fps
    assert len(kept(FrameSampler(10.0), [k * 0.1 for k in range(100)])) == 100  # 0.1 * k float noise


def test_the_grid_restarts_after_a_gap():
    sampler = FrameSampler(1.0, policy="reject")
    decisions = [sampler.offer(t).verdict for t in (0.0, 0.4, 1.0, 0.9, 7.3, 7.9, 8.2, 8.3)]
    assert decisions == [Verdict.KEEP, Verdict.SKIP, Verdict.KEEP, Verdict.REJECT,  # 0.9 went back
                         Verdict.KEEP, Verdict.SKIP, Verdict.SKIP, Verdict.KEEP]  # grid re-anchored at 7.3


@pytest.mark.parametrize("fps", [-1.0, math.nan, math.inf])
def test_bad_rates_are_refused(fps):
    with pytest.raises(ValueError, match="sample_fps"):
        FrameSampler(fps)


def test_expected_count_for_progress_bars():
    assert FrameSampler(2.0).expected_count(30.16, 377) == 61
    assert FrameSampler(100.0).expected_count(30.16, 377) == 377
    assert FrameSampler(0.0).expected_count(30.16, 377) == 377
    assert FrameSampler(2.0).expected_count(None, 377) == 377


def test_the_node_and_the_offline_sources_keep_the_same_frames():
    """D10: 10 s of a 12.5 fps camera at sample_fps 2, fed to the node's stream runtime (header
    stamps, as a replayed bag) and to an offline frame source (the same bag run offline)."""
    import numpy as np

    from livevlm_ros.io.sources import FrameSource
    from livevlm_ros.ros.parameters import QosSettings, StreamSettings
    from livevlm_ros.ros.worker import StreamRuntime

    stamps = [1_700_000_000.0 + k * 0.08 for k in range(125)]
    frame = np.zeros((4, 4, 3), np.uint8)

    class Recording(FrameSource):
        def _lazy_frames(self):
            return ((t, lambda: frame) for t in stamps)

    offline = [t for t, _ in Recording(fps=2.0).frames()]
    settings = StreamSettings("camera", "image", "raw", QosSettings())
    node = StreamRuntime(settings, engine=None, sampler=FrameSampler(2.0, require_stamps=True), queue_depth=200)
    live = [t for t in stamps if node.offer(t, lambda: frame).verdict is Verdict.KEEP]
    assert live == offline
    assert len(offline) == 20  # 2 per second of stamp time (the node kept 18 before: gap from the last kept)


def test_zero_fps_keeps_every_frame_including_equal_stamps():
    sampler = FrameSampler(sample_fps=0.0)
    assert kept(sampler, [1.0, 1.0, 1.1, 1.2]) == [1.0, 1.0, 1.1, 1.2]


def test_tolerance_absorbs_jitter_of_camera_stamps():
    strict = FrameSampler(sample_fps=2.0, tolerance_s=0.0)
    tolerant = FrameSampler(sample_fps=2.0, tolerance_s=0.005)
    stamps = [10.0, 10.4998, 10.9996, 11.4994]  # a 2 Hz camera whose stamps run 0.2 ms early
    assert kept(strict, stamps) == [10.0, 10.9996, 11.4994]  # without tolerance one frame misses its slot
    assert kept(tolerant, stamps) == stamps


def test_tolerance_is_capped_at_half_the_interval():
    sampler = FrameSampler(sample_fps=10.0, tolerance_s=1.0)
    assert sampler.tolerance_s == pytest.approx(0.05)


def test_skip_is_not_a_reject_and_evaluate_changes_nothing():
    sampler = FrameSampler(sample_fps=1.0)
    sampler.offer(5.0)
    decision = sampler.evaluate(5.2)
    assert decision.verdict is Verdict.SKIP and decision.reason == ""
    assert sampler.evaluate(6.0).keep
    assert sampler.last_kept_s == 5.0  # evaluate() alone did not commit


def test_commit_is_needed_so_a_corrupt_frame_does_not_delay_the_next():
    sampler = FrameSampler(sample_fps=1.0)
    sampler.offer(1.0)
    first = sampler.evaluate(2.0)  # kept, but say the image fails to decode: no commit
    assert first.keep
    assert sampler.evaluate(2.1).keep  # the next good frame is still due


def test_reset_policy_starts_a_new_epoch_when_stamps_go_back():
    sampler = FrameSampler(sample_fps=2.0, policy="reset")
    kept(sampler, [100.0, 100.5, 101.0])
    decision = sampler.offer(100.2)  # a looping bag starts again
    assert decision.keep and decision.starts_new_epoch
    assert decision.epoch == 1 and sampler.epoch == 1
    assert decision.jumped_back_s == pytest.approx(0.8)
    assert "went back" in decision.reason
    # the new timeline is sampled normally from there
    assert kept(sampler, [100.4, 100.7, 101.2]) == [100.7, 101.2]


def test_reject_policy_drops_until_stamps_pass_the_last_kept_one():
    sampler = FrameSampler(sample_fps=2.0, policy=JumpPolicy.REJECT)
    kept(sampler, [100.0, 100.5])
    decision = sampler.offer(99.0)
    assert decision.verdict is Verdict.REJECT and "went back" in decision.reason
    assert sampler.epoch == 0
    assert kept(sampler, [99.5, 100.4, 101.0]) == [101.0]


def test_without_a_rate_stamps_still_never_go_back():
    assert kept(FrameSampler(0.0, policy="reject"), [1.0, 2.0, 1.5, 2.0, 3.0]) == [1.0, 2.0, 2.0, 3.0]


def test_tiny_backwards_jitter_is_skipped_not_a_jump():
    sampler = FrameSampler(sample_fps=0.0, policy="reset", tolerance_s=0.002)
    sampler.offer(50.0)
    decision = sampler.offer(49.999)
    assert decision.verdict is Verdict.SKIP and sampler.epoch == 0


@pytest.mark.parametrize("stamp", [0.0, -1.0, math.nan, math.inf])
def test_unset_or_invalid_header_stamps_are_rejected_with_a_reason(stamp):
    decision = FrameSampler(sample_fps=2.0, require_stamps=True).offer(stamp)
    assert decision.verdict is Verdict.REJECT and decision.reason


def test_time_zero_is_a_valid_first_frame_of_a_video():
    assert kept(FrameSampler(sample_fps=2.0), [0.0, 0.25, 0.5]) == [0.0, 0.5]


def test_sim_time_stamps_work_like_any_other():
    # Stamps from a simulator or a bag replayed with --clock start near zero and only need
    # to be positive: the sampler never looks at wall time.
    sampler = FrameSampler(sample_fps=4.0)
    assert kept(sampler, [0.05 * k for k in range(1, 21)]) == pytest.approx([0.05, 0.3, 0.55, 0.8])


def test_explicit_reset_keeps_the_next_frame_whatever_its_stamp():
    sampler = FrameSampler(sample_fps=1.0)
    sampler.offer(10.0)
    sampler.reset()
    decision = sampler.offer(3.0)
    assert decision.keep and not decision.starts_new_epoch and decision.epoch == 1


def test_set_rate_changes_the_interval():
    sampler = FrameSampler(sample_fps=1.0)
    sampler.offer(0.5)
    assert not sampler.evaluate(0.9).keep
    sampler.set_rate(4.0)
    assert sampler.evaluate(0.9).keep
    with pytest.raises(ValueError):
        sampler.set_rate(-1.0)
