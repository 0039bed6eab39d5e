"""The rclpy node `vts_drive`: ROS subscriptions and publishers around NodeCore.

Everything with logic lives in vts_drive.ros (parameters, image conversion,
sync, windows, queueing, diagnostics) and is tested without ROS; this file
only declares parameters and wires topics. It is the one module that imports
rclpy.
"""
from __future__ import annotations

import sys
import time
from functools import partial
from types import SimpleNamespace

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from vts_drive.errors import EXIT_INPUT_ERROR, InputError
from vts_drive.ros.diagnostics import to_diagnostic_array
from vts_drive.ros.node_core import NodeCore, Outputs
from vts_drive.ros.params import NODE_NAME, params_from_ros_node

ROS_DIAGNOSTIC_TYPES = SimpleNamespace(
    Time=Time, Header=Header, KeyValue=KeyValue, DiagnosticStatus=DiagnosticStatus,
    DiagnosticArray=DiagnosticArray, level=lambda level: bytes([level]),
)
RELIABLE_DEPTH = 10  # ROS's default profile: reliable, volatile, keep last 10
# Questions: keep all, so a burst is held back by the publisher rather than overwritten; each gets a reply.
QUESTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


class VtsDriveNode(Node):
    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        params = params_from_ros_node(self, ParameterDescriptor, source=f"node {self.get_fully_qualified_name()}")

        from vts_drive.pipeline import Pipeline

        pipeline = Pipeline.load(params.model_name(), params.pipeline_config())
        description = self.create_publisher(String, "~/scene_description", RELIABLE_DEPTH)
        report = self.create_publisher(String, "~/risk_qa", RELIABLE_DEPTH)
        answer = self.create_publisher(String, "~/answer", RELIABLE_DEPTH)
        diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE_DEPTH)
        self.core = NodeCore(
            pipeline,
            params,
            Outputs(
                description=lambda text: description.publish(String(data=text)),
                report=lambda text: report.publish(String(data=text)),
                answer=lambda text: answer.publish(String(data=text)),
                diagnostics=lambda statuses: diagnostics.publish(
                    to_diagnostic_array(statuses, time.time_ns(), ROS_DIAGNOSTIC_TYPES)
                ),
            ),
            node_name=self.get_name(),
        )
        image_type = CompressedImage if params.compressed else Image
        qos = qos_profile_sensor_data if params.qos == "sensor_data" else RELIABLE_DEPTH
        for camera, topic in zip(params.cameras, params.subscribed_topics):
            self.create_subscription(image_type, topic, partial(self.core.on_message, camera), qos)
        self.create_subscription(String, "~/question", lambda msg: self.core.on_question(msg.data), QUESTION_QOS)
        self.core.start()
        self.get_logger().info(
            f"cameras {', '.join(params.subscribed_topics)} ({params.qos}), model {pipeline.model_name}, mode {params.mode}"
        )


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = VtsDriveNode()
        rclpy.spin(node)
    except InputError as error:
        print(f"vts_drive_node: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.core.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
