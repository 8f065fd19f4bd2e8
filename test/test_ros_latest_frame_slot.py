"""LatestFrameSlot: latest-wins, drops counted, put never waits, bounded age under overload."""

import threading
import time

import pytest

from livevlm_ros.ros.latest_frame_slot import LatestFrameSlot


def test_depth_one_keeps_only_the_newest_and_counts_drops():
    slot = LatestFrameSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert slot.put(3) == 2
    assert slot.dropped == 2 and len(slot) == 1
    assert slot.take() == 3 and slot.take() is None


def test_deeper_slot_is_fifo_and_drops_the_oldest():
    slot = LatestFrameSlot(depth=3)
    for i in range(5):
        slot.put(i)
    assert slot.dropped == 2
    assert slot.newest() == 4
    assert slot.take_all() == [2, 3, 4]
    assert slot.put_count == 5 and slot.taken == 3


def test_clear_counts_pending_items_as_dropped():
    slot = LatestFrameSlot(depth=2)
    slot.put("a")
    slot.put("b")
    assert slot.clear() == 2 and slot.dropped == 2 and len(slot) == 0


def test_put_count_equals_taken_plus_dropped_plus_pending():
    slot = LatestFrameSlot(depth=2)
    for i in range(10):
        slot.put(i)
        if i % 3 == 0:
            slot.take()
    assert slot.put_count == slot.taken + slot.dropped + len(slot)


def test_invalid_depth():
    with pytest.raises(ValueError):
        LatestFrameSlot(depth=0)


def test_put_never_waits_for_a_slow_consumer_and_age_stays_bounded():
    """A 1 kHz producer against a consumer that needs 20 ms per item: puts stay fast, the
    consumer always gets a recent item, and everything not taken is counted as dropped."""
    slot = LatestFrameSlot()
    stop = threading.Event()
    ages, put_times = [], []

    def consumer():
        while not stop.is_set():
            item = slot.take()
            if item is not None:
                ages.append(time.monotonic() - item)
                time.sleep(0.02)  # "ingest"
            else:
                time.sleep(0.001)

    thread = threading.Thread(target=consumer)
    thread.start()
    t_end = time.monotonic() + 0.5
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        slot.put(t0)
        put_times.append(time.monotonic() - t0)
        time.sleep(0.001)
    stop.set()
    thread.join()
    assert slot.dropped > 0
    assert slot.put_count == slot.taken + slot.dropped + len(slot)
    assert max(put_times) < 0.05  # never waited on the consumer's 20 ms work
    # each taken item was put at most one producer period + scheduling before it was taken
    assert sorted(ages)[len(ages) // 2] < 0.01
    assert max(ages) < 0.1
