"""OUT/report.html: the modes' table and plot, and per sample what each mode answered next to the
truth, on one page that needs nothing else (images inline as data URIs, no font, script or request
leaves the file). It shows why a mode lost a box or an answer without reading predictions.jsonl.

A benchmark turns a sample and the records its modes wrote into a SampleView: frames with boxes
(ground truth dashed, one colour per mode) and rows of reference vs. each mode's answer, marked
right or wrong where the benchmark can tell. Modes disagree on a sample when, on some row that
counts, their outcomes differ: the verdicts where there are verdicts, else the answers' text. The
page's one control shows only such samples.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_SAMPLES = 200  # the page stays a few MB: a synthdrive frame is ~8 KB as JPEG
MAX_FRAME_WIDTH = 480  # DRAMA key frames are ~2 MP; the page shows them 320 px wide
TRUTH_COLOUR = "#ffffff"  # dashed, with a black outline: visible on sky, road and dark frames
# matplotlib's default colours, in the order pareto.png gives them to the modes it plots
MODE_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MISSING = "\u2014"  # a mode without a record for this sample


@dataclass
class Frame:
    camera: str
    image: np.ndarray | None  # [H, W, 3] uint8 RGB; None when it cannot be read
    truth_box: list[float] | None = None  # [x1, y1, x2, y2] in [0, 1]
    boxes: dict[str, list[float] | None] = field(default_factory=dict)  # mode -> its box on this frame


@dataclass
class Cell:
    text: str
    verdict: bool | None = None  # right / wrong; None where nothing decides


@dataclass
class Row:
    label: str
    reference: str
    answers: dict[str, Cell]  # mode -> its answer (modes without a record are absent)
    counts: bool = True  # whether modes differing here make the sample one where they disagree

    def outcomes(self) -> set:
        return {
            cell.verdict if cell.verdict is not None else " ".join(cell.text.lower().split())
            for cell in self.answers.values()
        }


@dataclass
class SampleView:
    key: str
    frames: list[Frame]
    rows: list[Row]

    @property
    def modes_disagree(self) -> bool:
        return any(row.counts and len(row.outcomes()) > 1 for row in self.rows)


def valid_box(box: object) -> list[float] | None:
    """A box as four finite numbers clipped to [0, 1], or None: records from disk are drawn, not trusted."""
    if not (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, int | float) and math.isfinite(v) for v in box)
    ):
        return None
    return [min(1.0, max(0.0, float(v))) for v in box]


def format_box(box: list[float] | None) -> str:
    return "none" if box is None else "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def image_uri(image: np.ndarray) -> str:
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    if picture.width > MAX_FRAME_WIDTH:
        picture = picture.resize((MAX_FRAME_WIDTH, round(picture.height * MAX_FRAME_WIDTH / picture.width)))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def box_div(box: list[float], colour: str, title: str, truth: bool = False) -> str:
    x1, y1, x2, y2 = box
    style = (
        f"left:{x1 * 100:.2f}%;top:{y1 * 100:.2f}%;width:{max(x2 - x1, 0) * 100:.2f}%;height:{max(y2 - y1, 0) * 100:.2f}%;"
        f"border-color:{colour}"
    )
    return f'<div class="box{" truth" if truth else ""}" style="{style}" title="{html.escape(title)}"></div>'


def frame_html(frame: Frame, colours: dict[str, str]) -> str:
    if frame.image is None:
        picture = '<div class="unreadable">frame unreadable</div>'
    else:
        picture = f'<img src="{image_uri(frame.image)}" alt="{html.escape(frame.camera)}">'
    boxes = (
        [box_div(frame.truth_box, TRUTH_COLOUR, f"ground truth {format_box(frame.truth_box)}", truth=True)]
        if frame.truth_box
        else []
    )
    boxes += [
        box_div(box, colours[mode], f"{mode} {format_box(box)}")
        for mode, box in frame.boxes.items()
        if box is not None
    ]
    # boxes are placed in % of the picture's box, which holds the image alone (not the caption)
    return f'<figure class="frame"><div class="picture">{picture}{"".join(boxes)}</div><figcaption>{html.escape(frame.camera)}</figcaption></figure>'


def cell_html(cell: Cell | None) -> str:
    if cell is None:
        return f'<td class="missing">{MISSING}</td>'
    mark = {True: ("right", "\u2713 "), False: ("wrong", "\u2717 "), None: ("", "")}[cell.verdict]
    return f'<td class="{mark[0]}">{mark[1]}{html.escape(cell.text)}</td>'


def sample_html(view: SampleView, modes: list[str], colours: dict[str, str]) -> str:
    header = (
        "<tr><th></th><th>reference</th>"
        + "".join(
            f'<th><span class="swatch" style="background:{colours[m]}"></span>{html.escape(m)}</th>'
            for m in modes
        )
        + "</tr>"
    )
    rows = "".join(
        f'<tr><th>{html.escape(row.label)}</th><td class="reference">{html.escape(row.reference)}</td>'
        + "".join(cell_html(row.answers.get(mode)) for mode in modes)
        + "</tr>"
        for row in view.rows
    )
    disagree = view.modes_disagree
    return (
        f'<section class="sample" data-disagree="{int(disagree)}"><h3>{html.escape(view.key)}'
        + (' <span class="badge">modes disagree</span>' if disagree else "")
        + f'</h3><div class="frames">{"".join(frame_html(f, colours) for f in view.frames)}</div>'
        + f'<table class="answers">{header}{rows}</table></section>'
    )


def table_html(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="modes"><tr>{head}</tr>{body}</table>'


STYLE = """
body{font-family:"DejaVu Sans",Arial,sans-serif;margin:1.5em;color:#1d1d1f;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.15em;margin:1.4em 0 .5em} h3{font-size:1em;margin:0 0 .5em}
.note{color:#555;font-size:.9em;margin:.2em 0}
table{border-collapse:collapse;font-size:.85em;background:#fff}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
table.modes td{font-variant-numeric:tabular-nums}
.plot{max-width:560px;border:1px solid #ddd;background:#fff}
.legend span{margin-right:1em;white-space:nowrap}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em;border:1px solid #0003}
.swatch.truth{background:#000;border:2px dashed #fff;outline:1px solid #000}
.controls{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ddd;z-index:2}
.sample{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.7em;margin:.8em 0}
.badge{background:#ff9f0a;color:#000;border-radius:3px;padding:0 .4em;font-size:.8em;font-weight:normal}
.frames{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:.5em}
.frame{margin:0;width:320px} .picture{position:relative}
.frame img{display:block;width:100%;image-rendering:auto}
.frame figcaption{font-size:.8em;color:#555}
.unreadable{width:100%;height:120px;background:#eee;color:#777;display:flex;align-items:center;justify-content:center}
.box{position:absolute;border:2px solid;box-sizing:border-box;pointer-events:auto}
.box.truth{border-style:dashed;outline:1px solid #000}
td.right{background:#e3f6e5} td.wrong{background:#fde4e2} td.missing{color:#999} td.reference{color:#333;background:#f4f4f4}
"""

SCRIPT = """
const onlyDisagree = document.getElementById('only-disagree');
function applyFilter() {
  let shown = 0;
  for (const sample of document.querySelectorAll('.sample')) {
    sample.hidden = onlyDisagree.checked && sample.dataset.disagree !== '1';
    if (!sample.hidden) shown += 1;
  }
  document.getElementById('shown-count').textContent = String(shown);
}
onlyDisagree.addEventListener('change', applyFilter);
applyFilter();
"""


def write_html_report(
    path: Path,
    title: str,
    notes: list[str],
    table: tuple[list[str], list[list[str]]],
    plot: Path | None,
    modes: list[str],
    views: list[SampleView],
    total: int,
) -> None:
    """The page: `views` are the first samples (at most MAX_SAMPLES) of the `total` that some mode answered."""
    colours = {mode: MODE_COLOURS[i % len(MODE_COLOURS)] for i, mode in enumerate(modes)}
    disagreeing = sum(view.modes_disagree for view in views)
    legend = '<span><span class="swatch truth"></span>ground truth</span>' + "".join(
        f'<span><span class="swatch" style="background:{colours[m]}"></span>{html.escape(m)}</span>'
        for m in modes
    )
    shown_note = (
        f"the first {len(views)} of {total} samples are shown"
        if len(views) < total
        else f"all {total} samples are shown"
    )
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="note">{html.escape(note)}</p>' for note in notes),
        "<h2>Modes</h2>",
        table_html(*table),
        f'<h2>Accuracy against throughput</h2><img class="plot" src="{png_uri(plot)}" alt="accuracy against throughput">'
        if plot
        else "",
        f'<h2>Samples (<span id="sample-count">{total}</span>)</h2>',
        f'<p class="note">{shown_note}; frames are each camera\'s newest, which the boxes refer to; '
        "\u2713 right, \u2717 wrong where the benchmark can tell.</p>",
        f'<div class="controls"><label><input type="checkbox" id="only-disagree"> only samples where modes disagree ({disagreeing})</label>'
        f' &middot; showing <b id="shown-count">{len(views)}</b> &middot; <span class="legend">{legend}</span></div>',
        *(sample_html(view, modes, colours) for view in views),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + f"\n<script>{SCRIPT}</script></body></html>\n"
    )
    Path(path).write_text(page, encoding="utf-8")
