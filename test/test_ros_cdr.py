"""cdr_header_stamp: the header stamp of a serialized image message, read without deserializing."""

import pytest

from livevlm_ros.ros.cdr import cdr_header_stamp


def test_cdr_header_stamp_both_byte_orders():
    import struct

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
    msg = getattr(msgs, kind)()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000029, 999_999_999
    msg.header.frame_id = "camera_optical_frame"
    assert cdr_header_stamp(serialization.serialize_message(msg)) == pytest.approx(1700000030.0, abs=1e-8)
