"""One configuration: a dotted key set the same way from the CLI, a mode spec, ROS parameters and
a model folder's settings file, with one default each, layered model < side folder < run."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vts_drive.bench import parse_mode_specs
from vts_drive.cli.common import add_pipeline_arguments, pipeline_overrides
from vts_drive.config import (
    SETTINGS_FILE,
    PipelineConfig,
    read_settings,
    resolve_config,
    setting_keys,
    write_settings,
)
from vts_drive.errors import InputError
from vts_drive.model.names import shipped_model_path
from vts_drive.ros.params import params_from_dict, read_params_file


def cli_overrides(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    return pipeline_overrides(parser.parse_args(list(argv)))


def test_cli_mode_spec_and_ros_parameters_setting_the_same_keys_give_equal_configurations(tmp_path):
    model = shipped_model_path("synthdrive-tiny")
    params = tmp_path / "params.yaml"
    params.write_text(
        "vts_drive:\n  ros__parameters:\n    mode: vts\n    vts:\n      budget: 0.3\n"
        "    keyframe.anchor: first\n    mod: {layers: [1, 3]}\n"
    )
    from_cli = cli_overrides(
        "--set",
        "mode=vts",
        "--set",
        "vts.budget=0.3",
        "--set",
        "keyframe.anchor=first",
        "--set",
        "mod.layers=[1, 3]",
    )
    (spec,) = parse_mode_specs("vts[vts.budget=0.3,keyframe.anchor=first,mod.layers=[1,3]]")
    from_ros = params_from_dict(read_params_file(params)).settings
    configs = [resolve_config(model, overrides) for overrides in (from_cli, spec.overrides({}), from_ros)]
    assert configs[0] == configs[1] == configs[2]
    assert (configs[0].mode, configs[0].vts.budget, configs[0].keyframe.anchor, configs[0].mod.layers) == (
        "vts",
        0.3,
        "first",
        [1, 3],
    )
    # the short names are the same keys
    (short,) = parse_mode_specs("vts[budget=0.3,anchor=first]")
    flags = cli_overrides("--mode", "vts", "--keyframe-anchor", "first", "--set", "vts.budget=0.3")
    without_layers = {key: value for key, value in from_ros.items() if key != "mod.layers"}
    assert (
        resolve_config(model, short.overrides({}))
        == resolve_config(model, flags)
        == resolve_config(model, without_layers)
    )


def test_values_convert_to_the_settings_types_or_are_refused():
    config = resolve_config(
        None,
        {
            "vts.budget": "0.25",
            "vts.radius": 2,
            "mod.keep_ratio": 1,
            "mod.gate": "off",
            "box_grammar": 0,
            "questions": '["Why?", "Is it red?"]',
            "mod.layers": "0,2",
        },
    )
    assert (config.vts.budget, config.vts.radius, config.mod.keep_ratio) == (0.25, 2, 1.0)
    assert (
        isinstance(config.mod.keep_ratio, float) and config.mod.gate is False and config.box_grammar is False
    )
    assert config.questions == ["Why?", "Is it red?"] and config.mod.layers == [0, 2]
    assert resolve_config(None, {"questions": "Is it red, or green?"}).questions == ["Is it red, or green?"]
    for overrides, problem in [
        ({"vts.budget": "nan"}, "vts.budget must be a finite number"),
        ({"vts.radius": 1.5}, "vts.radius must be a whole number"),
        ({"mod.gate": 2}, "mod.gate must be true or false"),
        ({"mode": 3}, "mode must be text"),
        ({"keyframe.skip": 0.1}, r"unknown setting 'keyframe.skip' \(did you mean keyframe.skip_threshold"),
        ({"skip": 0.1}, r"did you mean keyframe.skip_threshold"),
        ({"mod.layers": [-1]}, "mod.layers must be layer indices"),
    ]:
        with pytest.raises(InputError, match=problem):
            resolve_config(None, overrides, source="test")


def test_layers_model_then_side_folders_then_the_run(tmp_path):
    model, scorer = tmp_path / "model", tmp_path / "scorer"
    write_settings(model, {"keyframe.max_keyframes": 2, "keyframe.anchor": "first", "mod.keep_ratio": 0.3})
    write_settings(scorer, {"keyframe": {"max_keyframes": 3}, "mod": {"keep_ratio": 0.9}})
    assert resolve_config(model).keyframe.max_keyframes == 2
    with_scorer = resolve_config(model, {"keyframe_scorer": str(scorer)})
    assert (with_scorer.keyframe.max_keyframes, with_scorer.keyframe.anchor) == (3, "first")
    assert with_scorer.mod.keep_ratio == 0.3, "a scorer folder brings its keyframe section only"
    assert (
        resolve_config(
            model, {"keyframe_scorer": str(scorer), "keyframe.max_keyframes": 1}
        ).keyframe.max_keyframes
        == 1
    )
    assert resolve_config(None) == PipelineConfig()


def test_a_settings_file_keeps_the_sections_it_is_not_given_and_refuses_bad_ones(tmp_path):
    write_settings(tmp_path, {"keyframe.anchor": "first"})
    write_settings(tmp_path, {"mod.keep_ratio": 0.5})
    assert read_settings(tmp_path) == {"keyframe.anchor": "first", "mod.keep_ratio": 0.5}
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == {
        "keyframe": {"anchor": "first"},
        "mod": {"keep_ratio": 0.5},
    }
    with pytest.raises(InputError, match="mod.keep_ratio must be in"):
        write_settings(tmp_path, {"mod.keep_ratio": 0.0})
    (tmp_path / SETTINGS_FILE).write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object of settings"):
        read_settings(tmp_path)


def test_every_setting_has_a_type_the_ros_parameters_and_the_cli_can_carry():
    from vts_drive.ros.params import ROS_TYPES

    assert set(setting_keys().values()) <= set(ROS_TYPES)


def test_help_imports_no_torch():
    code = "import sys; from vts_drive.cli import build_parser; build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'cv2')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_older_model_folders_convert_to_one_settings_file(tmp_path):
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "keyframe_scorer.json").write_text(
        json.dumps(
            {
                "input_size": 32,
                "width": 8,
                "threshold": 0.5,
                "max_keyframes": 3,
                "skip_threshold": 0.0,
                "anchor": "first",
            }
        )
    )
    (tmp_path / "mod_router.json").write_text(
        json.dumps({"keep_ratio": 0.2, "layers": [1], "gate": True, "routing": "learned"})
    )
    with pytest.raises(InputError, match="convert_model_settings.py"):
        resolve_config(tmp_path)
    subprocess.run(
        [sys.executable, str(root / "scripts" / "convert_model_settings.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    assert not (tmp_path / "keyframe_scorer.json").exists() and not (tmp_path / "mod_router.json").exists()
    config = resolve_config(tmp_path)
    assert (config.keyframe.input_size, config.keyframe.max_keyframes, config.keyframe.anchor) == (
        32,
        3,
        "first",
    )
    assert (config.mod.keep_ratio, config.mod.layers) == (0.2, [1])
    # a newer model's older-layout files copied over a converted folder: refused, then converted over it
    (tmp_path / "mod_router.json").write_text(
        json.dumps({"keep_ratio": 0.3, "layers": [0], "gate": True, "routing": "learned"})
    )
    with pytest.raises(InputError, match="convert_model_settings.py"):
        resolve_config(tmp_path)
    subprocess.run(
        [sys.executable, str(root / "scripts" / "convert_model_settings.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    config = resolve_config(tmp_path)
    assert (config.mod.keep_ratio, config.mod.layers, config.keyframe.input_size) == (0.3, [0], 32)
