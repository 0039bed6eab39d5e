"""Quality of service of the node's topics, from a profile name and a queue depth.

A subscriber and a publisher meet only when their QoS is compatible: a
reliable subscriber never hears a best-effort publisher, which is what camera
drivers usually are (ROS's sensor-data profile). So the node's inputs and
outputs each take a profile, as Isaac ROS nodes do: `sensor_data` and
`best_effort` (both best effort, volatile; ROS's sensor-data profile keeps 5)
or `reliable` (volatile; ROS's default profile keeps 10), and a depth, where 0
keeps the profile's own. Each transport turns the QosSpec into its QoS type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vts_drive.errors import InputError

if TYPE_CHECKING:
    from vts_drive.ros.params import NodeParams

PROFILE_DEPTH = {"sensor_data": 5, "best_effort": 5, "reliable": 10}  # the depth ROS's profile keeps
QOS_PROFILES = tuple(PROFILE_DEPTH)


@dataclass(frozen=True)
class QosSpec:
    reliable: bool  # else best effort; durability is always volatile
    depth: int  # keep the last `depth` samples


def qos_spec(profile: str, depth: int = 0, parameter: str = "qos") -> QosSpec:
    """The QoS a profile name and depth (0: the profile's) ask for; `parameter` names them in errors."""
    if profile not in PROFILE_DEPTH:
        raise InputError(f"parameter {parameter}: {profile!r} is not one of {', '.join(QOS_PROFILES)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise InputError(
            f"parameter {parameter}_depth: must be a whole number >= 0 (0: the profile's), got {depth!r}"
        )
    return QosSpec(reliable=profile == "reliable", depth=depth or PROFILE_DEPTH[profile])


def input_qos(params: NodeParams) -> QosSpec:
    """The camera subscriptions' QoS (questions are always reliable, keep-all)."""
    return qos_spec(params.input_qos, params.input_qos_depth, parameter="input_qos")


def output_qos(params: NodeParams) -> QosSpec:
    """The QoS of everything the node publishes (reliable by default: ROS's default profile)."""
    return qos_spec(params.output_qos, params.output_qos_depth, parameter="output_qos")
