"""Hostile checkpoints through `vts-drive describe`: a weight file missing tensors, weight files
cut short or overwritten, settings no image can be preprocessed with. Each stops the command with
exit 2 and one line naming the file (and the tensors or the field), never random weights or a
traceback."""

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from test_cli_describe import write_camera_folders
from vts_drive.cli import main
from vts_drive.config import SETTINGS_FILE, KeyframeConfig, ModConfig
from vts_drive.keyframe.scorer import KeyframeScorer, save_scorer
from vts_drive.mod.routing import Routers, save_routers


@pytest.fixture
def checkpoint(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny checkpoint, with a keyframe scorer and routers beside it."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    save_scorer(KeyframeScorer(KeyframeConfig()).eval(), folder)
    text = json.loads((folder / "config.json").read_text())["text_config"]
    save_routers(Routers(text["hidden_size"], text["num_hidden_layers"], ModConfig()), folder)
    return folder


def describe(folder: Path, tmp_path: Path, capsys, *options: str) -> tuple[int, str]:
    images = write_camera_folders(tmp_path / "drive")
    code = main(
        ["describe", "--model", str(folder), "--images", str(images), "--max-new-tokens", "2", *options]
    )
    return code, capsys.readouterr().err


def test_weights_missing_llm_layer_tensors_are_refused(checkpoint, tmp_path, capsys):
    weights = checkpoint / "model.safetensors"
    tensors = load_file(weights)
    kept = {name: tensor for name, tensor in tensors.items() if "language_model.model.layers.1." not in name}
    assert 0 < len(kept) < len(tensors)
    save_file(kept, weights, metadata={"format": "pt"})

    code, stderr = describe(checkpoint, tmp_path, capsys)

    assert code == 2, stderr
    assert "Traceback" not in stderr and "window(s) described" not in stderr
    assert str(weights) in stderr
    assert f"{len(tensors) - len(kept)} tensors" in stderr
    assert "layers.1.mlp.down_proj.weight" in stderr and "layers.1.self_attn.q_proj.weight" in stderr


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize(
    "file, mode",
    [
        ("model.safetensors", "dense"),
        ("keyframe_scorer.safetensors", "vts"),
        ("mod_router.safetensors", "mod"),
    ],
)
def test_unreadable_weight_file_is_named(checkpoint, tmp_path, capsys, file, mode, damage):
    weights = checkpoint / file
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x93NUMPY not safetensors" * 8)

    code, stderr = describe(checkpoint, tmp_path, capsys, "--mode", mode)

    assert code == 2, stderr
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and str(weights) in error_lines[0], stderr


@pytest.mark.parametrize(
    "file, field, value",
    [
        ("preprocessor_config.json", "image_mean", [0.5]),
        ("preprocessor_config.json", "image_std", [0.5, 0.0, 0.5]),
        ("config.json", "vision_config.patch_size", 0),
        ("config.json", "vision_config.image_size", -32),
        ("config.json", "text_config.max_position_embeddings", 0),
    ],
)
def test_settings_that_cannot_work_are_named(checkpoint, tmp_path, capsys, file, field, value):
    path = checkpoint / file
    settings = json.loads(path.read_text())
    *sections, name = field.split(".")
    target = settings
    for section in sections:
        target = target[section]
    target[name] = value
    path.write_text(json.dumps(settings))

    code, stderr = describe(checkpoint, tmp_path, capsys)

    assert code == 2, stderr
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and str(path) in error_lines[0] and field in error_lines[0], stderr


def test_shard_index_cannot_point_outside_the_checkpoint(checkpoint, tmp_path, capsys):
    """A sharded checkpoint's index names its shard files; a name that climbs out of the folder is refused."""
    outside = tmp_path / "elsewhere.safetensors"
    (checkpoint / "model.safetensors").rename(outside)
    names = load_file(outside).keys()
    index = checkpoint / "model.safetensors.index.json"
    index.write_text(
        json.dumps({"metadata": {}, "weight_map": {name: "../elsewhere.safetensors" for name in names}})
    )

    code, stderr = describe(checkpoint, tmp_path, capsys)

    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert str(index) in stderr and "../elsewhere.safetensors" in stderr


@pytest.mark.parametrize(
    "section, field, value, mode",
    [
        ("keyframe", "input_size", 0, "vts"),
        ("mod", "keep_ratio", 5.0, "mod"),
        ("mod", "routing", "sideways", "mod"),
        ("mod", "gate", "sometimes", "mod"),
        ("vts", "nonsense", 1, "vts"),
    ],
)
def test_scorer_and_router_settings_that_cannot_work_are_named(
    checkpoint, tmp_path, capsys, section, field, value, mode
):
    path = checkpoint / SETTINGS_FILE
    settings = json.loads(path.read_text())
    settings.setdefault(section, {})[field] = value
    path.write_text(json.dumps(settings))

    code, stderr = describe(checkpoint, tmp_path, capsys, "--mode", mode)

    assert code == 2, stderr
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and str(path) in error_lines[0] and f"{section}.{field}" in error_lines[0], (
        stderr
    )


def test_a_checkpoint_in_the_older_settings_layout_says_how_to_convert_it(checkpoint, tmp_path, capsys):
    (checkpoint / SETTINGS_FILE).unlink()
    (checkpoint / "mod_router.json").write_text(
        json.dumps({"keep_ratio": 0.2, "layers": [1], "gate": True, "routing": "learned"})
    )

    code, stderr = describe(checkpoint, tmp_path, capsys)

    assert code == 2 and "Traceback" not in stderr, stderr
    assert f"scripts/convert_model_settings.py {checkpoint}" in stderr
