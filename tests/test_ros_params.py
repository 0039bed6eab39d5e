"""Node parameters: the params YAML, --param overrides, checks, rclpy declarations and the launch file's arguments."""

import ast
from pathlib import Path

import pytest

from vts_drive.config import setting_keys
from vts_drive.errors import InputError
from vts_drive.ros.params import (
    NodeParams,
    declarations,
    node_fields,
    output_topic,
    params_from_dict,
    parse_param_overrides,
    read_params_file,
)

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_yaml_is_the_defaults():
    assert params_from_dict(read_params_file(ROOT / "launch" / "params.yaml")) == NodeParams()


def test_defaults_and_derived_names():
    params = NodeParams()
    assert params.cameras == ["front", "front_left", "front_right"]
    assert params.subscribed_topics == params.camera_topics
    assert params_from_dict({"compressed": True}).subscribed_topics[0] == "/cam_front/image_raw/compressed"
    assert output_topic("risk_qa") == "/vts_drive/risk_qa"


def test_camera_topics_are_named_like_replay_names_them_or_as_given():
    """A plain topic is named by vts_drive/ros/cameras.py's rule, as `replay --topics` names it; in
    NAME=TOPIC the topic part is what the node subscribes to (plus /compressed when compressed)."""
    topics = ["/camera/front/compressed", "/camera/left/compressed", "/car/cam_rear/image_rect_color"]
    params = params_from_dict({"camera_topics": topics})
    assert params.cameras == ["front", "left", "rear"] and params.subscribed_topics == topics
    assert params.stream_config().cameras == ["front", "left", "rear"]
    named = params_from_dict({"camera_topics": ["front=/a/b/compressed", "/cam_side/image_raw"]})
    assert named.cameras == ["front", "side"]
    assert named.subscribed_topics == ["/a/b/compressed", "/cam_side/image_raw"]
    both = params_from_dict({"camera_topics": ["front=/a/b/image_raw", "/rear/image"], "compressed": True})
    assert both.subscribed_topics == ["/a/b/image_raw/compressed", "/rear/image/compressed"]


def test_params_file_sections(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    mode: vts\n    frames_per_window: 8\n"
        "other:\n  ros__parameters:\n    mode: mod\n"
        "vts_drive:\n  ros__parameters:\n    sync_slop_s: 0.1\n"
    )
    assert read_params_file(path) == {"mode": "vts", "frames_per_window": 8, "sync_slop_s": 0.1}
    with pytest.raises(InputError, match="no section for node 'elsewhere'"):
        path.write_text("vts_drive:\n  ros__parameters:\n    mode: vts\n")
        read_params_file(path, node_name="elsewhere")


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, "does not exist"),
        ("vts_drive: [1, 2", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("vts_drive:\n  mode: vts\n", "no ros__parameters"),
    ],
)
def test_bad_params_files(tmp_path, text, problem):
    path = tmp_path / "p.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError, match=problem):
        read_params_file(path)


def test_overrides_keep_yaml_types():
    values = parse_param_overrides(
        [
            "frames_per_window=8",
            "compressed=true",
            "sync_slop_s=0.1",
            "camera_topics=[/a/image, /b/image]",
            "mode=vts+mod",
        ]
    )
    params = params_from_dict(values)
    assert (params.frames_per_window, params.compressed, params.sync_slop_s) == (8, True, 0.1)
    assert params.cameras == ["a", "b"] and params.mode == "vts+mod"
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_param_overrides(["frames_per_window"])


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"frame_per_window": 4}, "unknown parameter.*frame_per_window"),
        ({"frames_per_window": "4"}, "frames_per_window must be int"),
        ({"frames_per_window": True}, "must be int"),
        ({"compressed": 1}, "must be bool"),
        ({"camera_topics": "/cam/image"}, "list of strings"),
        ({"window_stride": 0}, "at least 1"),
        ({"qos": "reliable"}, r"unknown parameter\(s\) qos \(qos is now input_qos\)"),
        (
            {"input_qos": "fast"},
            "parameter input_qos: 'fast' is not one of sensor_data, best_effort, reliable",
        ),
        ({"output_qos": "sensor-data"}, "parameter output_qos: 'sensor-data' is not one of"),
        ({"input_qos_depth": -1}, "parameter input_qos_depth: must be a whole number >= 0"),
        ({"output_qos_depth": -5}, "parameter output_qos_depth: must be a whole number >= 0"),
        ({"output_qos_depth": 2.0}, "output_qos_depth must be int"),
        ({"on_stale_camera": "drop"}, "continue, wait"),
        ({"sync_slop_s": -0.1}, "slop"),
        ({"camera_topics": ["cam/image"]}, "camera_topics: 'cam/image'.*not an absolute topic"),
        ({"camera_topics": ["front=cam/image"]}, "camera_topics: 'front=cam/image'.*not an absolute topic"),
        ({"camera_topics": ["front left=/a"]}, "camera_topics: 'front left=/a': a camera name is letters"),
        (
            {"camera_topics": ["/cam_front/image_raw", "/cam_front/image_raw/compressed"]},
            "parameter camera_topics: .* are all camera 'front'; name each camera explicitly",
        ),
        (
            {"camera_topics": ["front=/a/image", "/camera/front/compressed"]},
            "parameter camera_topics: /a/image, /camera/front/compressed are all camera 'front'",
        ),
        (
            {"camera_topics": ["/a/image", "x=/a/image"]},
            "parameter camera_topics: topic /a/image is given twice",
        ),
        ({"camera_topics": []}, "parameter camera_topics: must name at least one camera topic"),
    ],
)
def test_bad_values_name_the_parameter(values, problem):
    with pytest.raises(InputError, match=problem):
        params_from_dict(values)


def test_int_is_accepted_for_a_double():
    assert params_from_dict({"sync_slop_s": 1}).sync_slop_s == 1.0


def test_declarations_cover_every_parameter_with_a_ros_type():
    declared = {name: (default, kind) for name, default, kind in declarations()}
    assert set(declared) == set(node_fields()) | set(setting_keys())
    assert declared["vts.budget"] == (None, "DOUBLE") and declared["mod.layers"] == (None, "INTEGER_ARRAY")
    assert declared["camera_topics"][1] == "STRING_ARRAY" and declared["sync_slop_s"][1] == "DOUBLE"
    assert declared["compressed"][1] == "BOOL" and declared["frames_per_window"][1] == "INTEGER"
    # rclpy infers an empty list as a byte array, so no array parameter may default to []
    assert all(default != [] for default, _ in declared.values())


def test_launch_arguments_are_node_parameters():
    """The launch file cannot run here (no ROS 2), so read its OVERRIDES table from the source."""
    tree = ast.parse((ROOT / "launch" / "vts_drive.launch.py").read_text())
    table = next(
        node.value for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id == "OVERRIDES"
    )
    names = [key.value for key in table.keys]
    assert set(names) <= set(node_fields()) | set(setting_keys())
    assert {
        "camera_topics",
        "compressed",
        "frames_per_window",
        "window_stride",
        "sync_slop_s",
        "model",
        "mode",
        "backend",
        "device",
        "input_qos",
        "input_qos_depth",
        "output_qos",
        "output_qos_depth",
    } <= set(names)


def test_only_the_ros_node_imports_rclpy():
    importers = []
    for path in [*(ROOT / "vts_drive").rglob("*.py"), *(ROOT / "ros_nodes").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            if any(
                m.split(".")[0] in {"rclpy", "message_filters", "sensor_msgs", "std_msgs"} for m in modules
            ):
                importers.append(path.relative_to(ROOT).as_posix())
    assert set(importers) == {"ros_nodes/vts_drive_node.py"}


def test_node_cli_rejects_bad_parameters_before_loading_anything(tmp_path, capsys):
    from vts_drive.cli import main

    assert main(["node", "--param", "frames_per_window=0"]) == 2
    assert "frames_per_window: must be at least 1" in capsys.readouterr().err
    assert main(["node", "--params", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_node_cli_ros2_transport_without_rclpy_says_what_to_do(capsys):
    from importlib.util import find_spec

    from vts_drive.cli import main

    if find_spec("rclpy") is not None:
        pytest.skip("rclpy is installed: the ros2 transport would start a real node")
    assert main(["node", "--transport", "ros2"]) == 2
    assert "source ROS 2's setup.bash or use --transport dds" in capsys.readouterr().err


def test_pipeline_settings_reach_the_pipeline_config():
    """Any key of the pipeline's configuration is a parameter of the same dotted name (nested in a
    params YAML or not); one left unset keeps the model's setting, so it is not in `settings`."""
    assert NodeParams().settings == {}
    params = params_from_dict(
        {
            "mode": "vts+mod",
            "backend": "onnxruntime",
            "engines": "engines/tiny",
            "keyframe": {"skip_threshold": 0.2},
            "keyframe.anchor": "first",
            "mod.keep_ratio": 0.3,
            "keyframe.max_keyframes": 1,
            "box_grammar": False,
            "vts.budget": None,
        }
    )
    assert "vts.budget" not in params.settings
    config = params.requested()
    assert (
        config.engines,
        config.keyframe.skip_threshold,
        config.keyframe.anchor,
        config.mod.keep_ratio,
        config.keyframe.max_keyframes,
    ) == ("engines/tiny", 0.2, "first", 0.3, 1)
    assert not config.box_grammar and params.mode == "vts+mod"
    with pytest.raises(InputError, match="keyframe.anchor 'middle'"):
        params_from_dict({"keyframe.anchor": "middle"})
    with pytest.raises(InputError, match="keyframe.max_keyframes must be at least 1"):
        params_from_dict({"keyframe": {"max_keyframes": -1}})
    with pytest.raises(InputError, match="--engines"):
        params_from_dict({"backend": "onnxruntime"})
    with pytest.raises(InputError, match="skip_threshold is now keyframe.skip_threshold"):
        params_from_dict({"skip_threshold": 0.3})
