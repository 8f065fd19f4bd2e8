"""Offline frame sources: video files, rosbag2/ROS 1 bags and image folders.

A :class:`FrameSource` is a re-iterable sequence of ``(timestamp_s, rgb)`` pairs, where
``timestamp_s`` is a ``float`` in seconds (the source's own clock: video presentation time,
message header stamps, or index / folder fps) and ``rgb`` is a new ``(H, W, 3)`` ``uint8`` RGB
array. Frames are sampled by timestamp *before* they are decoded (so sampling a 30 fps video
at 1 fps only converts one frame in thirty), with :class:`~livevlm_ros.io.frame_sampler.FrameSampler`,
the sampler the node uses on header stamps: a bag run offline keeps the frames the node keeps
when the same bag is replayed into it. Frames whose time goes backwards are dropped, counted
(:attr:`FrameSource.out_of_order`) and reported to an ``on_rejected`` callback.

``open_source(path, topic=None, fps=None)`` picks the right source for a path. Heavy libraries
(PyAV, rosbags) are imported only when a source of that kind is opened.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from .frame_sampler import FrameSampler, JumpPolicy, Verdict
from .image_codec import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_compressed_image, decode_image_msg

__all__ = [
    "Frame",
    "FrameSource",
    "SourceError",
    "VideoSource",
    "BagSource",
    "FolderSource",
    "open_source",
    "stamp_to_seconds",
    "IMAGE_MSGTYPES",
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "BAG_SUFFIXES",
]

#: One sampled frame: (timestamp in seconds, new (H, W, 3) uint8 RGB array).
Frame = Tuple[float, np.ndarray]
#: A frame not decoded yet: (timestamp in seconds, zero-argument decoder returning the RGB array).
LazyFrame = Tuple[float, Callable[[], np.ndarray]]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BAG_SUFFIXES = (".mcap", ".db3", ".bag")
#: Message types a bag source can decode.
IMAGE_MSGTYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


class SourceError(ValueError):
    """A path cannot be opened as a frame source (missing, unsupported, no/ambiguous topic)."""


# --------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------


class FrameSource:
    """Re-iterable source of ``(timestamp_s, rgb)`` frames sampled at ``fps``.

    Subclasses implement :meth:`_lazy_frames` (timestamps plus decoders, every frame of the
    source) and set :attr:`duration_s` / :attr:`native_frames` when they are known.

    Attributes:
        name: human-readable description (path, topic).
        fps: sampling rate in frames per second of timestamp time (``None``: every frame).
        duration_s: seconds from the first to the last frame, ``None`` if unknown.
        native_frames: frames in the source before sampling, ``None`` if unknown.
        out_of_order: frames the last iteration dropped because their time went back before the
            last kept frame (or was not a finite number).
    """

    name: str = "frames"
    duration_s: Optional[float] = None
    native_frames: Optional[int] = None

    def __init__(self, fps: Optional[float] = None) -> None:
        if fps is not None and (not math.isfinite(fps) or fps < 0):
            raise ValueError(f"fps must be None, 0 or a positive number, got {fps!r}")
        self.fps = fps
        self.out_of_order = 0

    def sampler(self) -> FrameSampler:
        """A fresh sampler at :attr:`fps`; frames going back in time are rejected (the engine
        needs non-decreasing times; a looping recording is not a thing offline)."""
        return FrameSampler(self.fps or 0.0, JumpPolicy.REJECT)

    def _lazy_frames(self) -> Iterator[LazyFrame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, on_bad_frame: Optional[Callable[[float, ImageDecodeError], None]] = None,
               on_rejected: Optional[Callable[[float, str], None]] = None) -> Iterator[Frame]:
        """Iterate the sampled frames.

        Args:
            on_bad_frame: called with ``(timestamp_s, error)`` for a frame that fails to decode,
                which is then skipped (and does not delay the next one); ``None`` (the default,
                and plain iteration): the :class:`~livevlm_ros.io.image_codec.ImageDecodeError`
                is raised.
            on_rejected: called with ``(timestamp_s, reason)`` for a frame dropped because its
                time went backwards (counted in :attr:`out_of_order` either way).
        """
        sampler = self.sampler()
        self.out_of_order = 0
        for timestamp, decode in self._lazy_frames():
            decision = sampler.evaluate(timestamp)
            if decision.verdict is Verdict.REJECT:
                self.out_of_order += 1
                if on_rejected is not None:
                    on_rejected(timestamp, decision.reason)
                continue
            if not decision.keep:
                continue
            try:
                rgb = decode()
            except ImageDecodeError as err:
                if on_bad_frame is None:
                    raise
                on_bad_frame(timestamp, err)
                continue
            sampler.commit(decision)
            yield timestamp, rgb

    @property
    def expected_frames(self) -> Optional[int]:
        """Estimated number of frames an iteration yields (for progress bars), ``None`` if unknown."""
        return self.sampler().expected_count(self.duration_s, self.native_frames)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fps={self.fps})"


# --------------------------------------------------------------------------------------------
# Video (PyAV)
# --------------------------------------------------------------------------------------------


class VideoSource(FrameSource):
    """Frames of the first video stream of a file, decoded with PyAV (threaded decoding).

    Timestamps are presentation times, ``pts * time_base`` seconds (typically starting at 0).
    """

    def __init__(self, path, fps: Optional[float] = None) -> None:
        super().__init__(fps)
        import av  # noqa: PLC0415 (heavy, only needed here)

        self.path = Path(path)
        self.name = str(self.path)
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise SourceError(f"{self.path}: no video stream")
                stream = container.streams.video[0]
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                self.native_frames = stream.frames or None
                self.duration_s = self._duration(container, stream)
        except av.FFmpegError as err:
            raise SourceError(f"{self.path}: cannot open video: {err}") from err

    @staticmethod
    def _duration(container, stream) -> Optional[float]:
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1e6
        return None

    def _lazy_frames(self) -> Iterator[LazyFrame]:
        import av  # noqa: PLC0415

        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            try:
                for index, frame in enumerate(container.decode(stream)):
                    timestamp = float(frame.pts * stream.time_base) if frame.pts is not None else index / rate
                    yield timestamp, (lambda f=frame: np.ascontiguousarray(f.to_ndarray(format="rgb24")))
            except av.FFmpegError as err:
                raise SourceError(f"{self.path}: video decoding failed: {err}") from err


# --------------------------------------------------------------------------------------------
# Bags (rosbags)
# --------------------------------------------------------------------------------------------


def stamp_to_seconds(stamp) -> float:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``; ROS 1 style ``secs``/``nsecs`` too) -> seconds."""
    sec = getattr(stamp, "sec", None)
    if sec is None:
        return float(stamp.secs) + float(stamp.nsecs) * 1e-9
    return float(sec) + float(stamp.nanosec) * 1e-9


def bag_path(path: Path) -> Path:
    """The path to hand to ``AnyReader``: a rosbag2 directory (with ``metadata.yaml``), or a
    single .mcap/.db3/.bag file (a directory without metadata holding one .mcap: that file)."""
    if path.is_file() and path.suffix in (".mcap", ".db3") and (path.parent / "metadata.yaml").is_file():
        return path.parent
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        files = sorted(path.glob("*.mcap"))
        if len(files) != 1:
            raise SourceError(f"{path}: no metadata.yaml and {len(files)} .mcap files; pass the bag file itself")
        return files[0]
    return path


@contextmanager
def open_bag_reader(path: Path):
    """An open ``rosbags`` ``AnyReader`` for ``path``; open failures become :class:`SourceError`."""
    from rosbags.highlevel import AnyReader, AnyReaderError  # noqa: PLC0415 (heavy, only needed here)
    from rosbags.typesys import Stores, get_typestore  # noqa: PLC0415

    # The typestore is used only for bags without embedded message definitions (old .db3 bags).
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except (AnyReaderError, OSError) as err:
        raise SourceError(f"{path}: cannot open bag: {err}") from err
    try:
        yield reader
    finally:
        reader.close()


class BagSource(FrameSource):
    """Image messages of one topic of a rosbag2 directory (.mcap or .db3), a bare .mcap file or
    a ROS 1 .bag file, read with ``rosbags``.

    Timestamps are the messages' header stamps in seconds, or the bag (receive) time when a
    stamp is zero. ``topic=None`` picks the bag's only image topic.

    Attributes:
        topic, msgtype: the topic read and its type (one of :data:`IMAGE_MSGTYPES`).
        image_topics: every image topic in the bag, ``{topic: msgtype}``.
        max_pixels: largest image accepted by the decoder.
    """

    def __init__(
        self,
        path,
        topic: Optional[str] = None,
        fps: Optional[float] = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(fps)
        self.path = bag_path(Path(path))
        self.max_pixels = max_pixels
        with open_bag_reader(self.path) as reader:
            self.image_topics = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_MSGTYPES}
            self.topic = self._pick_topic(topic, {c.topic: c.msgtype for c in reader.connections})
            self.msgtype = self.image_topics[self.topic]
            self.native_frames = sum(c.msgcount for c in reader.connections if c.topic == self.topic) or None
            # The bag's time span: a close, cheap estimate of the topic's span (for progress bars).
            self.duration_s = reader.duration / 1e9 if (self.native_frames or 0) > 1 else 0.0
        self.name = f"{path}:{self.topic}"

    def _pick_topic(self, topic: Optional[str], all_topics: dict) -> str:
        listing = ", ".join(f"{t} [{m}]" for t, m in sorted(self.image_topics.items())) or "none"
        if topic is None:
            if len(self.image_topics) != 1:
                raise SourceError(
                    f"{self.path}: {len(self.image_topics)} image topics, pick one with a topic "
                    f"(image topics: {listing})"
                )
            return next(iter(self.image_topics))
        if topic not in self.image_topics:
            problem = (
                f"topic {topic!r} has type {all_topics[topic]}, not an image type"
                if topic in all_topics
                else f"no topic {topic!r}"
            )
            raise SourceError(f"{self.path}: {problem} (image topics: {listing})")
        return topic

    def _lazy_frames(self) -> Iterator[LazyFrame]:
        from rosbags.highlevel import AnyReaderError  # noqa: PLC0415

        with open_bag_reader(self.path) as reader:
            connections = [c for c in reader.connections if c.topic == self.topic]
            try:
                for connection, bag_time_ns, raw in reader.messages(connections=connections):
                    msg = reader.deserialize(raw, connection.msgtype)
                    stamp = stamp_to_seconds(msg.header.stamp)
                    timestamp = stamp if stamp > 0 else bag_time_ns / 1e9
                    yield timestamp, (lambda m=msg: decode_image_msg(m, self.max_pixels))
            except AnyReaderError as err:  # corrupt message or storage: the rest is unreadable
                raise SourceError(f"{self.path}: reading {self.topic} failed: {err}") from err


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


def _natural_key(path: Path) -> List:
    """Sort key putting ``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class FolderSource(FrameSource):
    """JPEG/PNG files of a folder (or a single image file) in natural name order.

    Timestamps are ``index / folder_fps`` seconds (the files carry no time).
    """

    def __init__(
        self,
        path,
        fps: Optional[float] = None,
        folder_fps: float = 1.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(fps)
        if not (folder_fps > 0 and math.isfinite(folder_fps)):
            raise SourceError(f"folder_fps must be a positive number, got {folder_fps!r}")
        self.path = Path(path)
        self.folder_fps = float(folder_fps)
        self.max_pixels = max_pixels
        self.files = self._list_images(self.path)
        self.native_frames = len(self.files)
        self.duration_s = (len(self.files) - 1) / self.folder_fps
        self.name = str(self.path)

    @staticmethod
    def _list_images(path: Path) -> List[Path]:
        if path.is_file():
            return [path]
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key
        )
        if not files:
            raise SourceError(f"{path}: folder holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return files

    def _lazy_frames(self) -> Iterator[LazyFrame]:
        for index, file in enumerate(self.files):
            yield index / self.folder_fps, (lambda f=file: self._decode(f))

    def _decode(self, file: Path) -> np.ndarray:
        try:
            return decode_compressed_image(file.read_bytes(), file.suffix.lstrip("."), self.max_pixels)
        except ImageDecodeError as err:
            raise ImageDecodeError(f"{file}: {err}") from err


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def _looks_like_bag_dir(path: Path) -> bool:
    return (path / "metadata.yaml").is_file() or any(path.glob("*.mcap")) or any(path.glob("*.db3"))


def open_source(
    path,
    topic: Optional[str] = None,
    fps: Optional[float] = None,
    *,
    folder_fps: float = 1.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FrameSource:
    """Open ``path`` as the right :class:`FrameSource`.

    * a directory with ``metadata.yaml`` (or holding .mcap/.db3 files), or a .mcap/.db3/.bag
      file -> :class:`BagSource` (``topic`` picks the image topic);
    * a video file (:data:`VIDEO_SUFFIXES`) -> :class:`VideoSource`;
    * a directory of images, or one .jpg/.png file -> :class:`FolderSource` (``folder_fps``).

    Args:
        fps: sampling rate (frames per second of timestamp time); ``None``/``0``: every frame.

    Raises:
        SourceError: the path is missing or of an unsupported kind, or the topic is wrong.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    is_bag = _looks_like_bag_dir(path) if path.is_dir() else path.suffix.lower() in BAG_SUFFIXES
    if topic is not None and not is_bag:
        raise SourceError(f"{path}: a topic ({topic!r}) was given but this is not a bag")
    if is_bag:
        return BagSource(path, topic=topic, fps=fps, max_pixels=max_pixels)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return FolderSource(path, fps=fps, folder_fps=folder_fps, max_pixels=max_pixels)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoSource(path, fps=fps)
    raise SourceError(
        f"{path}: unsupported file type {path.suffix!r}; expected a video ({' '.join(VIDEO_SUFFIXES)}), "
        f"a bag ({' '.join(BAG_SUFFIXES)} or a rosbag2 directory) or images ({' '.join(IMAGE_SUFFIXES)})"
    )
