"""Attacks on the DRAMA and LingoQA loaders: annotation files that point outside their data folder
(`..`, absolute paths, URLs holding `..`, symlinks), a LingoQA images column of the wrong type, and
DRAMA boxes far outside the image. Each goes through `vts-drive score` on real files: refused
with the entry named, or clipped and counted."""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_eval_loaders import entry, write_png
from vts_drive.cli import main
from vts_drive.errors import InputError
from vts_drive.eval import drama
from vts_drive.synth.generate import SynthConfig, generate_dataset

KEY_FRAME = "clips/c1/frame_000010.png"


def run(argv: list, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    return code, capsys.readouterr().err


@pytest.fixture
def drama_folder(tmp_path) -> Path:
    """A DRAMA folder with one clip, and beside the folder a frame that no entry may reach."""
    data = tmp_path / "drama"
    write_png(data / KEY_FRAME)  # 80 x 40 pixels
    write_png(tmp_path / "secret" / "frame_000010.png")
    return data


def score_drama(data: Path, predictions: list[dict], capsys, *extra: str) -> tuple[int, str]:
    path = data.parent / "predictions.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return run(
        ["score", "--benchmark", "drama", "--data", data, "--split", "all", "--predictions", path, *extra],
        capsys,
    )


@pytest.mark.parametrize(
    "field, reference",
    [
        ("s3_fileUrl", "../secret/frame_000010.png"),
        ("s3_fileUrl", "ABSOLUTE/secret/frame_000010.png"),
        ("s3_fileUrl", "https://bucket.s3.amazonaws.com/../secret/frame_000010.png"),
        ("s3_fileUrl", "clips/link/frame_000010.png"),  # clips/link is a symlink to ../../secret
        ("s3_instructionReference", "../secret/frame_000010.png"),
    ],
)
def test_drama_refuses_an_entry_whose_files_lie_outside_its_folder(drama_folder, capsys, field, reference):
    (drama_folder / "clips" / "link").symlink_to(drama_folder.parent / "secret", target_is_directory=True)
    reference = reference.replace("ABSOLUTE", str(drama_folder.parent))
    key = reference if field == "s3_fileUrl" else KEY_FRAME
    (drama_folder / drama.ANNOTATIONS).write_text(json.dumps([entry(key, **{field: reference})]))
    code, err = score_drama(drama_folder, [{"key": key, "caption": "a car brakes", "bbox": None}], capsys)
    assert code == 2
    assert f"entry {key!r}" in err and f"{field} {reference!r}" in err
    assert (
        f"outside the data folder {drama_folder}" in err
        and str(drama_folder.parent / "secret" / "frame_000010.png") in err
    )


def test_drama_window_refuses_a_neighbouring_frame_linked_outside(drama_folder):
    """The frames before the key frame are read too: one linked out of the folder spoils the window."""
    (drama_folder / "clips" / "c1" / "frame_000009.png").symlink_to(
        drama_folder.parent / "secret" / "frame_000010.png"
    )
    (drama_folder / drama.ANNOTATIONS).write_text(json.dumps([entry(KEY_FRAME)]))
    [sample] = drama.load_drama(drama_folder, split="all").samples
    with pytest.raises(
        InputError, match="frame_000009.png resolves to .*secret/frame_000010.png, outside the data folder"
    ):
        sample.window(2)


def test_drama_box_is_clipped_to_the_image_and_one_outside_it_is_counted(drama_folder, capsys, tmp_path):
    """Corners far outside the 80 x 40 key frame: the box is its part inside the image, and a box
    wholly outside is skipped with the other unusable geometries."""
    write_png(drama_folder / "clips" / "c2" / "frame_000010.png")
    overhanging = entry(KEY_FRAME, geometry=[[40, 20], [4000, 20], [4000, 3000], [40, 3000]])
    beyond = entry("clips/c2/frame_000010.png", geometry=[[100, 50], [200, 50], [200, 90], [100, 90]])
    (drama_folder / drama.ANNOTATIONS).write_text(
        json.dumps([overhanging, beyond, entry(KEY_FRAME, Risk="No")])
    )
    metrics = tmp_path / "metrics.json"
    predictions = [
        {"key": KEY_FRAME, "caption": "a car brakes", "bbox": [0.5, 0.5, 1.0, 1.0]},
        {"key": "clips/c2/frame_000010.png", "caption": "a car brakes", "bbox": [0.5, 0.5, 1.0, 1.0]},
    ]
    code, err = score_drama(drama_folder, predictions, capsys, "--json", metrics)
    assert code == 0
    assert json.loads(metrics.read_text())["bbox_miou"] == pytest.approx(1.0)
    assert "2 DRAMA entries skipped (no_geometry: 1, risk_no: 1)" in err


@pytest.fixture(scope="module")
def lingoqa_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "d"
    generate_dataset(out, SynthConfig(scenes=2, seed=3, frames=5, image_size=(64, 48), formats=("lingoqa",)))
    return out / "lingoqa"


def lingoqa_copy(export: Path, tmp_path: Path, images, every_row: bool = False) -> tuple[Path, dict]:
    """The export's LingoQA folder with the images of its first row (or of every row, which a
    column of another type needs) replaced; the first row is returned."""
    data = tmp_path / "lingoqa"
    shutil.copytree(export, data)
    rows = pq.read_table(data / "val.parquet").to_pylist()
    for row in rows if every_row else rows[:1]:
        row["images"] = images
    pq.write_table(pa.table({name: [row[name] for row in rows] for name in rows[0]}), data / "val.parquet")
    return data, rows[0]


def score_lingoqa(data: Path, row: dict, capsys) -> tuple[int, str]:
    predictions = data.parent / "predictions.csv"
    predictions.write_text(f"question_id,segment_id,answer\n{row['question_id']},{row['segment_id']},no\n")
    return run(["score", "--benchmark", "lingoqa", "--data", data, "--predictions", predictions], capsys)


@pytest.mark.parametrize("image", ["../secret.jpg", "ABSOLUTE", "images/link.jpg"])
def test_lingoqa_refuses_an_image_outside_its_folder(lingoqa_export, tmp_path, capsys, image):
    secret = tmp_path / "secret.jpg"
    shutil.copy(next(lingoqa_export.glob("images/val/*/0.jpg")), secret)
    (tmp_path / "lingoqa-link.jpg").symlink_to(secret)
    image = str(secret) if image == "ABSOLUTE" else image
    data, row = lingoqa_copy(lingoqa_export, tmp_path, [image, *["images/val/scene_00000/1.jpg"] * 4])
    (data / "images" / "link.jpg").symlink_to(tmp_path / "lingoqa-link.jpg")
    code, err = score_lingoqa(data, row, capsys)
    assert code == 2
    assert f"question {row['question_id']} of segment {row['segment_id']}" in err
    assert f"outside the data folder {data}" in err and str(secret) in err


@pytest.mark.parametrize("images", ["images/val/scene_00000/0.jpg", [1, 2, 3, 4, 5]])
def test_lingoqa_images_of_the_wrong_type_name_the_row(lingoqa_export, tmp_path, capsys, images):
    data, row = lingoqa_copy(lingoqa_export, tmp_path, images, every_row=True)
    code, err = score_lingoqa(data, row, capsys)
    assert code == 2
    assert f"row 1 (question {row['question_id']} of segment {row['segment_id']})" in err
    assert "images must be a list of paths" in err


def test_drama_key_frame_that_does_not_decode_is_skipped_and_counted(drama_folder, capsys):
    """Clipping needs the key frame's size: one that cannot be read is counted, not scored."""
    (drama_folder / "clips" / "c2").mkdir()
    (drama_folder / "clips" / "c2" / "frame_000010.png").write_bytes(b"not a png")
    (drama_folder / drama.ANNOTATIONS).write_text(
        json.dumps([entry(KEY_FRAME), entry("clips/c2/frame_000010.png")])
    )
    predictions = [
        {"key": key, "caption": "a car brakes", "bbox": None}
        for key in (KEY_FRAME, "clips/c2/frame_000010.png")
    ]
    code, err = score_drama(drama_folder, predictions, capsys)
    assert code == 0
    assert "1 DRAMA entries skipped (unreadable_key_frame: 1)" in err
