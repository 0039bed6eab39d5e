"""The scene report (schema vts_drive.report/1) and parsing of the model's risk answer."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources

import jsonschema

SCHEMA_ID = "vts_drive.report/1"

# The risk prompt asks for this form; the synthdrive training answers use it too:
#   object: pedestrian; camera: front; box: [0.41, 0.52, 0.47, 0.70]; caption: the pedestrian ...
# and "none" when nothing in view is a risk.
NO_RISK_ANSWERS = ("none", "no risk", "nothing")
_FIELD = re.compile(
    r"(object|camera|box|caption)\s*:\s*(.*?)\s*(?=(?:;\s*(?:object|camera|box|caption)\s*:)|$)", re.I | re.S
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Risk:
    present: bool
    object: str | None
    camera: str | None
    bbox: list[float] | None  # [x1, y1, x2, y2] in [0, 1] of `camera`'s image
    caption: str
    raw: str


@dataclass
class QA:
    question: str
    answer: str


@dataclass
class SceneReport:
    stamp: float
    cameras: list[str]
    frames_per_camera: int
    mode: str
    model: str
    description: str
    risk: Risk
    qa: list[QA]
    timings_ms: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA_ID, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@lru_cache(maxsize=1)
def report_schema() -> dict:
    text = resources.files("vts_drive").joinpath("schema/report.schema.json").read_text()
    return json.loads(text)


def validate_report(report: dict) -> None:
    """Raise jsonschema.ValidationError when `report` is not a valid vts_drive.report/1."""
    jsonschema.validate(report, report_schema())


def parse_bbox(text: str) -> list[float] | None:
    """Read '[x1, y1, x2, y2]' back; None unless it is a well-formed normalised box."""
    numbers = [float(n) for n in _NUMBER.findall(text)]
    if len(numbers) != 4:
        return None
    x1, y1, x2, y2 = numbers
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        return None
    return numbers


def parse_risk(answer: str, default_camera: str) -> Risk:
    """Turn the model's risk answer into fields; malformed parts become None, never an exception."""
    text = answer.strip()
    if not text or text.lower().rstrip(".") in NO_RISK_ANSWERS:
        return Risk(present=False, object=None, camera=None, bbox=None, caption="", raw=answer)
    fields = {key.lower(): value.strip().rstrip(";").strip() for key, value in _FIELD.findall(text)}
    if not fields:
        # Free text from a model that ignored the format: keep it as the caption.
        return Risk(present=True, object=None, camera=default_camera, bbox=None, caption=text, raw=answer)
    bbox = parse_bbox(fields["box"]) if "box" in fields else None
    return Risk(
        present=True,
        object=fields.get("object") or None,
        camera=fields.get("camera") or default_camera,
        bbox=bbox,
        caption=fields.get("caption", ""),
        raw=answer,
    )


def format_risk(object_name: str, camera: str, bbox: list[float], caption: str) -> str:
    """The answer parse_risk reads back; used for training targets."""
    box = ", ".join(f"{v:.2f}" for v in bbox)
    return f"object: {object_name}; camera: {camera}; box: [{box}]; caption: {caption}"


def format_report_text(report: SceneReport) -> str:
    """A few readable lines per report, for terminals."""
    risk = report.risk
    if risk.present:
        box = "[" + ", ".join(f"{v:.2f}" for v in risk.bbox) + "]" if risk.bbox else "no box"
        risk_line = f"{risk.object or '?'} ({risk.camera} {box}): {risk.caption}"
    else:
        risk_line = "none"
    stages = ", ".join(f"{name} {ms:.0f} ms" for name, ms in report.timings_ms.items())
    lines = [
        f"window @ {report.stamp:.3f} s  [{', '.join(report.cameras)}] x {report.frames_per_camera} frames  mode {report.mode}",
        f"  description: {report.description}",
        f"  risk: {risk_line}",
        *(f"  Q: {qa.question}\n  A: {qa.answer}" for qa in report.qa),
        f"  visual tokens {report.tokens.get('vision_kept')}/{report.tokens.get('vision_dense')}; {stages}",
    ]
    return "\n".join(lines)
