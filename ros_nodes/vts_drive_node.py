"""The rclpy nodes `vts_drive`: ROS subscriptions and publishers around NodeCore.

VtsDriveNode loads the model and subscribes as it starts. VtsDriveLifecycleNode
is the managed variant (as Isaac ROS and Nav2 nodes are): configure loads the
model and creates the publishers, activate starts the worker and subscribes,
deactivate unsubscribes and stops the worker, cleanup drops the model. A
launch file or lifecycle manager then decides when the GPU is taken and when
frames flow.

Everything with logic lives in vts_drive.ros (parameters, image conversion,
sync, windows, queueing, diagnostics, detections, overlay, QoS) and is tested
without ROS; this file only declares parameters and wires topics. It is the one
module that imports rclpy.
"""

from __future__ import annotations

import array
import sys
import time
from collections.abc import Callable
from functools import partial
from importlib import import_module
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection2DArray

from vts_drive.errors import EXIT_INPUT_ERROR, InputError
from vts_drive.ros.detections import RiskDetection, message_types, to_detection_array
from vts_drive.ros.diagnostics import to_diagnostic_array
from vts_drive.ros.images import rgb_to_image_fields
from vts_drive.ros.node_core import NodeCore, Outputs
from vts_drive.ros.params import NODE_NAME, NodeParams, declarations, params_from_dict, params_from_ros_node
from vts_drive.ros.qos import QosSpec, input_qos, output_qos

if TYPE_CHECKING:
    from vts_drive.pipeline import Pipeline

ROS_DIAGNOSTIC_TYPES = SimpleNamespace(
    Time=Time,
    Header=Header,
    KeyValue=KeyValue,
    DiagnosticStatus=DiagnosticStatus,
    DiagnosticArray=DiagnosticArray,
    level=lambda level: bytes([level]),
)


def ros_message_class(name: str) -> type:
    """rclpy's class of a ROS type name: vision_msgs/msg/Detection2D -> vision_msgs.msg.Detection2D."""
    module, _, message = name.rpartition("/")
    return getattr(import_module(module.replace("/", ".")), message)


ROS_DETECTION_TYPES = message_types(ros_message_class)
# Questions: keep all, so a burst is held back by the publisher rather than overwritten; each gets a reply.
QUESTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def ros_qos(spec: QosSpec) -> QoSProfile:
    """The rclpy profile of a QosSpec (keep last, volatile)."""
    reliability = ReliabilityPolicy.RELIABLE if spec.reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=spec.depth,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


def overlay_message(rgb: np.ndarray, detection: RiskDetection) -> Image:
    """An rgb8 Image stamped as the frame it was drawn on; data as array('B'), which rclpy takes without
    checking every byte."""
    fields = rgb_to_image_fields(rgb)
    fields["data"] = array.array("B", fields["data"].tobytes())
    sec, nanosec = divmod(detection.stamp_ns, 1_000_000_000)
    return Image(header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=detection.frame_id), **fields)


def create_outputs(create_publisher: Callable[..., Any], qos: QoSProfile) -> tuple[Outputs, list]:
    """The node's publishers (made with create_publisher: plain or lifecycle) and NodeCore's Outputs on them."""
    description = create_publisher(String, "~/scene_description", qos)
    report = create_publisher(String, "~/risk_qa", qos)
    answer = create_publisher(String, "~/answer", qos)
    detections = create_publisher(Detection2DArray, "~/risk_detections", qos)
    overlay = create_publisher(Image, "~/overlay", qos)
    diagnostics = create_publisher(DiagnosticArray, "/diagnostics", qos)
    outputs = Outputs(
        description=lambda text: description.publish(String(data=text)),
        report=lambda text: report.publish(String(data=text)),
        answer=lambda text: answer.publish(String(data=text)),
        diagnostics=lambda statuses: diagnostics.publish(
            to_diagnostic_array(statuses, time.time_ns(), ROS_DIAGNOSTIC_TYPES)
        ),
        detections=lambda detection: detections.publish(to_detection_array(detection, ROS_DETECTION_TYPES)),
        overlay=lambda rgb, detection: overlay.publish(overlay_message(rgb, detection)),
        overlay_wanted=lambda: overlay.get_subscription_count() > 0,
    )
    return outputs, [description, report, answer, detections, overlay, diagnostics]


def subscribe(node: Node, params: NodeParams, core: NodeCore) -> list:
    """The camera and question subscriptions, feeding `core`."""
    image_type = CompressedImage if params.compressed else Image
    camera_qos = ros_qos(input_qos(params))
    subscriptions = [
        node.create_subscription(image_type, topic, partial(core.on_message, camera), camera_qos)
        for camera, topic in zip(params.cameras, params.subscribed_topics)
    ]
    subscriptions.append(
        node.create_subscription(String, "~/question", lambda msg: core.on_question(msg.data), QUESTION_QOS)
    )
    node.get_logger().info(
        f"cameras {', '.join(params.subscribed_topics)} (input_qos {params.input_qos}), "
        f"outputs output_qos {params.output_qos}"
    )
    return subscriptions


def load_pipeline(params: NodeParams):
    """The pipeline the parameters ask for (imports torch, so only once the node starts or configures)."""
    from vts_drive.pipeline import Pipeline

    return Pipeline.load(params.model_name(), params.settings)


class VtsDriveNode(Node):
    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        params = params_from_ros_node(
            self, ParameterDescriptor, source=f"node {self.get_fully_qualified_name()}"
        )
        pipeline = load_pipeline(params)
        outputs, _ = create_outputs(self.create_publisher, ros_qos(output_qos(params)))
        self.core = NodeCore(pipeline, params, outputs, node_name=self.get_name())
        subscribe(self, params, self.core)
        self.core.start()
        self.get_logger().info(f"model {pipeline.model_name}")

    def close(self) -> None:
        self.core.stop()
        self.destroy_node()


class VtsDriveLifecycleNode(LifecycleNode):
    """The managed node. Parameters are declared (and checked) when it is created and read again on
    each configure, so `ros2 param set` before configure takes effect."""

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        self._source = f"node {self.get_fully_qualified_name()}"
        params_from_ros_node(self, ParameterDescriptor, source=self._source)
        self.params: NodeParams | None = None
        self.pipeline: Pipeline | None = None
        self.outputs: Outputs | None = None
        self._output_publishers: list = []
        self.core: NodeCore | None = None
        self._input_subscriptions: list = []

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Read the parameters, load the model and create the (inactive) publishers."""
        try:
            values = {name: self.get_parameter(name).value for name, _, _ in declarations()}
            self.params = params = params_from_dict(values, self._source)
            self.pipeline = pipeline = load_pipeline(params)
        except InputError as error:
            self.get_logger().error(str(error))
            return TransitionCallbackReturn.FAILURE
        self.outputs, self._output_publishers = create_outputs(
            self.create_lifecycle_publisher, ros_qos(output_qos(params))
        )
        self.get_logger().info(f"configured: model {pipeline.model_name}")
        return super().on_configure(state)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Enable the publishers, start the worker and subscribe."""
        if self.pipeline is None or self.params is None or self.outputs is None:
            self.get_logger().error("activate before configure: nothing is loaded")
            return TransitionCallbackReturn.FAILURE
        result = super().on_activate(state)
        self.core = NodeCore(self.pipeline, self.params, self.outputs, node_name=self.get_name())
        self.core.start()
        self._input_subscriptions = subscribe(self, self.params, self.core)
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Unsubscribe, then stop the worker (queued questions are answered as rejected) and the publishers."""
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Destroy the publishers and let the model go."""
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        self._release()
        return super().on_shutdown(state)

    def _stop(self) -> None:
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        if self.core is not None:
            self.core.stop()
            self.core = None

    def _release(self) -> None:
        for publisher in self._output_publishers:
            self.destroy_lifecycle_publisher(publisher)
        self._output_publishers, self.outputs, self.pipeline = [], None, None

    def close(self) -> None:
        self._stop()
        self.destroy_node()


def main(args: list[str] | None = None, node_class: type = VtsDriveNode) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        rclpy.spin(node)
    except InputError as error:
        print(f"vts_drive_node: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
    return 0


def main_lifecycle(args: list[str] | None = None) -> int:
    """The managed node: `ros2 run vts_drive vts_drive_lifecycle_node`, then configure and activate it."""
    return main(args, VtsDriveLifecycleNode)


if __name__ == "__main__":
    sys.exit(main())
