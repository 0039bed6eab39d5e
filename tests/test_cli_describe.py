"""`vts-drive describe` end to end, and one clear error line (exit 2) for each bad input."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from transformers import Qwen2Config, Qwen2ForCausalLM

from conftest import CAMERAS
from vts_drive.cli import main
from vts_drive.report import validate_report
from vts_drive.results_file import read_reports


def write_camera_folders(root: Path, frames: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for camera in CAMERAS:
        (root / camera).mkdir(parents=True)
        for t in range(frames):
            cv2.imwrite(
                str(root / camera / f"{t:06d}.jpg"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            )
    return root


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_describe_images_writes_valid_report(tiny_model_dir, tmp_path, capsys):
    images = write_camera_folders(tmp_path / "drive")
    out = tmp_path / "out.json"
    code, stdout, _ = run_cli(
        [
            "describe",
            "--model",
            str(tiny_model_dir),
            "--images",
            str(images),
            "--frames",
            "4",
            "--json",
            str(out),
            "--max-new-tokens",
            "6",
        ],
        capsys,
    )
    assert code == 0
    [report] = read_reports(out)  # one window: one report after the header
    validate_report(report)
    assert report["cameras"] == CAMERAS and report["frames_per_camera"] == 4
    assert "description:" in stdout


def test_describe_videos_and_questions(tiny_model_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    videos = []
    for camera in ["front", "front_left"]:
        path = tmp_path / f"{camera}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
        for _ in range(6):
            writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        writer.release()
        videos += ["--video", f"{camera}={path}"]
    questions = tmp_path / "questions.txt"
    questions.write_text("# asked of every window\nIs the light red?\nHow many cars are ahead?\n")
    out = tmp_path / "out.jsonl"
    code, _, _ = run_cli(
        [
            "describe",
            "--model",
            str(tiny_model_dir),
            *videos,
            "--frames",
            "3",
            "--questions",
            str(questions),
            "--json",
            str(out),
            "--max-new-tokens",
            "4",
        ],
        capsys,
    )
    assert code == 0
    reports = read_reports(out)
    assert len(reports) == 2
    for report in reports:
        validate_report(report)
        assert [qa["question"] for qa in report["qa"]] == ["Is the light red?", "How many cars are ahead?"]


def test_bad_window_is_skipped_counted_and_others_go_on(tiny_model_dir, tmp_path, capsys):
    images = write_camera_folders(tmp_path / "drive", frames=8)
    (images / "front_left" / "000005.jpg").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    code, _, stderr = run_cli(
        [
            "describe",
            "--model",
            str(tiny_model_dir),
            "--images",
            str(images),
            "--frames",
            "4",
            "--json",
            str(out),
            "--max-new-tokens",
            "2",
        ],
        capsys,
    )
    assert code == 2
    assert "front_left/000005.jpg is empty (0 bytes)" in stderr
    assert "1 window(s) described, 1 skipped" in stderr
    assert len(read_reports(out)) == 1


@pytest.fixture
def other_architecture(tmp_path):
    folder = tmp_path / "qwen2"
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(folder)
    return folder


def test_each_bad_input_gets_one_clear_line(tiny_model_dir, tmp_path, capsys, other_architecture):
    good = write_camera_folders(tmp_path / "good")
    uneven = write_camera_folders(tmp_path / "uneven")
    (uneven / "front" / "000003.jpg").unlink()
    corrupt = write_camera_folders(tmp_path / "corrupt")
    (corrupt / "front" / "000002.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"\x00" * 100)
    model = ["--model", str(tiny_model_dir)]
    cases = [
        (
            ["--model", str(tmp_path / "missing"), "--images", str(good)],
            "model folder .*missing does not exist",
        ),
        (["--model", str(other_architecture), "--images", str(good)], "qwen2 checkpoint"),
        ([*model, "--images", str(tmp_path / "nowhere")], "image folder .*nowhere does not exist"),
        ([*model, "--images", str(uneven)], "different numbers of frames"),
        ([*model, "--images", str(corrupt)], "corrupt/front/000002.jpg cannot be decoded"),
        ([*model, "--video", f"front={broken_video}"], "broken.mp4 cannot be decoded"),
        ([*model, "--video", "front"], "--video takes CAMERA=FILE"),
        ([*model, "--images", str(good), "--frames", "9"], "need at least 9 frames"),
        (
            [*model, "--images", str(good), "--questions", str(tmp_path / "q.txt")],
            "questions file .*q.txt does not exist",
        ),
        ([*model, "--images", str(good), "--mode", "turbo"], "mode 'turbo' is not available"),
        (
            [*model, "--images", str(good), "--skip-threshold", "-0.1"],
            "--skip-threshold: keyframe.skip_threshold must be at least 0",
        ),
        (
            [*model, "--images", str(good), "--keep-ratio", "0"],
            r"--keep-ratio: mod.keep_ratio must be in \(0, 1\]",
        ),
        (
            [*model, "--images", str(good), "--max-keyframes", "0"],
            "--max-keyframes: keyframe.max_keyframes must be at least 1",
        ),
        (
            [*model, "--images", str(good), "--set", "vts.budjet=0.3"],
            "unknown setting 'vts.budjet' .did you mean vts.budget",
        ),
        (
            [*model, "--images", str(good), "--set", "mod.gate=maybe"],
            "--set mod.gate=maybe: mod.gate must be true or false",
        ),
    ]
    import re

    for args, pattern in cases:
        code, _, stderr = run_cli(["describe", *args], capsys)
        error_lines = [line for line in stderr.splitlines() if "error" in line or "skipped:" in line]
        assert code == 2, (args, stderr)
        assert len(error_lines) == 1 and re.search(pattern, error_lines[0]), (args, stderr)
        assert "Traceback" not in stderr


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "vts_drive", "--help"], capture_output=True, text=True, check=True
    )
    assert "describe" in result.stdout


def test_pipeline_settings_reach_the_pipeline_config():
    """Each pipeline flag is short for one dotted key; --set sets any key and wins over the flags;
    a flag left out leaves the model's setting alone (it is not an override)."""
    import argparse

    from vts_drive.cli.common import add_pipeline_arguments, pipeline_overrides

    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    argv = [
        "--skip-threshold",
        "0.4",
        "--keep-ratio",
        "0.3",
        "--keyframe-anchor",
        "first",
        "--max-keyframes",
        "1",
        "--free-box",
        "--no-draft",
        "--set",
        "vts.budget=0.3",
        "--set",
        "keyframe.max_keyframes=2",
    ]
    overrides = pipeline_overrides(parser.parse_args(argv))
    assert overrides == {
        "keyframe.skip_threshold": 0.4,
        "mod.keep_ratio": 0.3,
        "keyframe.anchor": "first",
        "keyframe.max_keyframes": "2",
        "box_grammar": False,
        "draft": False,
        "vts.budget": "0.3",
        "device": "cpu",
    }
    defaults = pipeline_overrides(parser.parse_args([]))
    assert defaults == {"device": "cpu"}
