"""OUT/report.html as a person sees it: rendered by headless Chromium (Debian's package), checked
for what it shows (sample count, boxes where the truth and the modes put them, right/wrong marks,
the disagreement filter), for a clean console, and for asking nothing beyond the file."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_eval_judge import tiny_judge
from vts_drive.cli import main
from vts_drive.eval.benchmarks import SynthBenchmark
from vts_drive.eval.html_report import Cell, Frame, Row, SampleView, write_html_report
from vts_drive.eval.lingoqa import load_lingoqa
from vts_drive.synth.generate import SynthConfig, generate_dataset
from vts_drive.testing.chromium import Page, chromium_path

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)

MODES = "dense,prumerge"  # modes the tiny model runs without a keyframe scorer or routers
CAMERAS = ["front", "front_left", "front_right"]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "d"
    generate_dataset(
        out,
        SynthConfig(scenes=2, seed=3, frames=6, image_size=(96, 64), formats=("synth", "drama", "lingoqa")),
    )
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Windows of the tiny model are too small for two threads to pay off on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_eval(benchmark: str, data: Path, model: Path, out: Path, *extra: str) -> None:
    assert (
        main(
            [
                "eval",
                benchmark,
                "--data",
                str(data),
                "--model",
                str(model),
                "--modes",
                MODES,
                "--out",
                str(out),
                "--max-new-tokens",
                "4",
                *extra,
            ]
        )
        == 0
    )


def visible_samples(page: Page) -> int:
    return page.evaluate(
        "[...document.querySelectorAll('.sample')].filter(s => s.offsetParent !== null).length"
    )


def blank(png: Path) -> bool:
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
    return pixels.std() < 5 or len(np.unique(pixels.reshape(-1, 3), axis=0)) < 50


def test_synth_report_page_renders_every_sample_and_filters_disagreement(export, tiny_model_dir, tmp_path):
    out = tmp_path / "synth"
    run_eval("synth", export, tiny_model_dir, out, "--limit", "3", "--stride", "1")
    n = {json.loads((out / mode / "metrics.json").read_text())["metrics"]["n"] for mode in MODES.split(",")}
    assert n == {3}
    text = (out / "report.html").read_text()
    assert all(
        source.startswith("data:") for source in re.findall(r'src="([^"]*)"', text)
    )  # frames and plot inline

    with Page(out / "report.html") as page:
        assert page.errors() == []
        assert page.remote_requests() == []
        assert page.evaluate("document.getElementById('sample-count').textContent") == "3"
        assert page.evaluate("document.querySelectorAll('.sample').length") == 3 == visible_samples(page)
        assert page.evaluate("document.querySelectorAll('.sample .frame img').length") == 3 * len(CAMERAS)
        assert (
            page.evaluate("document.querySelectorAll('table.modes tr').length") == 1 + 2
        )  # header, dense, prumerge
        disagreeing = page.evaluate("document.querySelectorAll('.sample[data-disagree=\"1\"]').length")
        assert f"only samples where modes disagree ({disagreeing})" in page.evaluate(
            "document.body.innerText"
        )
        page.evaluate("document.getElementById('only-disagree').click()")
        assert visible_samples(page) == disagreeing
        assert page.evaluate("document.getElementById('shown-count').textContent") == str(disagreeing)
        assert not blank(page.screenshot(tmp_path / "page.png", full_page=True))
        assert page.errors() == []

    truth = SynthBenchmark(export, CAMERAS, 4, 1, limit=3).windows
    assert text.count('class="box truth"') == sum(window.truth.risk_bbox is not None for window in truth)

    page_before = text
    run_eval(
        "synth", export, tiny_model_dir, out, "--limit", "3", "--stride", "1"
    )  # resumed: nothing left to compute
    assert (out / "report.html").read_text() == page_before


def test_lingoqa_page_shows_references_and_the_judges_verdicts(export, tiny_model_dir, tmp_path):
    judge = tiny_judge(tmp_path / "judge", bias=50.0)  # judges every answer right
    out = tmp_path / "lingo"
    run_eval("lingoqa", export / "lingoqa", tiny_model_dir, out, "--limit", "1", "--judge", str(judge))
    questions = load_lingoqa(export / "lingoqa")
    asked = [q for q in questions if q.segment_id == questions[0].segment_id]
    with Page(out / "report.html") as page:
        assert page.errors() == [] and page.remote_requests() == []
        rows = page.evaluate(
            "[...document.querySelectorAll('.sample table.answers tr')].slice(1).map(r => [...r.cells].map(c => [c.className, c.innerText]))"
        )
        assert [row[0][1] for row in rows] == [q.question for q in asked]
        assert [row[1][1] for row in rows] == [" | ".join(q.references) for q in asked]
        assert all(cls == "right" and text.startswith("\u2713") for row in rows for cls, text in row[2:])
        assert len(rows[0]) == 2 + len(MODES.split(","))


def test_drama_page_draws_the_true_box_on_the_key_frame(export, tiny_model_dir, tmp_path):
    out = tmp_path / "drama"
    run_eval("drama", export / "drama", tiny_model_dir, out, "--split", "all")
    n = json.loads((out / "dense" / "metrics.json").read_text())["metrics"]["n"]
    with Page(out / "report.html") as page:
        assert page.errors() == []
        assert page.evaluate("document.querySelectorAll('.sample').length") == n > 0
        assert (
            page.evaluate("document.querySelectorAll('.sample .box.truth').length") == n
        )  # every DRAMA sample has a risk box


def frame_image() -> np.ndarray:
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, :, 2] = np.linspace(0, 255, 200, dtype=np.uint8)  # JPEG-friendly, not blank
    return image


def test_boxes_land_where_the_records_put_them_and_model_text_stays_text(tmp_path):
    truth, box = [0.1, 0.2, 0.5, 0.6], [0.5, 0.5, 0.9, 0.95]
    hostile = "<script>console.error('injected')</script>&amp;"
    views = [
        SampleView(
            "agree",
            [Frame("front", frame_image(), truth, {"a": box, "b": None})],
            [
                Row("Q?", "yes", {"a": Cell("yes", True), "b": Cell("Yes.", True)}),
                Row("caption", "", {"a": Cell("x"), "b": Cell("y")}, counts=False),
            ],
        ),
        SampleView(
            "disagree",
            [Frame("front", frame_image()), Frame("left", None)],
            [Row("Q?", "no", {"a": Cell(hostile, False), "b": Cell("no", True)})],
        ),
    ]
    plot = tmp_path / "plot.png"
    Image.fromarray(frame_image()).save(plot)
    path = tmp_path / "report.html"
    write_html_report(
        path, "t", ["note"], (["mode", "n"], [["a", "2"], ["b", "2"]]), plot, ["a", "b"], views, total=5
    )

    with Page(path) as page:
        assert page.errors() == []
        geometry = page.evaluate(
            "[...document.querySelectorAll('.sample')[0].querySelectorAll('.box')].map(b => {"
            " const f = b.parentElement.querySelector('img').getBoundingClientRect(), r = b.getBoundingClientRect();"
            " return [b.className, (r.left - f.left) / f.width, (r.top - f.top) / f.height, (r.right - f.left) / f.width, (r.bottom - f.top) / f.height]; })"
        )
        assert [g[0] for g in geometry] == ["box truth", "box"]
        for drawn, expected in zip(geometry, [truth, box]):
            assert drawn[1:] == pytest.approx(expected, abs=0.01)
        assert page.evaluate("document.querySelectorAll('.sample')[1].innerText").count(hostile) == 1
        assert "frame unreadable" in page.evaluate("document.querySelectorAll('.sample')[1].innerText")
        assert page.evaluate("[...document.querySelectorAll('.sample')].map(s => s.dataset.disagree)") == [
            "0",
            "1",
        ]
        assert "the first 2 of 5 samples are shown" in page.evaluate("document.body.innerText")
        classes = page.evaluate(
            "[...document.querySelectorAll('.sample')[1].querySelectorAll('td')].map(c => c.className)"
        )
        assert classes == ["reference", "wrong", "right"]
