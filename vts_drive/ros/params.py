"""The node's parameters: one dataclass, read from ROS parameters, a params YAML or `--param` flags.

Every transport (rclpy, DDS) builds a NodeParams the same way, so the node has
the same parameters, defaults and checks whichever runs it. Besides the node's
own parameters (cameras, windows, queues), every dotted key of the pipeline's
configuration is a parameter of the same name (`mode`, `vts.budget`, in a params
YAML also nested: `vts: {budget: 0.3}`); one left unset keeps the model's
setting, else the default (vts_drive/config.py). Nothing here imports rclpy or torch.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from vts_drive.config import PipelineConfig, flatten, resolve_config, setting_keys
from vts_drive.errors import InputError
from vts_drive.ros.cameras import camera_names
from vts_drive.ros.qos import qos_spec
from vts_drive.ros.stream import StreamConfig

NODE_NAME = "vts_drive"
DEFAULT_CAMERA_TOPICS = ["/cam_front/image_raw", "/cam_front_left/image_raw", "/cam_front_right/image_raw"]

# Python field type -> ROS parameter type name (rclpy's ParameterType.PARAMETER_<NAME>)
ROS_TYPES: dict[object, str] = {  # keys: types and list[...] aliases, as get_type_hints gives them
    str: "STRING",
    bool: "BOOL",
    int: "INTEGER",
    float: "DOUBLE",
    list[str]: "STRING_ARRAY",
    list[int]: "INTEGER_ARRAY",
}
# parameters of earlier releases -> the parameters or configuration keys that replaced them (named in errors)
RENAMED = {
    "qos": "input_qos",
    "skip_threshold": "keyframe.skip_threshold",
    "max_keyframes": "keyframe.max_keyframes",
    "keyframe_anchor": "keyframe.anchor",
    "keep_ratio": "mod.keep_ratio",
}


@dataclass
class NodeParams:
    # TOPIC (named by cameras.py's rule: /cam_front/image_raw is front) or NAME=TOPIC (front=/a/b/compressed)
    camera_topics: list[str] = field(default_factory=lambda: list(DEFAULT_CAMERA_TOPICS))
    compressed: bool = False  # subscribe to <topic>/compressed (sensor_msgs/CompressedImage)
    frames_per_window: int = StreamConfig.frames
    window_stride: int = StreamConfig.stride
    sync_slop_s: float = StreamConfig.slop_s
    max_stamp_jump_s: float = (
        StreamConfig.max_stamp_jump_s
    )  # a camera whose stamp jumps further starts afresh
    stale_after_s: float = StreamConfig.stale_after_s
    on_stale_camera: str = StreamConfig.on_stale  # continue | wait
    model: str = ""  # "": the default model (synthdrive-tiny when shipped)
    input_qos: str = "sensor_data"  # the camera subscriptions: sensor_data | best_effort | reliable (qos.py)
    input_qos_depth: int = 0  # 0: the profile's depth
    output_qos: str = "reliable"  # everything the node publishes
    output_qos_depth: int = 0
    window_queue_size: int = 2  # windows waiting for inference; the oldest is dropped beyond it
    question_queue_size: int = 8
    max_question_chars: int = 500
    diagnostics_period_s: float = 1.0
    settings: dict[str, object] = field(default_factory=dict)  # pipeline configuration: dotted key -> value

    def check(self) -> None:
        for name in (
            "frames_per_window",
            "window_stride",
            "window_queue_size",
            "question_queue_size",
            "max_question_chars",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"parameter {name}: must be at least 1, got {getattr(self, name)}")
        qos_spec(self.input_qos, self.input_qos_depth, parameter="input_qos")
        qos_spec(self.output_qos, self.output_qos_depth, parameter="output_qos")
        if self.diagnostics_period_s <= 0:
            raise InputError(f"parameter diagnostics_period_s: must be > 0, got {self.diagnostics_period_s}")
        if not self.camera_topics:
            raise InputError("parameter camera_topics: must name at least one camera topic")
        self._camera_names()
        self.stream_config().check()
        self.requested()

    def _camera_names(self) -> dict[str, str]:
        """topic -> camera name, by the rule `replay --topics` names cameras by, so both agree."""
        return camera_names(self.camera_topics, "parameter camera_topics")

    @property
    def cameras(self) -> list[str]:
        return list(self._camera_names().values())

    @property
    def subscribed_topics(self) -> list[str]:
        """The topics the node reads, in camera order: each item's TOPIC (image_transport's /compressed
        appended when compressed)."""
        return [f"{topic}/compressed" if self.compressed else topic for topic in self._camera_names()]

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            cameras=self.cameras,
            frames=self.frames_per_window,
            stride=self.window_stride,
            slop_s=self.sync_slop_s,
            max_stamp_jump_s=self.max_stamp_jump_s,
            stale_after_s=self.stale_after_s,
            on_stale=self.on_stale_camera,
        )

    def requested(self) -> PipelineConfig:
        """The configuration the parameters ask for over the defaults (a pipeline adds the model's
        settings beneath them: Pipeline.load(params.model_name(), params.settings))."""
        return resolve_config(None, self.settings, source="parameters")

    @property
    def mode(self) -> str:
        """The mode the parameters ask for (diagnostics and logs name it; so do backend and device)."""
        return self.requested().mode

    @property
    def backend(self) -> str:
        return self.requested().backend

    @property
    def device(self) -> str:
        return self.requested().device

    def model_name(self) -> str:
        from vts_drive.model.names import default_model

        return self.model or default_model()


def output_topic(name: str, node_name: str = NODE_NAME) -> str:
    """The node-private topic ~/name."""
    return f"/{node_name}/{name}"


def node_fields() -> dict[str, object]:
    """The node's own parameters -> their types (the configuration's keys are parameters too)."""
    hints = typing.get_type_hints(NodeParams)
    return {f.name: hints[f.name] for f in fields(NodeParams) if f.name != "settings"}


def declarations() -> list[tuple[str, object, str]]:
    """(name, default, ROS parameter type name) of every parameter, for declaring them in rclpy; a
    configuration key's default is None (not set: the model's setting, else the configuration's default)."""
    defaults = NodeParams()
    node = [(name, getattr(defaults, name), ROS_TYPES[kind]) for name, kind in node_fields().items()]
    return node + [(key, None, ROS_TYPES[kind]) for key, kind in setting_keys().items()]


def params_from_ros_node(node: typing.Any, descriptor: Callable[..., object], source: str) -> NodeParams:
    """Declare every parameter on an rclpy node and read them back as checked NodeParams.

    descriptor: rcl_interfaces' ParameterDescriptor. The parameters are declared with dynamic typing:
    with a fixed type rclpy raises InvalidParameterTypeException for a value of another type (a launch
    file's `sync_slop_s:=1` is an integer) before the node can coerce it or say which one is wrong."""
    values = {
        name: node.declare_parameter(
            name, default, descriptor(dynamic_typing=True, additional_constraints=f"expects {ros_type}")
        ).value
        for name, default, ros_type in declarations()
    }
    return params_from_dict(values, source)


def params_from_dict(values: dict, source: str = "parameters") -> NodeParams:
    """A checked NodeParams from {name: value} (nested mappings are dotted names); unknown names and
    wrong types raise InputError. A configuration key whose value is None is not set."""
    values = flatten(values)
    hints, keys = node_fields(), setting_keys()
    unknown = sorted(set(values) - set(hints) - set(keys))
    if unknown:
        renamed = "".join(f" ({name} is now {RENAMED[name]})" for name in unknown if name in RENAMED)
        raise InputError(
            f"{source}: unknown parameter(s) {', '.join(unknown)}{renamed}; known: {', '.join(hints)} "
            "and the configuration's dotted keys (vts_drive/config.py)"
        )
    checked: dict[str, typing.Any] = {
        name: _typed(name, value, hints[name], source) for name, value in values.items() if name in hints
    }
    settings = {key: value for key, value in values.items() if key in keys and value is not None}
    params = NodeParams(**checked, settings=settings)
    try:
        params.check()
    except InputError as error:
        raise InputError(f"{source}: {error}") from None
    return params


def _typed(name: str, value: object, kind: object, source: str) -> object:
    """The value as the parameter's type where nothing is lost (an int for a float); else an error naming it."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == list[str]:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
    elif isinstance(kind, type) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    expected = "a list of strings" if kind == list[str] else getattr(kind, "__name__", str(kind))
    raise InputError(f"{source}: parameter {name} must be {expected}, got {value!r}")


def read_params_file(path: Path, node_name: str = NODE_NAME) -> dict:
    """The ros__parameters for this node from a ROS 2 params YAML (`node_name:` or `/**:` section)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"params file {path} does not exist")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InputError(f"params file {path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise InputError(f"params file {path}: expected a mapping of node names to ros__parameters")
    values: dict = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = document.get(key)
        if section is not None:
            if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
                raise InputError(f"params file {path}: section {key!r} has no ros__parameters mapping")
            values.update(section["ros__parameters"])
    if not values:
        raise InputError(f"params file {path} has no section for node {node_name!r} (or '/**')")
    return values


def parse_param_overrides(items: list[str]) -> dict:
    """`name=value` pairs (value read as YAML, so 4, true, [a, b] keep their types)."""
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise InputError(f"--param {item!r}: expected NAME=VALUE")
        try:
            values[name.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InputError(f"--param {item!r}: value is not valid YAML: {error}") from None
    return values
