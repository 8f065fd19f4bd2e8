"""livevlm_ros.io.sources: timestamp sampling, video/bag/folder sources on real recordings, errors."""

import math

import numpy as np
import pytest
from PIL import Image

from livevlm_ros.io.sources import (
    BagSource,
    FolderSource,
    SourceError,
    VideoSource,
    open_source,
)
from shared_data import SHARED_DATA, VIDEO, CAR_BAG, ARUCO_BAG

RAW_TOPIC = "/camera/image_raw"
JPEG_TOPIC = "/camera/image_raw/compressed"
BAG_T0 = 1_700_000_000.0

needs_data = pytest.mark.skipif(
    not VIDEO.is_file(), reason=f"shared data not found at {SHARED_DATA} (set LIVEVLM_SHARED_DATA)"
)


# ------------------------------------------------------------------------------------------
# Video
# ------------------------------------------------------------------------------------------


@needs_data
def test_video_at_2_fps():
    source = open_source(VIDEO, fps=2.0)
    assert isinstance(source, VideoSource)
    assert source.native_frames == 377 and source.duration_s == pytest.approx(30.16, abs=0.05)
    assert (source.width, source.height) == (768, 432)
    frames = list(source)
    times = [t for t, _ in frames]
    assert len(frames) == source.expected_frames == 61
    assert times[:5] == pytest.approx([0.0, 0.56, 1.04, 1.52, 2.0])
    assert times[-1] == pytest.approx(30.0)
    assert all(0.4 <= b - a <= 0.6 for a, b in zip(times, times[1:]))
    for _, rgb in frames[:3]:
        assert rgb.shape == (432, 768, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert list(source)[5][0] == times[5]  # re-iterable


@needs_data
def test_video_every_frame():
    times = [t for t, _ in open_source(VIDEO)]
    assert len(times) == 377
    assert np.allclose(np.diff(times), 0.08)


# ------------------------------------------------------------------------------------------
# Bags
# ------------------------------------------------------------------------------------------


@needs_data
def test_bag_raw_topic():
    source = open_source(CAR_BAG, topic=RAW_TOPIC, fps=2.0)
    assert isinstance(source, BagSource) and source.msgtype == "sensor_msgs/msg/Image"
    frames = list(source)
    assert len(frames) == source.native_frames == 38  # 1.25 Hz: every message kept at 2 fps
    times = np.array([t for t, _ in frames])
    assert times[0] == BAG_T0
    np.testing.assert_allclose(times - BAG_T0, 0.8 * np.arange(38), atol=1e-6)
    assert frames[0][1].shape == (216, 384, 3)


@needs_data
def test_bag_compressed_topic():
    source = open_source(CAR_BAG, topic=JPEG_TOPIC, fps=2.0)
    assert source.msgtype == "sensor_msgs/msg/CompressedImage" and source.native_frames == 377
    frames = list(source)
    times = np.array([t for t, _ in frames])
    assert len(frames) == source.expected_frames == 61
    assert times[0] == BAG_T0 and times[-1] == pytest.approx(BAG_T0 + 30.0)
    np.testing.assert_allclose(times[:3] - BAG_T0, [0.0, 0.56, 1.04], atol=1e-6)
    assert frames[0][1].shape == (432, 768, 3)


@needs_data
def test_bag_raw_frames_match_video_colours():
    """The bgr8 topic decodes to the video's colours (a channel swap would not match)."""
    raw = {round(t - BAG_T0, 2): rgb for t, rgb in open_source(CAR_BAG, topic=RAW_TOPIC)}
    video = {round(t, 2): rgb for t, rgb in open_source(VIDEO, fps=0.5)}
    t = 16.0  # the red car is in view
    reference = np.asarray(Image.fromarray(video[t]).resize((384, 216), Image.BOX)).astype(int)
    frame = raw[t].astype(int)
    error = np.abs(frame - reference).mean()
    swapped = np.abs(frame[..., ::-1] - reference).mean()
    assert error < 4 and error < swapped / 2, (error, swapped)


@needs_data
def test_bag_single_image_topic_is_picked():
    source = open_source(ARUCO_BAG)
    assert source.topic == "/raspicam_node/image/compressed"
    ((t, rgb),) = list(source)
    assert t == pytest.approx(1491682360.314, abs=1e-3)  # header stamp, not bag time
    assert rgb.shape == (960, 1280, 3)


@needs_data
def test_bag_mcap_file_directly():
    source = open_source(ARUCO_BAG / "fiducials_aruco_images.mcap")
    assert source.native_frames == 1


@needs_data
def test_bag_topic_errors_list_image_topics():
    with pytest.raises(SourceError, match="2 image topics") as info:
        open_source(CAR_BAG)
    assert RAW_TOPIC in str(info.value) and JPEG_TOPIC in str(info.value)
    with pytest.raises(SourceError, match="no topic '/nope'.*image topics: /camera/image_raw"):
        open_source(CAR_BAG, topic="/nope")
    with pytest.raises(SourceError, match="CameraInfo, not an image type"):
        open_source(ARUCO_BAG, topic="/raspicam_node/camera_info")


def write_bag(path, stamps_and_times, storage="mcap"):
    """A rosbag2 with one bgr8 Image topic '/cam': (header stamp s, bag time s, grey value) each."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    Image_ = typestore.types["sensor_msgs/msg/Image"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        connection = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=typestore)
        for stamp, bag_time, value in stamps_and_times:
            sec = int(stamp)
            header = Header(stamp=Time(sec=sec, nanosec=int(round((stamp - sec) * 1e9))), frame_id="cam")
            data = np.full(4 * 6 * 3, value, dtype=np.uint8)
            msg = Image_(header=header, height=4, width=6, encoding="bgr8", is_bigendian=0, step=18, data=data)
            writer.write(connection, int(bag_time * 1e9), typestore.serialize_cdr(msg, "sensor_msgs/msg/Image"))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_zero_stamps_fall_back_to_bag_time(tmp_path, storage):
    write_bag(tmp_path / "bag", [(0.0, 100.0, 10), (0.0, 101.0, 20), (0.0, 102.5, 30)], storage)
    frames = list(open_source(tmp_path / "bag"))
    assert [t for t, _ in frames] == [100.0, 101.0, 102.5]
    assert [int(rgb[0, 0, 0]) for _, rgb in frames] == [10, 20, 30]


def test_bag_stamps_going_back_are_dropped(tmp_path):
    write_bag(tmp_path / "bag", [(5.0, 100.0, 10), (5.5, 101.0, 20), (5.25, 102.0, 30), (6.0, 103.0, 40)])
    source = open_source(tmp_path / "bag")
    frames = list(source)
    assert [t for t, _ in frames] == [5.0, 5.5, 6.0]
    assert [int(rgb[0, 0, 0]) for _, rgb in frames] == [10, 20, 40]
    assert source.out_of_order == 1


def test_ros1_bag_with_compressed_images(tmp_path):
    """A ROS 1 .bag (rosbags reads those too): CompressedImage PNGs with header stamps."""
    import io

    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS1_NOETIC)
    msgtype = "sensor_msgs/msg/CompressedImage"
    Compressed = typestore.types[msgtype]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    path = tmp_path / "camera.bag"
    with Writer(path) as writer:
        connection = writer.add_connection("/cam/compressed", msgtype, typestore=typestore)
        for k in range(3):
            buffer = io.BytesIO()
            Image.fromarray(np.full((6, 8, 3), 50 * k, np.uint8)).save(buffer, format="PNG")
            header = Header(seq=k, stamp=Time(sec=20 + k, nanosec=250_000_000), frame_id="cam")
            msg = Compressed(header=header, format="png", data=np.frombuffer(buffer.getvalue(), np.uint8))
            writer.write(connection, (10 + k) * 10**9, typestore.serialize_ros1(msg, msgtype))
    source = open_source(path)
    frames = list(source)
    assert source.topic == "/cam/compressed" and source.native_frames == 3
    assert [t for t, _ in frames] == [20.25, 21.25, 22.25]
    assert [int(rgb[0, 0, 0]) for _, rgb in frames] == [0, 50, 100]


# ------------------------------------------------------------------------------------------
# Folders and dispatch
# ------------------------------------------------------------------------------------------


def write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for value, name in enumerate(names):
        Image.fromarray(np.full((8, 12, 3), value * 20, dtype=np.uint8)).save(folder / name)


def test_folder_natural_order_and_folder_fps(tmp_path):
    names = ["frame1.png", "frame2.jpg", "frame10.png", "frame3.PNG"]
    write_images(tmp_path / "imgs", names)
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    source = open_source(tmp_path / "imgs", folder_fps=2.0)
    assert isinstance(source, FolderSource) and source.native_frames == 4
    assert [f.name for f in source.files] == ["frame1.png", "frame2.jpg", "frame3.PNG", "frame10.png"]
    frames = list(source)
    assert [t for t, _ in frames] == [0.0, 0.5, 1.0, 1.5]
    assert frames[0][1].shape == (8, 12, 3)
    assert [t for t, _ in open_source(tmp_path / "imgs", fps=1.0, folder_fps=2.0)] == [0.0, 1.0]


def test_folder_single_image_file(tmp_path):
    write_images(tmp_path, ["one.png"])
    ((t, rgb),) = list(open_source(tmp_path / "one.png"))
    assert t == 0.0 and rgb.shape == (8, 12, 3)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no .jpg/.jpeg/.png images"):
        open_source(tmp_path / "empty")
    write_images(tmp_path / "imgs", ["a.png"])
    with pytest.raises(SourceError, match="folder_fps"):
        FolderSource(tmp_path / "imgs", folder_fps=0)


def test_dispatch_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file or directory"):
        open_source(tmp_path / "missing.mp4")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="unsupported file type '.txt'"):
        open_source(tmp_path / "notes.txt")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open video"):
        open_source(tmp_path / "broken.mp4")
    (tmp_path / "broken.mcap").write_bytes(b"not a bag")
    with pytest.raises(SourceError, match="cannot open bag"):
        open_source(tmp_path / "broken.mcap")


@needs_data
def test_topic_for_a_video_is_an_error():
    with pytest.raises(SourceError, match="not a bag"):
        open_source(VIDEO, topic="/camera")
