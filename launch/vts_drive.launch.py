"""ros2 launch vts_drive vts_drive.launch.py [params_file:=...] [model:=...] [mode:=vts] [lifecycle:=true] ...

Parameters come from params_file (the installed config/params.yaml by
default); a launch argument given on the command line overrides its
parameter, one left empty keeps the file's value.

lifecycle:=true starts the managed node instead (configure loads the model,
activate subscribes); with autostart:=true (the default) this file configures
and then activates it, with autostart:=false it waits for a lifecycle manager
or `ros2 lifecycle set /vts_drive configure`.
"""

import yaml
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

OVERRIDES = {
    "camera_topics": "camera topics (TOPIC or NAME=TOPIC) as a YAML list, e.g. [/cam_front/image_raw, "
    "rear=/car/back/image_raw]",
    "compressed": "true: subscribe to <topic>/compressed",
    "frames_per_window": "frames per camera per window",
    "window_stride": "synchronised frames between window starts",
    "sync_slop_s": "largest stamp spread within a synchronised set (s)",
    "model": "shipped model name, checkpoint folder or hub id",
    "mode": "dense | vts | prumerge | prumerge+ | mod | vts+mod",
    "backend": "torch | onnxruntime | tensorrt",
    "device": "cpu | cuda",
    "input_qos": "camera subscriptions' QoS: sensor_data | best_effort | reliable",
    "input_qos_depth": "camera subscriptions' queue depth (0: the profile's)",
    "output_qos": "published topics' QoS: sensor_data | best_effort | reliable",
    "output_qos_depth": "published topics' queue depth (0: the profile's)",
}
LIFECYCLE = {
    "lifecycle": ("false", "true: the managed (lifecycle) node"),
    "autostart": ("true", "with lifecycle:=true, configure and activate it at launch"),
}


def node(context):
    overrides = {}
    for name in OVERRIDES:
        text = LaunchConfiguration(name).perform(context)
        if text != "":
            overrides[name] = yaml.safe_load(text)  # 4, 0.05, true and [a, b] keep their types
    parameters = [LaunchConfiguration("params_file").perform(context), overrides]
    if not _flag(context, "lifecycle"):
        return [
            Node(
                package="vts_drive",
                executable="vts_drive_node",
                name="vts_drive",
                output="screen",
                parameters=parameters,
            )
        ]
    managed = LifecycleNode(
        package="vts_drive",
        executable="vts_drive_lifecycle_node",
        name="vts_drive",
        namespace="",
        output="screen",
        parameters=parameters,
    )
    if not _flag(context, "autostart"):
        return [managed]

    def transition(transition_id):
        return EmitEvent(
            event=ChangeState(lifecycle_node_matcher=matches_action(managed), transition_id=transition_id)
        )

    # configuring -> inactive only: a node deactivated later (also inactive) stays so
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=managed,
            start_state="configuring",
            goal_state="inactive",
            entities=[transition(Transition.TRANSITION_ACTIVATE)],
        )
    )
    return [activate_when_configured, managed, transition(Transition.TRANSITION_CONFIGURE)]


def _flag(context, name):
    """A true/false launch argument; anything else stops the launch naming it."""
    text = LaunchConfiguration(name).perform(context).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={text}: expected true or false")
    return text == "true"


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("vts_drive"), "config", "params.yaml"])
    return LaunchDescription(
        [DeclareLaunchArgument("params_file", default_value=default_params, description="ROS 2 params YAML")]
        + [
            DeclareLaunchArgument(name, default_value="", description=text)
            for name, text in OVERRIDES.items()
        ]
        + [
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (default, text) in LIFECYCLE.items()
        ]
        + [OpaqueFunction(function=node)]
    )
