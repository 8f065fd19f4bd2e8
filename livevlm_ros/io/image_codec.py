"""ROS image messages -> RGB ``uint8`` numpy arrays, without ROS (pure numpy + Pillow).

Every decoder returns a new, C-contiguous ``numpy.ndarray`` of shape ``(H, W, 3)`` and dtype
``uint8`` (RGB order) that never aliases the message buffer, so the message can be freed or
reused as soon as the call returns. Every failure raises :class:`ImageDecodeError` (a
``ValueError``) whose message names the encoding and the sizes involved.

Supported ``sensor_msgs/msg/Image`` encodings (see :data:`SUPPORTED_ENCODINGS`):

* ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` (alpha dropped), ``mono8`` (grey replicated to RGB);
* ``mono16``: 16-bit grey, the full 16-bit range scaled to 8 bits (``v >> 8``, the high byte),
  byte order from ``is_bigendian``;
* ``yuv422`` / ``uyvy`` (byte order U Y0 V Y1) and ``yuv422_yuy2`` / ``yuyv`` (Y0 U Y1 V):
  4:2:2 YCbCr, converted with BT.601 *limited range* coefficients (Y in [16, 235]), the
  conversion OpenCV (hence cv_bridge) applies to these encodings. For an odd width the last
  pixel's missing chroma byte is taken from the preceding pixel pair.

``sensor_msgs/msg/CompressedImage`` payloads in JPEG or PNG (the ``compressed`` image_transport)
are decoded with Pillow; the image size is checked against ``max_pixels`` from the header
before any pixel is decompressed, so a decompression bomb is rejected cheaply.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Dict, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_ENCODINGS",
    "SUPPORTED_COMPRESSED_FORMATS",
    "ImageDecodeError",
    "decode_raw_image",
    "decode_compressed_image",
    "decode_image_msg",
    "is_compressed_msg",
]

#: Largest accepted image, in pixels (width * height): a little above 8K UHD (7680 x 4320).
DEFAULT_MAX_PIXELS = 40_000_000

#: Message data: any buffer-protocol object (``bytes``, ``bytearray``, ``memoryview``,
#: ``array.array('B')`` as rclpy gives, a numpy array as rosbags gives) or a sequence of ints.
Buffer = Any


class ImageDecodeError(ValueError):
    """An image message cannot be decoded: unknown encoding or format, inconsistent sizes,
    truncated or corrupt data, or an image larger than the allowed pixel count."""


# --------------------------------------------------------------------------------------------
# Buffer and size helpers
# --------------------------------------------------------------------------------------------


def _as_uint8(data: Buffer) -> np.ndarray:
    """A flat ``uint8`` view of ``data`` (no copy for buffer-protocol objects)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # e.g. a plain list of ints
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ImageDecodeError(f"image data of type {type(data).__name__} is not a byte buffer") from err


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """Reject zero-size images and images above ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{what}: empty image ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(f"{what}: {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}")


# --------------------------------------------------------------------------------------------
# Raw (sensor_msgs/Image) pixel converters: (rows (H, step) uint8 view, width, is_bigendian) -> RGB
# --------------------------------------------------------------------------------------------


def _channels(rows: np.ndarray, width: int, n: int) -> np.ndarray:
    """The ``(H, W, n)`` pixel view of the row buffer, padding excluded (no copy)."""
    return rows[:, : width * n].reshape(rows.shape[0], width, n)


def _copy_channels(src: np.ndarray, order: Tuple[int, int, int]) -> np.ndarray:
    """A new contiguous ``(H, W, 3)`` array with ``out[..., i] = src[..., order[i]]``."""
    if order == (0, 1, 2) and src.shape[2] == 3:
        return np.array(src, dtype=np.uint8, order="C", copy=True)  # one memcpy when unpadded
    out = np.empty(src.shape[:2] + (3,), dtype=np.uint8)
    for dst_channel, src_channel in enumerate(order):
        out[..., dst_channel] = src[..., src_channel]
    return out


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 -> new ``(H, W, 3)`` array with the grey value in every channel."""
    out = np.empty(grey.shape + (3,), dtype=np.uint8)
    for channel in range(3):  # three strided copies: ~5x faster than one broadcast assignment
        out[..., channel] = grey
    return out


def _rgb8(rows, width, _big):
    return _copy_channels(_channels(rows, width, 3), (0, 1, 2))


def _bgr8(rows, width, _big):
    return _copy_channels(_channels(rows, width, 3), (2, 1, 0))


def _rgba8(rows, width, _big):
    return _copy_channels(_channels(rows, width, 4), (0, 1, 2))


def _bgra8(rows, width, _big):
    return _copy_channels(_channels(rows, width, 4), (2, 1, 0))


def _mono8(rows, width, _big):
    return _grey_to_rgb(rows[:, :width])


def _mono16(rows, width, big_endian):
    # v >> 8 is the high byte of each 16-bit sample: index it directly, no 16-bit arithmetic.
    high = 0 if big_endian else 1
    return _grey_to_rgb(_channels(rows, width, 2)[..., high])


#: BT.601 limited range (ITU-R BT.601, as OpenCV's YUV 4:2:2 conversions):
#: R = 1.164 (Y - 16) + 1.596 V',  G = 1.164 (Y - 16) - 0.392 U' - 0.813 V',  B = 1.164 (Y - 16) + 2.017 U'
#: with U' = U - 128, V' = V - 128.
_BT601_LUMA = 1.164


def _bt601_chroma(u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chroma terms of R, G, B from centred U', V' (float32, any shape)."""
    green = v * -0.813
    green -= u * 0.392
    return v * 1.596, green, u * 2.017


def _yuv422_to_rgb(rows: np.ndarray, width: int, y_offset: int, u_offset: int, v_offset: int) -> np.ndarray:
    """4:2:2 packed YCbCr -> RGB for any byte layout of the 4-byte macropixel.

    ``y_offset`` is the byte of the first luma sample (the second is 2 bytes later); ``u_offset``
    and ``v_offset`` are the chroma bytes within the macropixel. Works on planes of shape
    ``(H, pairs)``: chroma terms once per pixel pair, the even and odd pixels' luma separately
    (contiguous float32 arithmetic), then one interleaving ``np.stack`` of the six uint8 planes.
    """
    height = rows.shape[0]
    pairs = (width + 1) // 2
    packed = rows[:, : width * 2]
    if width % 2:  # odd width: complete the last macropixel (luma repeated, V from the previous pair)
        packed = _complete_last_macropixel(packed, y_offset, v_offset)

    def plane(offset: int, shift: float) -> np.ndarray:
        values = packed[:, offset::4].astype(np.float32)
        values -= shift
        return values

    u, v = plane(u_offset, 128.0), plane(v_offset, 128.0)
    chroma = _bt601_chroma(u, v)
    planes = []
    for luma_offset in (y_offset, y_offset + 2):  # even pixels, then odd pixels
        luma = plane(luma_offset, 16.0)
        luma *= _BT601_LUMA
        luma += 0.5  # round to nearest on the truncating cast below
        for term in chroma:
            channel = luma + term
            np.clip(channel, 0.0, 255.0, out=channel)
            planes.append(channel.astype(np.uint8))
    rgb = np.stack(planes, axis=-1).reshape(height, pairs * 2, 3)
    return rgb if pairs * 2 == width else np.ascontiguousarray(rgb[:, :width])


def _complete_last_macropixel(packed: np.ndarray, y_offset: int, v_offset: int) -> np.ndarray:
    """``(H, 2W)`` bytes of an odd-width 4:2:2 image -> ``(H, 2W + 2)`` with a full last
    macropixel: its second luma repeats the first, its V is the previous pair's (128 if none)."""
    height, row_bytes = packed.shape
    full = np.empty((height, row_bytes + 2), dtype=np.uint8)
    full[:, :row_bytes] = packed
    last = row_bytes - 2  # start of the incomplete macropixel
    full[:, last + (y_offset + 2)] = packed[:, last + y_offset]
    full[:, last + v_offset] = packed[:, last - 4 + v_offset] if last >= 4 else 128
    return full


def _uyvy(rows, width, _big):
    return _yuv422_to_rgb(rows, width, y_offset=1, u_offset=0, v_offset=2)


def _yuyv(rows, width, _big):
    return _yuv422_to_rgb(rows, width, y_offset=0, u_offset=1, v_offset=3)


#: encoding -> (bytes per pixel, converter(rows, width, is_bigendian) -> RGB array)
_RAW_DECODERS: Dict[str, Tuple[int, Callable[[np.ndarray, int, bool], np.ndarray]]] = {
    "rgb8": (3, _rgb8),
    "bgr8": (3, _bgr8),
    "rgba8": (4, _rgba8),
    "bgra8": (4, _bgra8),
    "mono8": (1, _mono8),
    "mono16": (2, _mono16),
    "yuv422": (2, _uyvy),
    "uyvy": (2, _uyvy),
    "yuv422_yuy2": (2, _yuyv),
    "yuyv": (2, _yuyv),
}

#: The ``sensor_msgs/msg/Image`` encodings :func:`decode_raw_image` accepts.
SUPPORTED_ENCODINGS = tuple(_RAW_DECODERS)


def decode_raw_image(
    data: Buffer,
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode the pixel buffer of a ``sensor_msgs/msg/Image`` to RGB.

    Args:
        data: pixel bytes (``bytes``, ``bytearray``, ``memoryview``, ``array.array('B')``, or a
            ``uint8`` numpy array), at least ``step * height`` bytes; bytes past that are ignored.
        height, width: image size in pixels.
        encoding: one of :data:`SUPPORTED_ENCODINGS` (case-insensitive).
        step: bytes per row including any padding; must be >= ``width * bytes_per_pixel``.
        is_bigendian: byte order of multi-byte samples (only ``mono16`` has any); 0/1 accepted.
        max_pixels: largest accepted ``width * height``.

    Returns:
        a new C-contiguous ``(height, width, 3)`` ``uint8`` RGB array (does not alias ``data``).

    Raises:
        ImageDecodeError: unknown encoding, zero size, too many pixels, ``step`` too small or
            ``data`` shorter than ``step * height``.
    """
    height, width, step = int(height), int(width), int(step)
    key = str(encoding).strip().lower()
    if key not in _RAW_DECODERS:
        raise ImageDecodeError(f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    bytes_per_pixel, convert = _RAW_DECODERS[key]
    what = f"{key} image {width}x{height} (step {step})"
    _check_pixels(width, height, max_pixels, what)
    if step < width * bytes_per_pixel:
        raise ImageDecodeError(
            f"{what}: step {step} is smaller than width*bytes_per_pixel = {width}*{bytes_per_pixel}"
            f" = {width * bytes_per_pixel}"
        )
    flat = _as_uint8(data)
    if flat.size < step * height:
        raise ImageDecodeError(f"{what}: data is truncated: {flat.size} bytes < step*height = {step * height}")
    rows = flat[: step * height].reshape(height, step)
    return convert(rows, width, bool(is_bigendian))


# --------------------------------------------------------------------------------------------
# Compressed (sensor_msgs/CompressedImage)
# --------------------------------------------------------------------------------------------

#: Compressed formats accepted by :func:`decode_compressed_image` (Pillow format names).
SUPPORTED_COMPRESSED_FORMATS = ("jpeg", "png")
_PIL_FORMATS = ("JPEG", "PNG")


def _declared_format(fmt: str) -> None:
    """Validate the ``format`` string of a CompressedImage.

    image_transport writes ``"jpeg"``, ``"png"`` or ``"<encoding>; jpeg compressed <encoding>"``;
    an empty string is accepted too (the codec is then detected from the data).
    """
    text = str(fmt or "").strip().lower()
    if "compresseddepth" in text:
        raise ImageDecodeError(
            f"compressed format {fmt!r} (compressedDepth transport) is not supported; "
            f"supported: {', '.join(SUPPORTED_COMPRESSED_FORMATS)}"
        )
    if text and not any(name in text for name in ("jpeg", "jpg", "png")):
        raise ImageDecodeError(
            f"unsupported compressed image format {fmt!r}; supported: {', '.join(SUPPORTED_COMPRESSED_FORMATS)}"
        )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image of any mode -> new contiguous ``(H, W, 3)`` uint8 RGB array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey PNG: keep the high byte
        grey = np.asarray(image, dtype=np.uint32)
        return _grey_to_rgb((np.clip(grey, 0, 65535) >> 8).astype(np.uint8))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)  # Pillow exports a fresh buffer; np.array makes it writable


def decode_compressed_image(data: Buffer, format: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG or PNG ``sensor_msgs/msg/CompressedImage`` payload to RGB.

    Args:
        data: the compressed bytes (any buffer, see :func:`decode_raw_image`).
        format: the message's ``format`` field, e.g. ``"jpeg"``, ``"png"``,
            ``"rgb8; jpeg compressed bgr8"`` or ``""``; the codec itself is detected from the data.
        max_pixels: largest accepted ``width * height``, checked from the header before decoding.

    Returns:
        a new C-contiguous ``(H, W, 3)`` ``uint8`` RGB array. Grey images are replicated to three
        channels, alpha is dropped, 16-bit grey keeps its high byte.

    Raises:
        ImageDecodeError: unsupported ``format``, empty/corrupt/truncated data, or too many pixels.
    """
    _declared_format(format)
    flat = _as_uint8(data)
    if flat.size == 0:
        raise ImageDecodeError(f"compressed image ({format!r}) has no data")
    what = f"compressed image ({format!r}, {flat.size} bytes)"
    try:
        image = Image.open(io.BytesIO(flat), formats=_PIL_FORMATS)  # reads the header only
        _check_pixels(image.width, image.height, max_pixels, f"{what} {image.format}")
        image.load()
    except ImageDecodeError:  # from _check_pixels (it is a ValueError too)
        raise
    except Image.DecompressionBombError as err:  # Pillow's own limit, checked in open() from the header
        raise ImageDecodeError(f"{what}: size exceeds max_pixels={max_pixels}: {err}") from err
    except UnidentifiedImageError as err:  # its message names the BytesIO object, not the data
        raise ImageDecodeError(f"{what}: cannot decode: not a JPEG or PNG image "
                               f"(data starts with {bytes(flat[:8]).hex(' ')})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"{what}: cannot decode: {err}") from err
    return _pil_to_rgb(image)


# --------------------------------------------------------------------------------------------
# Duck-typed messages
# --------------------------------------------------------------------------------------------


def is_compressed_msg(msg: Any) -> bool:
    """Whether ``msg`` looks like a ``CompressedImage`` (has ``format``, no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def decode_image_msg(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode any object with the attributes of ``sensor_msgs/msg/Image`` (``height``, ``width``,
    ``encoding``, ``step``, ``is_bigendian``, ``data``) or ``CompressedImage`` (``format``,
    ``data``): rclpy messages, rosbags-deserialised messages or test fakes.

    Returns:
        a new C-contiguous ``(H, W, 3)`` ``uint8`` RGB array.

    Raises:
        ImageDecodeError: the message cannot be decoded, or lacks the needed attributes.
    """
    try:
        if is_compressed_msg(msg):
            return decode_compressed_image(msg.data, msg.format, max_pixels=max_pixels)
        return decode_raw_image(
            msg.data,
            msg.height,
            msg.width,
            msg.encoding,
            msg.step,
            getattr(msg, "is_bigendian", False),
            max_pixels=max_pixels,
        )
    except AttributeError as err:
        raise ImageDecodeError(
            f"{type(msg).__name__} is neither a sensor_msgs/Image nor a CompressedImage: {err}"
        ) from err
