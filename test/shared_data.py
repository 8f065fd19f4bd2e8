"""Where the real recordings live: ../shared/data next to the repository, or $LIVEVLM_SHARED_DATA."""

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("LIVEVLM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
VIDEO = SHARED_DATA / "videos" / "car-detection.mp4"
CAR_BAG = SHARED_DATA / "rosbag2" / "car_detection_camera"
ARUCO_BAG = SHARED_DATA / "rosbag2" / "fiducials_aruco_images"
