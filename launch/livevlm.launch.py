"""Launch the livevlm node (a lifecycle node that configures and activates itself by default).

    ros2 launch livevlm_ros livevlm.launch.py image:=/camera/image_raw
    ros2 launch livevlm_ros livevlm.launch.py compressed_image:=/camera/image_raw/compressed \
        params_file:=my_params.yaml      # with streams.camera.transport: compressed in the file
    ros2 launch livevlm_ros livevlm.launch.py namespace:=robot1 use_sim_time:=true log_level:=debug

Arguments: params_file (default: the package's config/livevlm.yaml, LLaVA-OneVision-0.5B on a
GPU; config/livevlm_tiny_cpu.yaml runs anywhere), namespace, node_name, image / compressed_image
(remaps of the default stream's topic, raw / compressed), use_sim_time, log_level, autostart
(false: leave the node unconfigured for a lifecycle manager). A params_file that does not
exist fails the launch at once (launch_ros alone would start the node with its defaults).

Sets FASTDDS_DEFAULT_PROFILES_FILE to the package's config/fastdds_large_images.xml (shared
memory with 16 MB segments: best-effort camera frames above ~0.5 MB are otherwise lost between
processes) unless it is already set. Publishers of large images should use the same profile.
"""

import os
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue


def _config_dir() -> Path:
    """share/livevlm_ros/config of the installed package, or config/ of this source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("livevlm_ros")) / "config"
    except Exception:  # not installed (running from a checkout), or AMENT_PREFIX_PATH unset
        return Path(__file__).resolve().parents[1] / "config"


def _check_params_file(context, *args, **kwargs):
    """Fail the launch at once when ``params_file`` is not a file: launch_ros would only warn and
    start the node with the built-in defaults (on a GPU host: the default model, wrong config)."""
    path = Path(LaunchConfiguration("params_file").perform(context)).expanduser()
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in _config_dir().glob("livevlm*.yaml")))
        raise FileNotFoundError(
            f"params_file:={path}: no such file. Pass a parameter file that exists, e.g. one of the "
            f"package's configs in {_config_dir()}: {shipped}")
    return []


def _fastdds_profile(context, *args, **kwargs):
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        return []
    profile = _config_dir() / "fastdds_large_images.xml"
    return [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))] if profile.is_file() else []


def generate_launch_description() -> LaunchDescription:
    config = _config_dir()
    args = [
        DeclareLaunchArgument("params_file", default_value=str(config / "livevlm.yaml"),
                              description="node parameter file (see config/*.yaml)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("node_name", default_value="livevlm", description="node name"),
        DeclareLaunchArgument("image", default_value="image",
                              description="sensor_msgs/Image topic of the default stream (transport raw)"),
        DeclareLaunchArgument("compressed_image", default_value="compressed_image",
                              description="sensor_msgs/CompressedImage topic of the default stream "
                              "(transport compressed)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay, simulation)"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error or fatal"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure + activate at start; false: wait for a lifecycle manager"),
    ]
    node = LifecycleNode(
        package="livevlm_ros",
        executable="livevlm_node",
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("compressed_image", LaunchConfiguration("compressed_image")),
        ],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription(args + [OpaqueFunction(function=_check_params_file),
                                     OpaqueFunction(function=_fastdds_profile), node])
