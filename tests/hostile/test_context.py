"""Windows longer than the model's context: too many cameras x frames for the positions the
checkpoint's text config holds (max_position_embeddings). They are refused with exit 2 and a line
naming the window, the positions it needs and the model's limit, instead of running past it."""

import json
import re
import shutil
from pathlib import Path

import pytest

from test_cli_describe import write_camera_folders
from vts_drive.cli import main

LIMIT = 256


@pytest.fixture
def short_context_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny checkpoint with a context of LIMIT positions (RoPE has no learned positions, so
    the weights fit any limit)."""
    folder = tmp_path / "short_context"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = LIMIT
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def describe(model: Path, images: Path, frames: int, capsys) -> tuple[int, str, str]:
    code = main(
        [
            "describe",
            "--model",
            str(model),
            "--images",
            str(images),
            "--frames",
            str(frames),
            "--max-new-tokens",
            "4",
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_window_longer_than_the_context_is_refused(short_context_model, tmp_path, capsys):
    images = write_camera_folders(tmp_path / "drive", frames=16)

    code, stdout, stderr = describe(short_context_model, images, 16, capsys)

    assert code == 2, stderr
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, stderr
    needed = re.search(r"3 cameras x 16 frames needs (\d+) positions", error_lines[0])
    assert needed and int(needed.group(1)) > LIMIT, stderr
    assert f"{LIMIT} (max_position_embeddings)" in error_lines[0]
    assert "description:" not in stdout  # no report from a window that did not fit


def test_window_within_the_context_still_runs(short_context_model, tmp_path, capsys):
    images = write_camera_folders(tmp_path / "drive", frames=2)

    code, stdout, stderr = describe(short_context_model, images, 2, capsys)

    assert code == 0, stderr
    assert stdout.count("description:") == 1
