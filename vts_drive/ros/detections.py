"""A report's risk box as vision_msgs/Detection2DArray, in any message binding.

A report's box is normalised to its camera's image, while a Detection2D is in
pixels of one image, the one its header names. So the box is placed on the
risk camera's newest frame in the window the report describes: that frame's
stamp, its camera's frame_id and its size. rviz, Foxglove and detection
consumers then match it to that image by header, as for any ROS detector.

A report without a box (no risk, or a box the model did not get right) still
gives an array, empty, so a viewer clears the previous box.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from vts_drive.ros import RosMessage
from vts_drive.window import FrameWindow

# The message types a Detection2DArray is built from; each binding looks them up by these names.
DETECTION_MESSAGES = (
    "builtin_interfaces/msg/Time",
    "std_msgs/msg/Header",
    "geometry_msgs/msg/Point",
    "geometry_msgs/msg/Quaternion",
    "geometry_msgs/msg/Pose",
    "geometry_msgs/msg/PoseWithCovariance",
    "vision_msgs/msg/Point2D",
    "vision_msgs/msg/Pose2D",
    "vision_msgs/msg/BoundingBox2D",
    "vision_msgs/msg/ObjectHypothesis",
    "vision_msgs/msg/ObjectHypothesisWithPose",
    "vision_msgs/msg/Detection2D",
    "vision_msgs/msg/Detection2DArray",
)


@dataclass(frozen=True)
class RiskDetection:
    """What ~/risk_detections and ~/overlay say about one report."""

    camera: str  # the risk camera; the window's first when the report names none of the window's cameras
    stamp_ns: int  # header stamp of that camera's newest frame in the window
    frame_id: str  # header frame_id of that camera's images
    width: int  # that frame's size in pixels
    height: int
    present: bool  # whether the report sees a risk at all
    object: str | None  # the risk object, the detection's class
    caption: str
    box: tuple[float, float, float, float] | None  # [x1, y1, x2, y2] in pixels of that frame; None: no box


def risk_detection(report: dict, window: FrameWindow, frame_ids: Mapping[str, str]) -> RiskDetection:
    """The detection of a report (vts_drive.report/1, as a dict) about `window`.
    frame_ids: camera -> frame_id of its images (a camera missing gets "")."""
    risk = report["risk"]
    named = risk["present"] and risk["camera"] in window.cameras
    camera = risk["camera"] if named else window.cameras[0]
    width, height = window.image_size(camera)
    box = None
    if named and risk["bbox"] is not None:
        x1, y1, x2, y2 = risk["bbox"]
        box = (x1 * width, y1 * height, x2 * width, y2 * height)
    return RiskDetection(
        camera=camera,
        stamp_ns=window.stamps_ns[window.cameras.index(camera)][-1],
        frame_id=frame_ids.get(camera, ""),
        width=width,
        height=height,
        present=risk["present"],
        object=risk["object"],
        caption=risk["caption"],
        box=box,
    )


def message_types(lookup: Callable[[str], type]) -> SimpleNamespace:
    """A binding's constructors of DETECTION_MESSAGES, by short name (Detection2D, Pose2D, ...);
    lookup: ROS type name -> that binding's message class."""
    return SimpleNamespace(**{name.rsplit("/", 1)[1]: lookup(name) for name in DETECTION_MESSAGES})


def to_detection_array(detection: RiskDetection, types: SimpleNamespace) -> RosMessage:
    """A vision_msgs/Detection2DArray built with `types` (message_types of a binding).
    Every field is given, since rosbags' classes have no defaults. The score is 0: the
    report (vts_drive.report/1) carries no confidence for its box."""
    sec, nanosec = divmod(detection.stamp_ns, 1_000_000_000)
    header = types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=detection.frame_id)
    if detection.box is None:
        return types.Detection2DArray(header=header, detections=[])
    x1, y1, x2, y2 = detection.box
    identity = types.Pose(
        position=types.Point(x=0.0, y=0.0, z=0.0), orientation=types.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)
    )
    hypothesis = types.ObjectHypothesisWithPose(
        hypothesis=types.ObjectHypothesis(class_id=detection.object or "", score=0.0),
        pose=types.PoseWithCovariance(pose=identity, covariance=np.zeros(36)),
    )
    bbox = types.BoundingBox2D(
        center=types.Pose2D(position=types.Point2D(x=(x1 + x2) / 2, y=(y1 + y2) / 2), theta=0.0),
        size_x=x2 - x1,
        size_y=y2 - y1,
    )
    return types.Detection2DArray(
        header=header, detections=[types.Detection2D(header=header, results=[hypothesis], bbox=bbox, id="")]
    )
