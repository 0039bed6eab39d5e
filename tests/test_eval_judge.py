"""Lingo-Judge: the official max-over-references rule on hand-made cases, and the loading and
input plumbing with a tiny DeBERTa-v2 classifier built here (nothing is downloaded)."""

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2TokenizerFast

from vts_drive.errors import InputError
from vts_drive.eval import judge
from vts_drive.eval.judge import LingoJudge, judge_texts, max_scores


def test_official_input_format():
    texts = judge_texts("Is it safe to turn left?", ["  No, a Cyclist is Coming. ", "NO"], "  No. \n")
    assert texts == [
        "[CLS]\nQuestion: Is it safe to turn left?\nAnswer: no, a cyclist is coming.\nStudent: no.",
        "[CLS]\nQuestion: Is it safe to turn left?\nAnswer: no\nStudent: no.",
    ]


def test_max_over_references_decides():
    # a judge that likes one exact (reference, prediction) pairing and dislikes everything else
    table = {("yes", "yes"): 2.0, ("there is one", "one pedestrian"): 0.3}

    def logits(texts):
        pairs = [(t.split("\nAnswer: ")[1].split("\nStudent: ")[0], t.split("\nStudent: ")[1]) for t in texts]
        return [table.get(pair, -1.0) for pair in pairs]

    questions = ["Is the light green?", "How many pedestrians?", "How many pedestrians?", "What colour?"]
    references = [["No", "Yes"], ["There is one", "one"], ["two", "2"], ["red"]]
    predictions = ["YES", "One pedestrian", "one pedestrian", "green"]
    scores = max_scores(questions, references, predictions, logits)
    assert scores == [2.0, 0.3, -1.0, -1.0]  # one good reference is enough; the max, not the mean
    assert judge.accuracy(scores) == 0.5
    assert judge.accuracy([0.0]) == 0.0  # > 0, not >= 0
    assert judge.accuracy([]) is None


def tiny_judge(folder: Path, bias: float) -> Path:
    corpus = [
        "question: is there a car ahead? answer: yes, one car student: no",
        "the pedestrian is crossing the road",
    ] * 8
    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    backend.train_from_iterator(
        corpus, trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="[UNK]")
    )
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer = DebertaV2TokenizerFast(
        tokenizer_object=backend,
        bos_token="[CLS]",
        eos_token="[SEP]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )
    config = DebertaV2Config(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.fill_(bias)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def judge_folder(tmp_path_factory) -> Path:
    return tiny_judge(tmp_path_factory.mktemp("judge") / "lingo-judge", bias=0.0)


def test_tiny_deberta_judge_gives_the_logits_of_the_official_inputs(judge_folder):
    loaded = LingoJudge(str(judge_folder))
    assert type(loaded.model).__name__ == "DebertaV2ForSequenceClassification"
    question, references, prediction = "Is there a car ahead?", ["Yes, one car.", "yes"], "No"
    scores = loaded.max_scores([question], [references], [prediction])
    model = DebertaV2ForSequenceClassification.from_pretrained(judge_folder).eval()
    expected_texts = [f"[CLS]\nQuestion: {question}\nAnswer: {r.lower()}\nStudent: no" for r in references]
    encoded = loaded.tokenizer(expected_texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        direct = model(**encoded).logits.squeeze(-1)
    assert scores[0] == pytest.approx(direct.max().item(), abs=1e-5)
    assert loaded.logits(expected_texts) == pytest.approx(direct.tolist(), abs=1e-5)


def test_inputs_are_truncated_to_128_tokens(judge_folder, monkeypatch):
    loaded = LingoJudge(str(judge_folder))
    seen = []
    forward = loaded.model.forward
    monkeypatch.setattr(
        loaded.model, "forward", lambda **inputs: seen.append(inputs["input_ids"].shape) or forward(**inputs)
    )
    loaded.max_scores(["Why?"], [["because " * 300, "short"]], ["the pedestrian " * 200])
    assert seen == [torch.Size([2, judge.MAX_TOKENS])]


def test_bias_moves_every_verdict(tmp_path):
    always = LingoJudge(str(tiny_judge(tmp_path / "yes", bias=50.0)))
    never = LingoJudge(str(tiny_judge(tmp_path / "no", bias=-50.0)))
    args = (["Is it red?", "Stop?"], [["yes"], ["no", "yes"]], ["no", "maybe"])
    assert judge.accuracy(always.max_scores(*args)) == 1.0
    assert judge.accuracy(never.max_scores(*args)) == 0.0


def test_bad_judges_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not load"):
        LingoJudge(str(tmp_path / "missing"))
    folder = tiny_judge(tmp_path / "two", bias=0.0)
    config = DebertaV2Config.from_pretrained(folder)
    config.num_labels = 2
    DebertaV2ForSequenceClassification(config).save_pretrained(folder)
    with pytest.raises(InputError, match="2 outputs"):
        LingoJudge(str(folder))
