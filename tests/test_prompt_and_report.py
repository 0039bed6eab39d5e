"""inputs_embeds assembly, the report schema, and parsing of the model's risk answer."""

import jsonschema
import pytest
import torch

from conftest import random_window
from vts_drive.prompt import FrameTokens
from vts_drive.report import format_risk, parse_bbox, parse_risk, validate_report


def test_visual_tokens_land_where_the_markers_say(tiny_pipeline):
    builder = tiny_pipeline.prompts
    dim = tiny_pipeline.decoder.embed_tokens.embedding_dim
    frames = [
        FrameTokens("front", 0, torch.full((3, dim), 1.0)),
        FrameTokens("front", 1, torch.zeros((0, dim))),  # all tokens dropped: marker only
        FrameTokens("front_left", 0, torch.full((2, dim), 2.0)),
    ]
    context = builder.context(frames, torch.device("cpu"))
    assert context.num_visual == 5
    visual_positions = torch.nonzero(context.is_visual).flatten().tolist()
    assert context.frame_index[visual_positions].tolist() == [0, 0, 0, 2, 2]
    assert torch.all(context.embeds[visual_positions[:3]] == 1.0)
    assert torch.all(context.embeds[visual_positions[3:]] == 2.0)

    # The text right before each frame's tokens is that frame's marker, even for the empty frame;
    # frames are numbered by age within their camera: front frame 0 is one frame before now.
    embed = tiny_pipeline.decoder.embed

    def ends_with(position: int, text: str) -> bool:
        ids = builder.text_ids(text)
        return torch.equal(context.embeds[position - len(ids) : position], embed(torch.tensor(ids)))

    assert ends_with(visual_positions[0], "camera front:\nframe 1:")
    assert ends_with(
        visual_positions[3], "\nframe 0:\ncamera front_left:\nframe 0:"
    )  # the empty frame keeps its marker


def test_pipeline_report_validates_against_schema(tiny_pipeline):
    report = tiny_pipeline.describe(random_window(seed=5), questions=["Is the light red?", "Why?"])
    data = report.to_dict()
    validate_report(data)
    assert data["schema"] == "vts_drive.report/1"
    assert [qa["question"] for qa in data["qa"]] == ["Is the light red?", "Why?"]
    assert (
        data["tokens"]["vision_kept"]
        == data["tokens"]["vision_dense"]
        == 3 * 4 * tiny_pipeline.vision.tokens_per_frame
    )
    assert data["tokens"]["generated"] > 0
    assert {"vision", "prefill", "decode", "total"} <= set(data["timings_ms"])


def test_schema_rejects_bad_reports(tiny_pipeline):
    data = tiny_pipeline.describe(random_window(seed=6)).to_dict()
    for key, value in [("schema", "other/1"), ("qa", [{"question": "q"}]), ("stamp", "now")]:
        broken = dict(data, **{key: value})
        with pytest.raises(jsonschema.ValidationError):
            validate_report(broken)
    broken = dict(data, risk=dict(data["risk"], bbox=[0.1, 0.2, 1.5, 0.9]))
    with pytest.raises(jsonschema.ValidationError):
        validate_report(broken)


def test_risk_answer_round_trip():
    text = format_risk("pedestrian", "front", [0.41, 0.52, 0.47, 0.7], "the pedestrian steps onto the road")
    risk = parse_risk(text, default_camera="front")
    assert risk.present and risk.object == "pedestrian" and risk.camera == "front"
    assert risk.bbox == [0.41, 0.52, 0.47, 0.70]
    assert risk.caption == "the pedestrian steps onto the road"


@pytest.mark.parametrize(
    "answer",
    [
        "object: car; camera: front; box: [0.5, 0.2]; caption: too few numbers",
        "object: car; camera: front; box: [0.6, 0.2, 0.4, 0.9]; caption: x2 < x1",
        "object: car; camera: front; box: [12, 40, 300, 220]; caption: pixels, not normalised",
        "object: car; box: [0.1, 0.2, 0.3, nan]",
        "box: ][ ;;; object:",
        "\x00\x01 garbage ]]]",
    ],
)
def test_malformed_risk_answers_give_null_bbox_not_a_crash(answer):
    risk = parse_risk(answer, default_camera="front")
    assert risk.bbox is None
    assert risk.raw == answer


def test_no_risk_answer():
    for answer in ["none", "None.", "", "  no risk "]:
        risk = parse_risk(answer, default_camera="front")
        assert not risk.present and risk.bbox is None and risk.object is None


def test_parse_bbox_accepts_only_normalised_boxes():
    assert parse_bbox("[0, 0, 1, 1]") == [0.0, 0.0, 1.0, 1.0]
    assert parse_bbox("(0.1,0.2,0.3,0.4)") == [0.1, 0.2, 0.3, 0.4]
    assert parse_bbox("0.1 0.2 0.3") is None
