"""Attacks on the numeric flags of describe, replay, synth and demo: zero, negative, nan and inf
where only a positive finite number makes sense. argparse refuses each (exit 2, naming the flag)
before anything is read or loaded."""

from pathlib import Path

import pytest

from test_cli_describe import write_camera_folders
from test_ros_bags import write_camera_bag
from vts_drive.cli import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flags")
    write_camera_folders(root / "drive", frames=2)
    write_camera_bag(root / "bag", frames=2)
    return root


def command(name: str, root: Path, model: Path) -> list[str]:
    out = root / "out" / name
    return {
        "describe": [
            "describe",
            "--images",
            root / "drive",
            "--frames",
            "2",
            "--json",
            out,
            "--model",
            model,
            "--max-new-tokens",
            "2",
        ],
        "replay": [
            "replay",
            root / "bag",
            "--out",
            out,
            "--frames",
            "2",
            "--model",
            model,
            "--max-new-tokens",
            "2",
        ],
        "synth": [
            "synth",
            "--out",
            out,
            "--scenes",
            "1",
            "--frames",
            "2",
            "--image-size",
            "32x32",
            "--formats",
            "synth",
        ],
        "demo": [
            "demo",
            "--out",
            out,
            "--scenes",
            "1",
            "--model",
            model,
            "--mode",
            "dense",
            "--max-new-tokens",
            "2",
        ],
    }[name]


CASES = [
    *(("describe", "--fps", value) for value in ("0", "-10", "nan", "inf")),
    ("describe", "--stride", "0"),
    ("describe", "--skip-threshold", "nan"),
    *(("synth", "--fps", value) for value in ("0", "-10", "nan")),
    *(("replay", "--rate", value) for value in ("0", "nan")),
    *(("replay", "--slop", value) for value in ("nan", "inf")),
    *(("replay", "--stale-after", value) for value in ("0", "nan")),
    ("demo", "--frames", "0"),
    ("demo", "--stride", "0"),
]


@pytest.mark.parametrize("name, flag, value", CASES)
def test_a_bad_number_is_refused_naming_the_flag(inputs, tiny_model_dir, capsys, name, flag, value):
    argv = [str(arg) for arg in command(name, inputs, tiny_model_dir)] + [flag, value]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: " in err and repr(value) in err, err
    assert not (inputs / "out" / name).exists()
