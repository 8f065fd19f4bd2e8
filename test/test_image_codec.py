"""livevlm_ros.io.image_codec: every encoding against a known RGB image, bad inputs, real data."""

import array
import io
import struct
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from livevlm_ros.io.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed_image,
    decode_image_msg,
    decode_raw_image,
)
from shared_data import SHARED_DATA, ARUCO_BAG



# ------------------------------------------------------------------------------------------
# Test-side encoders: RGB (H, W, 3) uint8 -> (row bytes (H, W*bpp) uint8) for each encoding
# ------------------------------------------------------------------------------------------


def known_rgb(height=6, width=10, seed=0):
    """A reproducible RGB image; horizontally adjacent pixel pairs share a colour (so 4:2:2
    chroma subsampling loses nothing), an odd last column repeats the previous pair's colour."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, (width + 1) // 2, 3), dtype=np.uint8)
    if width % 2 and base.shape[1] > 1:
        base[:, -1] = base[:, -2]
    return np.repeat(base, 2, axis=1)[:, :width].copy()


def to_ycbcr(rgb):
    """BT.601 limited range, float (H, W, 3): Y, U (Cb), V (Cr)."""
    r, g, b = [rgb[..., i].astype(np.float64) for i in range(3)]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return [np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v)]


def encode_yuv422(rgb, layout):
    """Pack (H, W, 3) RGB as UYVY (``layout="uyvy"``) or YUYV rows of 2*W bytes (odd W: the
    last macropixel is cut after its second byte, as a 2-bytes-per-pixel row implies)."""
    height, width = rgb.shape[:2]
    y, u, v = to_ycbcr(rgb)
    rows = np.zeros((height, 2 * width), dtype=np.uint8)
    y_off, u_off, v_off = (1, 0, 2) if layout == "uyvy" else (0, 1, 3)
    rows[:, y_off::2] = y
    rows[:, u_off::4] = u[:, 0::2]
    rows[:, v_off::4] = v[:, 0::2][:, : rows[:, v_off::4].shape[1]]
    return rows


def encode(rgb, encoding, big_endian=False):
    """(H, W, 3) RGB -> (H, W * bytes_per_pixel) rows in ``encoding``."""
    height, width = rgb.shape[:2]
    if encoding == "rgb8":
        return rgb.reshape(height, -1)
    if encoding == "bgr8":
        return rgb[..., ::-1].reshape(height, -1)
    if encoding in ("rgba8", "bgra8"):
        colour = rgb if encoding == "rgba8" else rgb[..., ::-1]
        alpha = np.full((height, width, 1), 77, dtype=np.uint8)
        return np.concatenate([colour, alpha], axis=2).reshape(height, -1)
    if encoding == "mono8":
        return rgb[..., 0]
    if encoding == "mono16":
        value = rgb[..., 0].astype(np.uint16) * 256 + 0x5A  # low byte must not matter
        return value.astype(">u2" if big_endian else "<u2").view(np.uint8).reshape(height, -1)
    if encoding in ("yuv422", "uyvy"):
        return encode_yuv422(rgb, "uyvy")
    if encoding in ("yuv422_yuy2", "yuyv"):
        return encode_yuv422(rgb, "yuyv")
    raise AssertionError(encoding)


def expected(rgb, encoding):
    """What a decoder must return for ``rgb`` encoded as ``encoding``."""
    if encoding.startswith("mono"):
        return np.repeat(rgb[..., :1], 3, axis=2)
    return rgb


def with_padding(rows, pad):
    """Append ``pad`` garbage bytes to every row; returns (bytes, step)."""
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xEE, dtype=np.uint8)], axis=1)
    return padded.tobytes(), padded.shape[1]


# ------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------


def is_yuv(encoding):
    return encoding.startswith("yuv") or encoding in ("uyvy", "yuyv")


ROUND_TRIP_CASES = [
    (encoding, width, pad)
    for encoding in SUPPORTED_ENCODINGS
    for width, pad in [(10, 0), (10, 7), (7, 0), (7, 5), (1, 3)]
    if not (width == 1 and is_yuv(encoding))  # a 1-pixel 4:2:2 row has no V byte: own test below
]


@pytest.mark.parametrize("encoding,width,pad", ROUND_TRIP_CASES)
def test_round_trip(encoding, width, pad):
    rgb = known_rgb(height=5, width=width)
    data, step = with_padding(encode(rgb, encoding), pad)
    out = decode_raw_image(data, 5, width, encoding, step, False)
    assert out.shape == (5, width, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    diff = np.abs(out.astype(int) - expected(rgb, encoding).astype(int)).max()
    assert diff <= (3 if is_yuv(encoding) else 0), f"{encoding}: max abs error {diff}"


def test_yuv_reference_colours():
    """Nominal BT.601 limited-range values decode to the textbook colours."""
    # UYVY macropixels: black (Y16), white (Y235), red (Y81 U90 V240), blue (Y41 U240 V110)
    data = bytes([128, 16, 128, 16, 128, 235, 128, 235, 90, 81, 240, 81, 240, 41, 110, 41])
    out = decode_raw_image(data, 1, 8, "uyvy", 16, False)
    want = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 0, 255)]
    for k, colour in enumerate(want):
        assert np.abs(out[0, 2 * k].astype(int) - colour).max() <= 2, (k, out[0, 2 * k])


def test_mono16_big_endian_and_little_endian():
    rgb = known_rgb(4, 6)
    for big in (False, True):
        rows = encode(rgb, "mono16", big_endian=big)
        out = decode_raw_image(rows.tobytes(), 4, 6, "mono16", 12, big)
        np.testing.assert_array_equal(out, expected(rgb, "mono16"))


def test_mono16_scaling_keeps_high_byte():
    values = np.array([[0, 255, 256, 65535]], dtype="<u2")
    out = decode_raw_image(values.tobytes(), 1, 4, "mono16", 8, False)
    assert out[0, :, 0].tolist() == [0, 0, 1, 255]


def test_encoding_is_case_insensitive():
    rgb = known_rgb(2, 4)
    out = decode_raw_image(encode(rgb, "bgr8").tobytes(), 2, 4, "BGR8", 12, 0)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(
    "make_buffer",
    [bytes, bytearray, memoryview, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8).copy(), list],
    ids=["bytes", "bytearray", "memoryview", "array", "ndarray", "list"],
)
def test_buffer_types(make_buffer):
    rgb = known_rgb(3, 4)
    data = make_buffer(encode(rgb, "rgb8").tobytes())
    np.testing.assert_array_equal(decode_raw_image(data, 3, 4, "rgb8", 12, 0), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_output_does_not_alias_message_buffer(encoding):
    rgb = known_rgb(4, 6)
    buffer = np.ascontiguousarray(encode(rgb, encoding)).reshape(-1).copy()
    out = decode_raw_image(buffer, 4, 6, encoding, buffer.size // 4, 0)
    assert not np.shares_memory(out, buffer)
    out[...] = 0
    np.testing.assert_array_equal(
        decode_raw_image(buffer, 4, 6, encoding, buffer.size // 4, 0), expected(rgb, encoding)
    )


def test_extra_trailing_bytes_are_ignored():
    rgb = known_rgb(2, 4)
    data = encode(rgb, "rgb8").tobytes() + b"\x00" * 5
    np.testing.assert_array_equal(decode_raw_image(data, 2, 4, "rgb8", 12, 0), rgb)


# ------------------------------------------------------------------------------------------
# Bad raw input
# ------------------------------------------------------------------------------------------


def raises(match, fn, *args, **kwargs):
    with pytest.raises(ImageDecodeError, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_unknown_encoding_lists_supported():
    message = raises("unsupported image encoding '32FC1'", decode_raw_image, b"\0" * 16, 2, 2, "32FC1", 8, 0)
    for name in ("rgb8", "bgr8", "mono16", "yuv422", "yuv422_yuy2"):
        assert name in message


def test_truncated_data():
    message = raises("truncated", decode_raw_image, b"\0" * 100, 4, 10, "bgr8", 30, 0)
    assert "100 bytes" in message and "120" in message


def test_step_smaller_than_row():
    message = raises("step 20 is smaller", decode_raw_image, b"\0" * 400, 4, 10, "bgr8", 20, 0)
    assert "30" in message


@pytest.mark.parametrize("height,width", [(0, 10), (10, 0), (-1, 4)])
def test_zero_size(height, width):
    raises("empty image", decode_raw_image, b"", height, width, "rgb8", max(width, 0) * 3, 0)


def test_above_max_pixels():
    raises("exceeds max_pixels=100", decode_raw_image, b"\0" * 3 * 121, 11, 11, "rgb8", 33, 0, max_pixels=100)


def test_odd_yuv_with_width_one_uses_neutral_chroma():
    out = decode_raw_image(bytes([128, 126]), 1, 1, "yuv422", 2, 0)  # U=128, Y=126, no V byte
    assert out.shape == (1, 1, 3) and len(set(out[0, 0].tolist())) == 1  # grey: V taken as 128


# ------------------------------------------------------------------------------------------
# Compressed
# ------------------------------------------------------------------------------------------


def png_bytes(array_or_image, **save):
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def jpeg_bytes(rgb, quality=95):
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def smooth_rgb(height=48, width=64):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 4, yy * 5, np.full_like(xx, 128)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["png", "PNG", "rgb8; png compressed bgr8", ""])
def test_png_exact(fmt):
    rgb = known_rgb(8, 9)
    out = decode_compressed_image(png_bytes(rgb), fmt)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous and out.flags.writeable


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8"])
def test_jpeg_close(fmt):
    rgb = smooth_rgb()
    out = decode_compressed_image(jpeg_bytes(rgb), fmt)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3


def test_png_modes_become_rgb():
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    np.testing.assert_array_equal(decode_compressed_image(png_bytes(grey), "png"), np.repeat(grey[..., None], 3, 2))
    rgba = np.dstack([known_rgb(6, 8), np.full((6, 8), 9, np.uint8)])
    np.testing.assert_array_equal(decode_compressed_image(png_bytes(rgba), "png"), rgba[..., :3])
    deep = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000 + 7).astype(np.uint16)
    out = decode_compressed_image(png_bytes(Image.fromarray(deep)), "mono16; png compressed mono16")
    np.testing.assert_array_equal(out[..., 0], (deep >> 8).astype(np.uint8))
    palette = Image.fromarray(known_rgb(6, 8)).convert("P")
    assert decode_compressed_image(png_bytes(palette), "png").shape == (6, 8, 3)


def test_corrupt_compressed_data():
    garbage = raises("cannot decode", decode_compressed_image, b"this is not an image at all", "jpeg")
    assert "not a JPEG or PNG image (data starts with 74 68 69 73" in garbage
    raises("no data", decode_compressed_image, b"", "jpeg")
    data = jpeg_bytes(smooth_rgb())
    truncated = raises("cannot decode", decode_compressed_image, data[: len(data) // 2], "jpeg")
    broken_header = raises("cannot decode", decode_compressed_image, b"\xff\xd8\xff\xe0" + bytes(60), "jpeg")
    png = raises("cannot decode", decode_compressed_image, png_bytes(known_rgb(8, 8))[:60], "png")
    for message in (garbage, truncated, broken_header, png):  # D8: no "<_io.BytesIO object at 0x...>"
        assert "object at 0x" not in message and "BytesIO" not in message, message


@pytest.mark.parametrize("fmt", ["webp", "tiff", "16UC1; compressedDepth png"])
def test_unsupported_compressed_format(fmt):
    message = raises("not supported|unsupported", decode_compressed_image, png_bytes(known_rgb(4, 4)), fmt)
    assert "jpeg" in message and "png" in message


def forged_png_header(width, height):
    """A valid small PNG whose IHDR claims ``width x height`` (CRC fixed): a decompression bomb."""
    data = bytearray(png_bytes(known_rgb(4, 4)))
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_decompression_bomb_rejected_before_decoding():
    start = time.perf_counter()
    message = raises("exceeds max_pixels", decode_compressed_image, forged_png_header(100_000, 100_000), "png")
    assert "10000000000 pixels" in message  # Pillow's own header check fires first at this size
    message = raises("exceeds max_pixels", decode_compressed_image, forged_png_header(10_000, 5_000), "png")
    assert "10000x5000" in message  # below Pillow's limit: ours, still from the header only
    assert time.perf_counter() - start < 0.5
    raises("exceeds max_pixels=1000", decode_compressed_image, png_bytes(known_rgb(40, 40)), "png", max_pixels=1000)


def test_decode_speed_1280x720_bgr8():
    rgb = np.random.default_rng(1).integers(0, 256, size=(720, 1280, 3), dtype=np.uint8)
    data = encode(rgb, "bgr8").tobytes()
    decode_raw_image(data, 720, 1280, "bgr8", 3840, 0)
    start = time.perf_counter()
    for _ in range(10):
        decode_raw_image(data, 720, 1280, "bgr8", 3840, 0)
    per_frame_ms = (time.perf_counter() - start) / 10 * 1e3
    assert per_frame_ms < 20, f"bgr8 1280x720 took {per_frame_ms:.1f} ms"  # ~1 ms; loose for loaded CI


# ------------------------------------------------------------------------------------------
# Duck-typed messages
# ------------------------------------------------------------------------------------------


def fake_image(rgb, encoding="bgr8"):
    rows = encode(rgb, encoding)
    return SimpleNamespace(
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding=encoding,
        step=rows.shape[1],
        is_bigendian=0,
        data=array.array("B", rows.tobytes()),
    )


def test_decode_image_msg_raw_and_compressed_fakes():
    rgb = known_rgb(4, 6)
    np.testing.assert_array_equal(decode_image_msg(fake_image(rgb)), rgb)
    compressed = SimpleNamespace(format="png", data=np.frombuffer(png_bytes(rgb), np.uint8))
    np.testing.assert_array_equal(decode_image_msg(compressed), rgb)


def test_decode_image_msg_rejects_other_objects():
    raises("neither a sensor_msgs/Image nor a CompressedImage", decode_image_msg, SimpleNamespace(data=b""))


def test_decode_image_msg_max_pixels():
    raises("exceeds max_pixels", decode_image_msg, fake_image(known_rgb(4, 6)), max_pixels=10)


def test_decode_rclpy_messages():
    sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs Python package not installed")
    rgb = known_rgb(4, 6)
    msg = sensor_msgs.Image(height=4, width=6, encoding="bgr8", step=18, is_bigendian=0)
    msg.data = encode(rgb, "bgr8").tobytes()
    np.testing.assert_array_equal(decode_image_msg(msg), rgb)
    compressed = sensor_msgs.CompressedImage(format="png")
    compressed.data = png_bytes(rgb)
    np.testing.assert_array_equal(decode_image_msg(compressed), rgb)


def test_real_compressed_image_from_bag():
    if not ARUCO_BAG.is_dir():
        pytest.skip(f"shared data not found at {ARUCO_BAG} (set LIVEVLM_SHARED_DATA)")
    from rosbags.highlevel import AnyReader

    with AnyReader([ARUCO_BAG]) as reader:
        connections = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/CompressedImage"]
        (connection, _, raw), *_ = list(reader.messages(connections=connections))
        msg = reader.deserialize(raw, connection.msgtype)
    assert msg.format == "jpg"
    out = decode_image_msg(msg)
    assert out.shape == (960, 1280, 3) and out.dtype == np.uint8
    assert not np.shares_memory(out, msg.data)
    assert 20 < out.mean() < 240 and out.std() > 10  # a real photograph, not a flat frame
