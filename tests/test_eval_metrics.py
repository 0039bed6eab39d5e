"""Caption metrics equal pycocoevalcap's own COCO pipeline; localisation by hand; no Java fails clearly."""

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from vts_drive.errors import InputError
from vts_drive.eval import metrics
from vts_drive.eval.metrics import caption_metrics, localisation_metrics

PREDICTIONS = [
    "The pedestrian is crossing the road, the ego car should stop.",
    "a red car cuts in from the left",
    "",
    "Cyclist ahead; keep distance!",
]
REFERENCES = [
    ["The pedestrian on the right is crossing the road; the ego car should stop."],
    ["The red car is cutting into the ego lane from the left.", "A red car cuts in on the left, slow down."],
    ["The truck ahead is braking."],
    ["The cyclist ahead is slow, the ego car should keep its distance."],
]


def test_caption_metrics_equal_pycocoevalcap():
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(REFERENCES)})
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(PREDICTIONS)})
    bleu, _ = Bleu(4).compute_score(gts, res)
    expected = {
        "bleu1": bleu[0],
        "bleu4": bleu[3],
        "meteor": Meteor().compute_score(gts, res)[0],
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }
    got = caption_metrics(PREDICTIONS, REFERENCES)
    assert got == pytest.approx(expected, rel=1e-9)
    assert 0.0 < got["bleu4"] < got["bleu1"] < 1.0 and got["cider"] > 0.0


def test_identical_captions_score_top_and_nothing_is_none():
    perfect = caption_metrics(["the car stops"] * 3, [["The car stops."]] * 3)
    assert perfect["bleu1"] == pytest.approx(1.0) and perfect["rouge_l"] == pytest.approx(1.0)
    assert caption_metrics([], []) == dict.fromkeys(metrics.CAPTION_METRICS)


def test_localisation_by_hand():
    truth = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.4]]
    predicted = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 1.0], None]  # IoU 1, 0.5 (not > 0.5), 0
    result = localisation_metrics(predicted, truth)
    assert result["bbox_miou"] == pytest.approx(0.5)
    assert result["bbox_acc50"] == pytest.approx(1 / 3)
    assert localisation_metrics([], []) == {"bbox_miou": None, "bbox_acc50": None}


def test_missing_java_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="need Java.*apt-get install default-jre-headless"):
        caption_metrics(["a car"], [["a car"]])
