"""FrameSampler: header-stamp sampling at sample_fps, jitter, stamps going backwards, epochs."""

import math

import pytest

from livevlm_ros.ros.frame_sampler import FrameSampler, JumpPolicy, Verdict


def kept(sampler, stamps):
    return [t for t in stamps if sampler.offer(t).keep]


def test_keeps_one_frame_per_interval_of_stamp_time():
    sampler = FrameSampler(sample_fps=2.0, tolerance_s=0.0)
    stamps = [100.0 + k / 30.0 for k in range(90)]  # 3 s of a 30 Hz camera
    # 100.0, then the first stamp at least 0.5 s after the last kept one
    assert kept(sampler, stamps) == pytest.approx([100.0, 100.5, 101.0, 101.5, 102.0, 102.5])


def test_zero_fps_keeps_every_frame_including_equal_stamps():
    sampler = FrameSampler(sample_fps=0.0)
    assert kept(sampler, [1.0, 1.0, 1.1, 1.2]) == [1.0, 1.0, 1.1, 1.2]


def test_tolerance_absorbs_jitter_of_camera_stamps():
    strict = FrameSampler(sample_fps=2.0, tolerance_s=0.0)
    tolerant = FrameSampler(sample_fps=2.0, tolerance_s=0.005)
    stamps = [10.0, 10.4998, 10.9996]  # a 2 Hz camera whose stamps run 0.2 ms early
    assert kept(strict, stamps) == [10.0, 10.9996]  # without tolerance: half the rate
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


def test_tiny_backwards_jitter_is_skipped_not_a_jump():
    sampler = FrameSampler(sample_fps=0.0, policy="reset", tolerance_s=0.002)
    sampler.offer(50.0)
    decision = sampler.offer(49.999)
    assert decision.verdict is Verdict.SKIP and sampler.epoch == 0


@pytest.mark.parametrize("stamp", [0.0, -1.0, math.nan, math.inf])
def test_unset_or_invalid_stamps_are_rejected_with_a_reason(stamp):
    decision = FrameSampler(sample_fps=2.0).offer(stamp)
    assert decision.verdict is Verdict.REJECT and decision.reason


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


def test_cdr_header_stamp_both_byte_orders():
    import struct

    from livevlm_ros.ros.frame_sampler import cdr_header_stamp

    little = bytes([0, 1, 0, 0]) + struct.pack("<iI", 1700000004, 500_000_000) + b"rest"
    big = bytes([0, 0, 0, 0]) + struct.pack(">iI", 12, 250_000_000)
    assert cdr_header_stamp(little) == pytest.approx(1700000004.5)
    assert cdr_header_stamp(big) == pytest.approx(12.25)
    for bad in (b"\x00\x01\x00", bytes([0, 7, 0, 0]) + bytes(8)):
        with pytest.raises(ValueError):
            cdr_header_stamp(bad)


@pytest.mark.parametrize("kind", ["Image", "CompressedImage"])
def test_cdr_header_stamp_of_rclpy_serialized_images(kind):
    serialization = pytest.importorskip("rclpy.serialization", reason="rclpy missing: run scripts/setup.sh")
    msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs missing: run scripts/setup.sh")
    from livevlm_ros.ros.frame_sampler import cdr_header_stamp

    msg = getattr(msgs, kind)()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000029, 999_999_999
    msg.header.frame_id = "camera_optical_frame"
    assert cdr_header_stamp(serialization.serialize_message(msg)) == pytest.approx(1700000030.0, abs=1e-8)
