"""Read the header stamp of a serialized ROS 2 message without deserializing it.

The node's image callbacks get the serialized bytes (``raw=True``) and read only the stamp of
each message to sample it; just the kept frames are deserialized (a skipped 30 Hz frame costs
12 bytes read, not the conversion of its pixels into Python objects).
"""

from __future__ import annotations

import struct

__all__ = ["cdr_header_stamp"]


def cdr_header_stamp(data: bytes) -> float:
    """Header stamp (s) of a CDR-serialized message that starts with a ``std_msgs/Header``
    (``sensor_msgs/Image``, ``CompressedImage``...), read without deserializing the message.

    Layout: a 4-byte encapsulation header (byte 1: 0 big-endian, 1 little-endian), then
    ``stamp.sec`` (int32) and ``stamp.nanosec`` (uint32). Lets the node skip frames it will not
    sample without paying for the conversion of their pixels into Python objects.

    Raises:
        ValueError: fewer than 12 bytes, or an unknown encapsulation.
    """
    if len(data) < 12:
        raise ValueError(f"serialized message too short for a header: {len(data)} bytes")
    if data[0] != 0 or data[1] not in (0, 1):
        raise ValueError(f"unsupported CDR encapsulation {bytes(data[:2]).hex()}")
    sec, nanosec = struct.unpack_from("<iI" if data[1] == 1 else ">iI", data, 4)
    return float(sec) + float(nanosec) * 1e-9
