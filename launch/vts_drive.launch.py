"""ros2 launch vts_drive vts_drive.launch.py [params_file:=...] [model:=...] [mode:=vts] ...

Parameters come from params_file (the installed config/params.yaml by
default); a launch argument given on the command line overrides its
parameter, one left empty keeps the file's value.
"""
import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

OVERRIDES = {
    "camera_topics": "camera topics as a YAML list, e.g. [/cam_front/image_raw]",
    "compressed": "true: subscribe to <topic>/compressed",
    "frames_per_window": "frames per camera per window",
    "window_stride": "synchronised frames between window starts",
    "sync_slop_s": "largest stamp spread within a synchronised set (s)",
    "model": "shipped model name, checkpoint folder or hub id",
    "mode": "dense | vts | prumerge | prumerge+ | mod | vts+mod",
    "backend": "torch | onnxruntime | tensorrt",
    "device": "cpu | cuda",
    "qos": "sensor_data | reliable",
}


def node(context):
    overrides = {}
    for name in OVERRIDES:
        text = LaunchConfiguration(name).perform(context)
        if text != "":
            overrides[name] = yaml.safe_load(text)  # 4, 0.05, true and [a, b] keep their types
    return [
        Node(
            package="vts_drive",
            executable="vts_drive_node",
            name="vts_drive",
            output="screen",
            parameters=[LaunchConfiguration("params_file").perform(context), overrides],
        )
    ]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("vts_drive"), "config", "params.yaml"])
    return LaunchDescription(
        [DeclareLaunchArgument("params_file", default_value=default_params, description="ROS 2 params YAML")]
        + [DeclareLaunchArgument(name, default_value="", description=text) for name, text in OVERRIDES.items()]
        + [OpaqueFunction(function=node)]
    )
