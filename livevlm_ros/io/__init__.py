"""ROS-free frame I/O: image message decoding, the frame sampler, offline frame sources, a
synthetic test scene.

Importing this package needs only numpy and Pillow; PyAV and rosbags are imported when a
video or bag source is opened.
"""

from .frame_sampler import FrameSampler, JumpPolicy, SampleDecision, Verdict
from .image_codec import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_COMPRESSED_FORMATS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed_image,
    decode_image_msg,
    decode_raw_image,
    is_compressed_msg,
)
from .sources import (
    BagSource,
    FolderSource,
    FrameSource,
    SourceError,
    VideoSource,
    open_source,
    stamp_to_seconds,
)
from .synthetic_scene import SceneEvent, ShapeTrack, SyntheticScene

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_COMPRESSED_FORMATS",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "decode_compressed_image",
    "decode_image_msg",
    "decode_raw_image",
    "is_compressed_msg",
    "BagSource",
    "FolderSource",
    "FrameSource",
    "SourceError",
    "FrameSampler",
    "JumpPolicy",
    "SampleDecision",
    "Verdict",
    "VideoSource",
    "open_source",
    "stamp_to_seconds",
    "SceneEvent",
    "ShapeTrack",
    "SyntheticScene",
]
