"""The risk box grammar: which box prefixes can still become a well-formed box, and the token
masks it turns into, with the project's own tokenizer and through transformers' generate."""

import pytest
import torch

from vts_drive.box_grammar import BoxConstraint, BoxLogitsProcessor, box_prefix_ok
from vts_drive.report import parse_bbox


@pytest.mark.parametrize(
    "box",
    [
        "",
        "0",
        "0.",
        "0.8",
        "0.85, 0.2",
        "0.85, 0.20, 0",
        "0.85, 0.20, 0.9",
        "0.85, 0.20, 1.00, 0.45",
        "0.85, 0.20, 1.00, 0.45]",
        "0.85, 0.20, 1.00, 0.45]; caption: x",
        " 0, 0, 1, 1]",
    ],
)
def test_prefixes_that_can_still_become_a_box(box):
    assert box_prefix_ok(box)


@pytest.mark.parametrize(
    "box",
    [
        "2",
        "0.8a",
        "1.5",
        "0.85, 0.20, 0.0",
        "0.85, 0.20, 0.00",
        "0.85, 0.20, 0.85,",
        "0.5, 0.5, 0.9, 0.4]",
        "0.1, 0.2, 0.3]",
        "0.1, 0.2, 0.3, 0.4, 0.5",
        "0.1, 0.2, 1.71",
        "0.1234",
    ],
)
def test_prefixes_that_cannot(box):
    assert not box_prefix_ok(box)


def completed(constraint: BoxConstraint, prefix: str, preferred: list[str], vocab: int) -> str:
    """Greedy decoding under the constraint of a 'model' that always prefers the tokens in
    `preferred` order (then any allowed token), from `prefix`, until the box closes."""
    tokenizer = constraint.tokenizer
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ranking = torch.tensor([tokenizer.convert_tokens_to_ids(t) for t in preferred])
    for _ in range(20):
        mask = constraint.allowed(ids, vocab)
        if mask is None:
            break
        scores = torch.zeros(vocab)
        scores[ranking] = torch.linspace(2.0, 1.0, len(ranking))
        scores[~mask] = float("-inf")
        ids.append(int(scores.argmax()))
    return tokenizer.decode(ids)


def test_masks_steer_a_model_that_would_write_a_broken_box(tiny_model_dir):
    """A 'model' that prefers '0' after '0.' for x2 (as [0.85, 0.20, 0.00, ...]) ends up with a
    valid x2 above x1, and the answer parses to a box."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    constraint = BoxConstraint(tokenizer)
    vocab = len(tokenizer)
    prefix = "object: car; camera: front; box: [0.85, 0.20, 0."
    text = completed(constraint, prefix, ["0", "5", "9", ",", "Ġ0", ".", "];"], vocab)
    box = parse_bbox(text[text.index("[") :])
    assert box is not None and box[2] > 0.85, text
    assert (
        constraint.allowed(tokenizer(prefix.split("box")[0], add_special_tokens=False)["input_ids"], vocab)
        is None
    )
    # a head wider than the tokenizer (padded vocabulary rows) can emit ids the tokenizer lacks
    assert (
        constraint.allowed([vocab + 5, *tokenizer(prefix, add_special_tokens=False)["input_ids"]], vocab + 64)
        is not None
    )


def test_generate_with_the_logits_processor_keeps_the_box(tiny_model_dir):
    """Through transformers' generate: every token inside the box is one the grammar allows."""
    from vts_drive.model.loading import load_model

    model = load_model(str(tiny_model_dir))
    constraint = BoxConstraint(model.tokenizer)
    prefix = model.tokenizer("box: [0.5", add_special_tokens=False)["input_ids"]
    embeds = model.hf_model.get_input_embeddings()(torch.tensor([prefix]))
    output = model.hf_model.generate(
        inputs_embeds=embeds,
        max_new_tokens=12,
        do_sample=False,
        logits_processor=[_Offset(len(prefix), prefix, constraint)],
    )[0].tolist()
    text = model.tokenizer.decode(prefix + output)
    box = text[len("box: [") :]
    assert box_prefix_ok(box[: box.index("]") + 1] if "]" in box else box), text


class _Offset(BoxLogitsProcessor):
    """generate() from inputs_embeds sees only new tokens; the test's prefix is prepended."""

    def __init__(self, length: int, prefix: list[int], constraint: BoxConstraint) -> None:
        super().__init__(constraint)
        self.prefix = torch.tensor([prefix])

    def __call__(self, input_ids, scores):
        return super().__call__(torch.cat([self.prefix, input_ids], dim=1), scores)
