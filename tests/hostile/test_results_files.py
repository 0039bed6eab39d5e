"""Attacks on the results files of `replay --out` and `describe --json`: another bag's results, a
rerun with another mode, a rerun on other input, a run killed mid-line, a folder as the file, and
inputs of which nothing can be described. Everything goes through the real CLI on real files."""

import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from test_cli_describe import write_camera_folders
from test_ros_bags import CAMERAS, MS, START_NS, write_camera_bag
from vts_drive.cli import main
from vts_drive.ros.bag_writer import IMAGE, BagWriter
from vts_drive.ros.typestore import TYPESTORE, header

HEADER_KEY = "vts_drive_results"


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(arg) for arg in argv])
    return code, capsys.readouterr().err


def reports_of(path: Path) -> list[dict]:
    """The reports of a results file, after checking that its first line is the header."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert HEADER_KEY in lines[0] and "source" in lines[0]
    assert not any(HEADER_KEY in line for line in lines[1:])
    return lines[1:]


def replay_args(bag: Path, out: Path, model: Path, *extra: str) -> list:
    return [
        "replay",
        bag,
        "--model",
        model,
        "--out",
        out,
        "--frames",
        "2",
        "--stride",
        "2",
        "--max-new-tokens",
        "4",
        *extra,
    ]


def describe_args(images: Path, out: Path, model: Path, *extra: str) -> list:
    return [
        "describe",
        "--model",
        model,
        "--images",
        images,
        "--frames",
        "2",
        "--json",
        out,
        "--max-new-tokens",
        "4",
        *extra,
    ]


def test_replay_refuses_the_results_of_another_bag(tmp_path, tiny_model_dir, capsys):
    """Two bags with the same stamps and cameras (as synthdrive writes them) but other images:
    resuming would pair the first bag's reports with the second bag's images."""
    first, second = (
        write_camera_bag(tmp_path / "first", seed=1),
        write_camera_bag(tmp_path / "second", seed=2),
    )
    out, out_bag = tmp_path / "results.jsonl", tmp_path / "results_bag"
    assert run(replay_args(first, out, tiny_model_dir), capsys)[0] == 0
    written = out.read_bytes()
    code, err = run(replay_args(second, out, tiny_model_dir, "--out-bag", out_bag), capsys)
    assert code == 2 and str(out) in err and "input.bags" in err and "--force" in err, err
    assert out.read_bytes() == written and not out_bag.exists()

    code, err = run(replay_args(second, out, tiny_model_dir, "--out-bag", out_bag, "--force"), capsys)
    assert code == 0 and "3 window(s) described, 0 already" in err, err
    reports = reports_of(out)
    assert len(reports) == 3
    with AnyReader([out_bag]) as reader:
        risk = [
            reader.deserialize(d, c.msgtype).data
            for c, _, d in reader.messages()
            if c.topic == "/vts_drive/risk_qa"
        ]
    assert [json.loads(text) for text in risk] == reports  # the results bag holds exactly the new reports


def test_replay_rerun_with_another_mode_is_refused(tmp_path, tiny_model_dir, capsys):
    bag, out = write_camera_bag(tmp_path / "bag"), tmp_path / "results.jsonl"
    assert run(replay_args(bag, out, tiny_model_dir), capsys)[0] == 0
    written = out.read_bytes()
    code, err = run(replay_args(bag, out, tiny_model_dir, "--mode", "prumerge"), capsys)
    assert code == 2 and "pipeline.mode" in err and '"dense"' in err and '"prumerge"' in err, err
    assert out.read_bytes() == written
    assert {report["mode"] for report in reports_of(out)} == {"dense"}


def test_replay_refuses_a_results_file_without_header(tmp_path, tiny_model_dir, capsys):
    """A file of bare reports cannot say what produced them, so nothing in it is resumed."""
    bag, out = write_camera_bag(tmp_path / "bag"), tmp_path / "results.jsonl"
    stamp = (START_NS + 100 * MS + 8 * MS) / 1e9  # the first window's stamp: the old check would accept it
    out.write_text(json.dumps({"schema": "vts_drive.report/1", "stamp": stamp, "cameras": CAMERAS}) + "\n")
    code, err = run(replay_args(bag, out, tiny_model_dir), capsys)
    assert code == 2 and str(out) in err and "header" in err, err


def test_describe_twice_appends_nothing_and_another_input_is_refused(tmp_path, tiny_model_dir, capsys):
    images, out = write_camera_folders(tmp_path / "drive", frames=4), tmp_path / "reports.jsonl"
    assert run(describe_args(images, out, tiny_model_dir), capsys)[0] == 0
    written = out.read_bytes()
    assert len(reports_of(out)) == 2
    code, err = run(describe_args(images, out, tiny_model_dir), capsys)
    assert code == 0 and "0 window(s) described, 0 skipped, 2 already in" in err, err
    assert out.read_bytes() == written

    other = write_camera_folders(tmp_path / "other", frames=4, seed=1)
    code, err = run(describe_args(other, out, tiny_model_dir), capsys)
    assert code == 2 and str(out) in err and "input.images" in err, err
    assert out.read_bytes() == written


def test_killed_describe_resumes_losing_nothing(tmp_path, tiny_model_dir, capsys):
    images, out = write_camera_folders(tmp_path / "drive", frames=8), tmp_path / "reports.jsonl"
    assert run(describe_args(images, out, tiny_model_dir), capsys)[0] == 0
    stamps = [report["stamp"] for report in reports_of(out)]
    lines = out.read_bytes().splitlines(keepends=True)
    kept = b"".join(lines[:3])  # the header and two reports
    out.write_bytes(kept + lines[3][:40])  # the third report cut short by a kill
    code, err = run(describe_args(images, out, tiny_model_dir), capsys)
    assert code == 0 and "2 window(s) described, 0 skipped, 2 already in" in err, err
    assert out.read_bytes().startswith(kept)
    assert [report["stamp"] for report in reports_of(out)] == stamps


def test_describe_json_pointing_at_a_folder_is_one_clear_error(tmp_path, tiny_model_dir, capsys):
    images, folder = write_camera_folders(tmp_path / "drive", frames=2), tmp_path / "reports"
    folder.mkdir()
    code, err = run(describe_args(images, folder, tiny_model_dir), capsys)
    assert code == 2 and f"{folder} is not a file" in err and "Traceback" not in err, err


def write_unusable_bag(path: Path, encoding: str, stamp_ns: int | None) -> Path:
    """Three cameras, six frames each, none usable: an encoding replay cannot decode, or every
    header stamp the same (stamp_ns; None: stamps as recorded)."""
    with BagWriter(path) as bag:
        for t in range(6):
            for i, camera in enumerate(CAMERAS):
                log_time = START_NS + t * 100 * MS + i * 4 * MS
                channels = 2 if encoding == "16UC1" else 3
                msg = TYPESTORE.types[IMAGE](
                    header=header(log_time if stamp_ns is None else stamp_ns, camera),
                    height=24,
                    width=32,
                    encoding=encoding,
                    is_bigendian=0,
                    step=32 * channels,
                    data=np.zeros(24 * 32 * channels, np.uint8),
                )
                bag.add_serialized(
                    f"/cam_{camera}/image_raw", IMAGE, log_time, TYPESTORE.serialize_cdr(msg, IMAGE)
                )
    return path


# every stamp 0: the message names the frames that went nowhere, whichever stage refused them
@pytest.mark.parametrize("encoding, stamp_ns, reason", [("16UC1", None, "'16UC1'"), ("rgb8", 0, "frame")])
def test_replay_with_no_usable_frame_exits_2_saying_why(
    tmp_path, tiny_model_dir, capsys, encoding, stamp_ns, reason
):
    bag = write_unusable_bag(tmp_path / "bag", encoding, stamp_ns)
    code, err = run(
        replay_args(bag, tmp_path / "results.jsonl", tiny_model_dir, "--out-bag", tmp_path / "out_bag"),
        capsys,
    )
    assert code == 2 and f"no window of {bag} was described" in err and reason in err, err
    assert not (tmp_path / "out_bag").exists()


def test_describe_with_nothing_describable_exits_2_saying_why(tmp_path, tiny_model_dir, capsys):
    images = write_camera_folders(tmp_path / "drive", frames=4)
    for frame in (images / "front").iterdir():
        frame.write_bytes(b"not a jpeg")
    code, err = run(describe_args(images, tmp_path / "reports.jsonl", tiny_model_dir), capsys)
    assert (
        code == 2 and f"no window of {images} could be described" in err and "2 window(s) skipped" in err
    ), err
