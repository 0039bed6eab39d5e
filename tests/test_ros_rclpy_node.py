"""The rclpy nodes' wiring, the managed node's transitions above all, with the tiny checkpoint.

rclpy cannot be installed here (ROS 2 is not on PyPI or in Debian), so StandInRclpy stands in for
it: nodes that record their parameters, publishers and subscriptions, and a lifecycle Node whose
transitions are called directly. The message packages are rosbags' classes of the same .msg
definitions, so what the node publishes is serialized to CDR as rclpy would send it.
"""

import importlib.util
import sys
import time
from enum import Enum
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from vts_drive.ros.detections import DETECTION_MESSAGES
from vts_drive.ros.typestore import TYPESTORE, header

ROOT = Path(__file__).resolve().parents[1]
MS = 1_000_000
MESSAGES = {
    "builtin_interfaces": ["Time"],
    "std_msgs": ["Header", "String"],
    "sensor_msgs": ["Image", "CompressedImage"],
    "diagnostic_msgs": ["DiagnosticArray", "DiagnosticStatus", "KeyValue"],
}


class Endpoint:
    """A publisher or subscription; `subscribers` is what get_subscription_count reports."""

    def __init__(self, msg_type, topic, qos, callback=None) -> None:
        self.msg_type, self.topic, self.qos, self.callback = msg_type, topic, qos, callback
        self.published, self.subscribers, self.enabled = [], 0, True

    def publish(self, msg) -> None:
        if self.enabled:
            self.published.append(msg)

    def get_subscription_count(self) -> int:
        return self.subscribers


class StandInNode:
    """rclpy.node.Node, as far as the nodes use it."""

    def __init__(self, name: str, parameter_overrides: dict | None = None) -> None:
        self.name, self.parameters, self.publishers, self.subscriptions = name, {}, [], []
        self.overrides = parameter_overrides or {}

    def declare_parameter(self, name, value, descriptor):
        self.parameters[name] = SimpleNamespace(name=name, value=self.overrides.get(name, value))
        return self.parameters[name]

    def get_parameter(self, name):
        return self.parameters[name]

    def create_publisher(self, msg_type, topic, qos):
        self.publishers.append(Endpoint(msg_type, topic.replace("~", f"/{self.name}"), qos))
        return self.publishers[-1]

    def create_subscription(self, msg_type, topic, callback, qos):
        self.subscriptions.append(Endpoint(msg_type, topic.replace("~", f"/{self.name}"), qos, callback))
        return self.subscriptions[-1]

    def destroy_subscription(self, subscription) -> None:
        self.subscriptions.remove(subscription)

    def get_name(self) -> str:
        return self.name

    def get_fully_qualified_name(self) -> str:
        return f"/{self.name}"

    def get_logger(self):
        return SimpleNamespace(info=lambda text: None, error=lambda text: None)

    def destroy_node(self) -> None:
        pass


class Result(Enum):
    SUCCESS = 1
    FAILURE = 2


class StandInLifecycleNode(StandInNode):
    """rclpy.lifecycle.Node: lifecycle publishers publish only while the node is active."""

    def create_lifecycle_publisher(self, msg_type, topic, qos):
        publisher = self.create_publisher(msg_type, topic, qos)
        publisher.enabled = False
        return publisher

    def destroy_lifecycle_publisher(self, publisher) -> None:
        self.publishers.remove(publisher)

    def _enable(self, enabled: bool) -> Result:
        for publisher in self.publishers:
            publisher.enabled = enabled
        return Result.SUCCESS

    def on_configure(self, state):
        return Result.SUCCESS

    def on_activate(self, state):
        return self._enable(True)

    def on_deactivate(self, state):
        return self._enable(False)

    def on_cleanup(self, state):
        return Result.SUCCESS

    def on_shutdown(self, state):
        return Result.SUCCESS


def stand_in_modules(overrides: dict) -> dict[str, ModuleType]:
    """rclpy and the message packages the node imports, as modules for sys.modules."""
    modules = {}

    def module(name: str, **attributes) -> ModuleType:
        modules[name] = ModuleType(name)
        modules[name].__dict__.update(attributes)
        return modules[name]

    policies = SimpleNamespace(
        KEEP_LAST="keep_last",
        KEEP_ALL="keep_all",
        RELIABLE="reliable",
        BEST_EFFORT="best_effort",
        VOLATILE="volatile",
    )

    def with_overrides(base: type) -> type:
        return type(
            "Node", (base,), {"__init__": lambda self, name: StandInNode.__init__(self, name, overrides)}
        )

    module("rclpy", init=lambda args=None: None, spin=lambda node: None, try_shutdown=lambda: None)
    module("rclpy.node", Node=with_overrides(StandInNode))
    module(
        "rclpy.lifecycle",
        Node=with_overrides(StandInLifecycleNode),
        State=object,
        TransitionCallbackReturn=Result,
    )
    module("rclpy.executors", ExternalShutdownException=type("ExternalShutdownException", (Exception,), {}))
    module(
        "rclpy.qos",
        QoSProfile=lambda **fields: SimpleNamespace(**fields),
        HistoryPolicy=policies,
        ReliabilityPolicy=policies,
        DurabilityPolicy=policies,
    )
    module("rcl_interfaces.msg", ParameterDescriptor=lambda **fields: SimpleNamespace(**fields))
    names = {package: list(classes) for package, classes in MESSAGES.items()}
    for name in DETECTION_MESSAGES:
        package, _, message = name.split("/")
        names.setdefault(package, []).append(message)
    for package, classes in names.items():
        module(f"{package}.msg", **{name: TYPESTORE.types[f"{package}/msg/{name}"] for name in classes})
    return modules


@pytest.fixture
def node_module(monkeypatch, tiny_model_dir):
    """ros_nodes/vts_drive_node.py imported against the stand-in rclpy, parameters set for the tiny model."""
    overrides = {
        "model": str(tiny_model_dir),
        "frames_per_window": 1,
        "window_stride": 1,
        "max_new_tokens": 4,
        "diagnostics_period_s": 60.0,
    }
    for name, module in stand_in_modules(overrides).items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(
        "stand_in_vts_drive_node", ROOT / "ros_nodes" / "vts_drive_node.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def send_frames(node, count: int) -> None:
    rng = np.random.default_rng(0)
    Image = TYPESTORE.types["sensor_msgs/msg/Image"]
    cameras = [s for s in node.subscriptions if s.topic != "/vts_drive/question"]
    for t in range(count):
        for subscription in cameras:
            camera = subscription.topic.split("/")[1].removeprefix("cam_")
            pixels = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
            subscription.callback(
                Image(
                    header=header(t * 100 * MS, f"{camera}_optical"),
                    height=16,
                    width=24,
                    encoding="rgb8",
                    is_bigendian=0,
                    step=72,
                    data=pixels.reshape(-1),
                )
            )


def wait_for(predicate, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def published(node, topic: str) -> list:
    return next(p for p in node.publishers if p.topic == topic).published


def test_managed_node_loads_on_configure_subscribes_on_activate_and_lets_go_on_deactivate_and_cleanup(
    node_module,
):
    node = node_module.VtsDriveLifecycleNode()
    assert (
        node.publishers == [] and node.subscriptions == [] and node.pipeline is None
    )  # created: nothing yet
    assert node.on_configure(None) is Result.SUCCESS
    assert {p.topic for p in node.publishers} == {
        "/vts_drive/scene_description",
        "/vts_drive/risk_qa",
        "/vts_drive/answer",
        "/vts_drive/risk_detections",
        "/vts_drive/overlay",
        "/diagnostics",
    }
    assert node.pipeline is not None and node.subscriptions == []
    assert node.on_activate(None) is Result.SUCCESS
    assert [s.topic for s in node.subscriptions] == [
        "/cam_front/image_raw",
        "/cam_front_left/image_raw",
        "/cam_front_right/image_raw",
        "/vts_drive/question",
    ]
    assert node.subscriptions[0].qos.reliability == "best_effort" and node.subscriptions[0].qos.depth == 5
    next(p for p in node.publishers if p.topic == "/vts_drive/overlay").subscribers = 1
    send_frames(node, 2)
    wait_for(lambda: len(published(node, "/vts_drive/risk_detections")) == 2)
    wait_for(lambda: len(published(node, "/vts_drive/overlay")) == 2)
    detection = published(node, "/vts_drive/risk_detections")[1]
    TYPESTORE.serialize_cdr(detection, "vision_msgs/msg/Detection2DArray")  # a complete message
    overlay = published(node, "/vts_drive/overlay")[1]
    assert overlay.header == detection.header and (overlay.width, overlay.height, overlay.step) == (
        24,
        16,
        72,
    )
    assert detection.header.frame_id.endswith("_optical") and detection.header.stamp.nanosec == 100 * MS
    assert overlay.encoding == "rgb8" and len(overlay.data) == 16 * 72 and overlay.data.typecode == "B"

    assert node.on_deactivate(None) is Result.SUCCESS
    assert node.subscriptions == [] and node.core is None
    send_frames(node, 1)  # nobody listens any more
    assert len(published(node, "/vts_drive/risk_qa")) == 2
    assert node.on_cleanup(None) is Result.SUCCESS
    assert node.publishers == [] and node.pipeline is None
    assert node.on_configure(None) is Result.SUCCESS and node.on_activate(None) is Result.SUCCESS  # and again
    assert len(node.subscriptions) == 4
    node.close()


def test_a_model_that_does_not_load_fails_configure_and_leaves_the_node_unconfigured(node_module, tmp_path):
    node = node_module.VtsDriveLifecycleNode()
    node.parameters["model"].value = str(tmp_path / "missing")  # as `ros2 param set` before configure
    assert node.on_configure(None) is Result.FAILURE
    assert node.publishers == [] and node.pipeline is None


def test_plain_node_subscribes_and_publishes_at_once(node_module):
    node = node_module.VtsDriveNode()
    assert len(node.subscriptions) == 4 and len(node.publishers) == 6
    assert all(p.qos.reliability == "reliable" and p.qos.depth == 10 for p in node.publishers)
    send_frames(node, 1)
    wait_for(lambda: published(node, "/vts_drive/risk_detections"))
    assert published(node, "/vts_drive/overlay") == []  # no subscriber, no overlay drawn
    node.close()


def test_qos_and_named_camera_parameters_reach_the_subscriptions_and_publishers(node_module):
    node = node_module.VtsDriveLifecycleNode()
    for name, value in {
        "camera_topics": ["front=/a/b/image_raw", "/camera/left/image_raw"],
        "input_qos": "reliable",
        "input_qos_depth": 2,
        "output_qos": "best_effort",
        "output_qos_depth": 3,
    }.items():
        node.parameters[name].value = value  # as `ros2 param set` before configure
    assert node.on_configure(None) is Result.SUCCESS and node.on_activate(None) is Result.SUCCESS
    cameras = node.subscriptions[:-1]
    assert [s.topic for s in cameras] == ["/a/b/image_raw", "/camera/left/image_raw"]
    assert all(s.qos.reliability == "reliable" and s.qos.depth == 2 for s in cameras)
    assert all(p.qos.reliability == "best_effort" and p.qos.depth == 3 for p in node.publishers)
    assert node.params.cameras == ["front", "left"]
    node.close()
