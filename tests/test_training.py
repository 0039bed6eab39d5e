"""Training runs on the inference path, matches transformers' loss, and resumes exactly."""

import numpy as np
import pytest
import torch

from vts_drive.config import KeyframeConfig, ModConfig, resolve_config
from vts_drive.keyframe.scorer import KeyframeScorer
from vts_drive.keyframe.train import novelty_labels, precision_recall, stream_pairs, train_scorer
from vts_drive.mod.routing import Routers, RoutingPlan, RoutingTrace, load_routers
from vts_drive.mod.train import PromptAttentionProbe, attention_targets, routed_losses, train_routers
from vts_drive.model.decoder import Qwen2Decoder
from vts_drive.model.loading import load_model
from vts_drive.model.vision import VisionEncoder
from vts_drive.prompt import FrameTokens, PromptBuilder
from vts_drive.training import TrainingExample, forward_losses


def examples(step: int, count: int = 2) -> list[TrainingExample]:
    rng = np.random.default_rng([0, step])
    return [
        TrainingExample(
            ["front", "front_left"],
            [[rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)] for _ in range(2)],
            [("Is the light red?", "yes"), ("Describe the driving scene.", "a car is stopped ahead")],
            rng.integers(0, 2, (2, 3, 4, 5)).astype(np.float32),
        )
        for _ in range(count)
    ]


def test_language_loss_equals_transformers(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    hf = model.hf_model
    vision, decoder = VisionEncoder(model), Qwen2Decoder(hf.model.language_model, hf.lm_head)
    builder = PromptBuilder(model.tokenizer, decoder.embed)
    example = examples(0, count=1)[0]
    with torch.no_grad():
        ours = forward_losses(vision, decoder, builder, [example]).language
        tokens, _ = vision.encode(vision.preprocess([im for camera in example.images for im in camera]))
        frames = [
            FrameTokens(c, t, tokens[i * 3 + t]) for i, c in enumerate(example.cameras) for t in range(3)
        ]
        context = builder.context(frames, "cpu")
        total, count = 0.0, 0
        for question, answer in example.prompts:
            q, a = builder.question_ids(question), builder.answer_ids(answer)
            embeds = torch.cat([context.embeds, decoder.embed(torch.tensor(q + a))])[None]
            labels = torch.full((1, embeds.shape[1]), -100)
            labels[0, context.length + len(q) :] = torch.tensor(a)
            total += hf(inputs_embeds=embeds, labels=labels).loss.item() * len(a)
            count += len(a)
    assert ours.item() == pytest.approx(total / count, rel=1e-4)


def test_router_training_resumes_exactly(tiny_model_dir, tmp_path):
    model = load_model(str(tiny_model_dir))
    straight = train_routers(
        model, examples, ModConfig(keep_ratio=0.5), tmp_path / "a", steps=4, kl_weight=0.5
    )
    train_routers(
        model, examples, ModConfig(keep_ratio=0.5), tmp_path / "b", steps=2, kl_weight=0.5
    )  # "killed" here
    resumed = train_routers(
        model, examples, ModConfig(keep_ratio=0.5), tmp_path / "b", steps=4, kl_weight=0.5
    )
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    loaded = load_routers(tmp_path / "b", resolve_config(tmp_path / "b").mod, hidden_size=64, num_layers=2)
    assert loaded.config.keep_ratio == 0.5
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), resumed.state_dict().values()))
    assert not any(p.requires_grad for p in model.hf_model.parameters()), "the base model stays frozen"


def test_keyframe_scorer_learns_changes(tmp_path):
    """Streams where a bright square appears at labelled frames: the CNN must find them."""
    rng = np.random.default_rng(0)
    streams = []
    for _ in range(40):
        base = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        frames, flags = [], []
        current = base.copy()
        for t in range(8):
            change = t > 0 and rng.random() < 0.3
            if change:
                current = base.copy()
                y, x = rng.integers(0, 24, 2)
                current[y : y + 8, x : x + 8] = 255
            frames.append(current.copy())
            flags.append(t == 0 or change)
        streams.append((frames, flags))
    config = KeyframeConfig(input_size=32, width=8)
    pairs = stream_pairs(streams, KeyframeScorer(config))
    scorer = train_scorer(pairs, config, tmp_path, steps=150, batch_size=32)
    figures = precision_recall(scorer, pairs, 0.5)
    assert figures["recall"] > 0.8 and figures["precision"] > 0.8
    assert (tmp_path / "keyframe_scorer.safetensors").is_file()


def test_novelty_labels_mark_changed_frames(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    labels = novelty_labels([a, a, a, b, b, a], VisionEncoder(model), threshold=0.05)
    assert labels == [True, False, False, True, False, True]


def test_prompt_attention_probe_equals_transformers_attentions(tiny_model_dir):
    """The router target reads, per layer, the attention the prompt rows give the prefix: the
    same numbers as transformers' own attention weights over the full sequence."""
    model = load_model(str(tiny_model_dir))
    hf = model.hf_model
    vision, decoder = VisionEncoder(model), Qwen2Decoder(hf.model.language_model, hf.lm_head)
    builder = PromptBuilder(model.tokenizer, decoder.embed)
    example = examples(0, count=1)[0]
    example.prompts = example.prompts[:1]
    probe = PromptAttentionProbe([0, 1], decoder.scale)
    with torch.no_grad():
        forward_losses(vision, decoder, builder, [example], probe=probe)
        tokens, _ = vision.encode(vision.preprocess([im for camera in example.images for im in camera]))
        frames = [
            FrameTokens(c, t, tokens[i * 3 + t]) for i, c in enumerate(example.cameras) for t in range(3)
        ]
        context = builder.context(frames, "cpu")
        question, answer = example.prompts[0]
        row = (builder.question_ids(question) + builder.answer_ids(answer))[:-1]
        embeds = torch.cat([context.embeds, decoder.embed(torch.tensor(row))])[None]
        hf.set_attn_implementation("eager")
        attentions = hf(inputs_embeds=embeds, output_attentions=True).attentions
    for layer in (0, 1):
        expected = attentions[layer][0, :, context.length :, : context.length].mean(dim=(0, 1))  # [W]
        torch.testing.assert_close(probe.received[layer][0], expected, rtol=1e-4, atol=1e-6)


def test_attention_targets_pick_each_frames_most_attended_tokens():
    frame_index = torch.tensor([[-1, 0, 0, 0, 0, -1, 1, 1, 1, 1]])
    plan = RoutingPlan.from_frame_index(frame_index, keep_ratio=0.5)
    trace = [
        RoutingTrace(1, torch.zeros(1, 10), torch.zeros(1, 10, dtype=torch.bool), plan.visual_mask(10), plan)
    ]
    # two prompt rows of the one example; their attention is summed
    received = {
        1: torch.tensor(
            [
                [0.9, 0.1, 0.3, 0.0, 0.2, 0.9, 0.0, 0.0, 0.4, 0.1],
                [0.9, 0.0, 0.0, 0.1, 0.3, 0.9, 0.5, 0.1, 0.0, 0.0],
            ]
        )
    }
    (target,) = attention_targets(trace, received, [2])
    assert target[0].nonzero().squeeze(1).tolist() == [2, 4, 6, 8]


def test_attention_targets_of_a_subset_equal_a_dense_pass_over_the_subset(tiny_model_dir):
    """train-synth's routed pass covers the first windows of a batch whose dense pass covered
    them all: their targets must be those a dense pass over the subset alone would give."""
    model = load_model(str(tiny_model_dir))
    hf = model.hf_model
    vision, decoder = VisionEncoder(model), Qwen2Decoder(hf.model.language_model, hf.lm_head)
    builder = PromptBuilder(model.tokenizer, decoder.embed)
    batch = examples(3, count=2)
    batch[1].images = [camera + camera[:2] for camera in batch[1].images]  # a longer second window
    batch[1].cell_labels = None
    received = {}
    for name, windows in (("all", batch), ("first", batch[:1])):
        probe = PromptAttentionProbe([1], decoder.scale)
        with torch.no_grad():
            forward_losses(vision, decoder, builder, windows, probe=probe)
        received[name] = probe.received
    routers = Routers(64, hf.config.text_config.num_hidden_layers, ModConfig(keep_ratio=0.5, layers=[1]))
    routed = Qwen2Decoder(hf.model.language_model, hf.lm_head, routers)
    with torch.no_grad():
        _, membership = routed_losses(vision, routed, builder, batch[:1], received["all"], "cpu")
        trace = forward_losses(vision, routed, builder, batch[:1]).trace
    assert received["all"][1].shape[1] > trace[0].logits.shape[1]  # the dense pass had a wider prefix
    from_all = attention_targets(trace, received["all"], [2])
    from_first = attention_targets(trace, received["first"], [2])
    assert torch.equal(from_all[0], from_first[0])
    assert int(from_all[0].sum()) == 6 * 2  # 2 cameras x 3 frames of 4 tokens, k = 2 each
    assert torch.isfinite(membership)


def test_vts_training_windows_keep_the_tokens_the_pipeline_keeps(tiny_model_dir, tmp_path):
    """A training window with keyframes and gated frames gives the LLM exactly the tokens the
    pipeline's mode vts gives it for the same frames: same keyframes kept whole, skipped frames
    empty, the same VTS choice elsewhere."""
    from conftest import random_window
    from vts_drive.frame_cache import FrameFeatures
    from vts_drive.keyframe.scorer import save_scorer
    from vts_drive.pipeline import Pipeline
    from vts_drive.training import token_keep

    save_scorer(KeyframeScorer(KeyframeConfig(input_size=32)).eval(), tmp_path / "scorer")
    model = load_model(str(tiny_model_dir))
    pipeline = Pipeline(model, {"mode": "vts", "keyframe_scorer": str(tmp_path / "scorer")})
    window = random_window(seed=3, frames=4)
    keyframes = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=bool)
    present = keyframes | np.array([[0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=bool)

    entries = [FrameFeatures() for _ in range(12)]
    tokens, saliency = pipeline.encode_frames(
        window, entries, torch.from_numpy(present), torch.from_numpy(present), [None] * 3
    )
    expected = pipeline.select_tokens(
        window, tokens, saliency, torch.from_numpy(keyframes), torch.from_numpy(present)
    )

    example = TrainingExample(window.cameras, window.images, [], keyframes=keyframes, present=present)
    vision = VisionEncoder(model)
    all_tokens, all_saliency = vision.encode(
        vision.preprocess([i for camera in window.images for i in camera])
    )
    keep = token_keep(example, all_tokens, all_saliency, vision.token_grid)  # [C, T, N]
    counts = [frame.tokens.shape[0] for frame in expected]
    assert keep.sum(dim=-1).flatten().tolist() == counts
    assert all(keep[c, t].all() for c, t in zip(*np.nonzero(keyframes)))
    assert not keep[~torch.from_numpy(present)].any()
    assert 0 < sum(counts) < keep.numel()
    for frame, frame_tokens, kept in zip(expected, all_tokens, keep.flatten(0, 1)):
        torch.testing.assert_close(frame.tokens, frame_tokens[kept])


def coordinate_tokenizer():
    """A tokenizer trained the way train-synth trains one: box coordinates are whole tokens."""
    from vts_drive.model.small import train_tokenizer
    from vts_drive.prompt import RISK_PROMPT

    corpus = [
        RISK_PROMPT,
        "object: car; camera: front; box: [0.12, 0.40, 0.35, 0.80]; caption: a car cuts in",
    ]
    return train_tokenizer(corpus + [f"{value / 100:.2f}" for value in range(101)] * 20, vocab_size=600)


def test_coordinate_targets_are_the_box_fractions_below_one():
    from vts_drive.training import CoordinateTargets, prompt_rows

    tokenizer = coordinate_tokenizer()
    targets = CoordinateTargets(tokenizer, sigma=1.5)
    builder = PromptBuilder(tokenizer, lambda ids: ids)
    answer = "object: car; camera: front; box: [0.78, 0.05, 1.00, 0.43]; caption: 2 cars cut in"
    _, labels = prompt_rows(builder, [("Where?", answer)])[0]
    labels = torch.tensor([labels])
    soft = labels[targets.positions(labels)]
    # 1.00's fraction and numbers not written "0.dd" are left one-hot
    assert [tokenizer.decode([int(i)]) for i in soft] == ["78", "05", "43"]
    assert torch.allclose(targets.distributions.sum(dim=1), torch.ones(100))
    assert (
        targets.distributions[78].argmax() == 78
        and targets.distributions[78, 77] > targets.distributions[78, 74]
    )


def test_soft_coordinate_loss_rewards_a_near_miss_and_narrows_to_cross_entropy():
    from vts_drive.training import CoordinateTargets

    tokenizer = coordinate_tokenizer()
    fraction = torch.tensor([tokenizer.convert_tokens_to_ids("78")])
    logits = torch.zeros(2, len(tokenizer))
    logits[0, tokenizer.convert_tokens_to_ids("77")] = 8.0  # one hundredth off
    logits[1, tokenizer.convert_tokens_to_ids("20")] = 8.0  # far off
    log_probs = torch.log_softmax(logits, dim=-1)
    soft = CoordinateTargets(tokenizer, sigma=1.5).loss(log_probs, fraction.repeat(2))
    assert soft[0] < soft[1]
    plain = torch.nn.functional.cross_entropy(logits, fraction.repeat(2), reduction="none")
    assert plain[0] == pytest.approx(plain[1].item())  # one-hot sees no difference
    assert torch.allclose(CoordinateTargets(tokenizer, sigma=0.01).loss(log_probs, fraction.repeat(2)), plain)


def test_coordinate_targets_refuse_a_tokenizer_without_coordinate_tokens(tiny_model_dir):
    from vts_drive.errors import InputError
    from vts_drive.training import CoordinateTargets

    with pytest.raises(InputError, match="'00'..'99'"):
        CoordinateTargets(load_model(str(tiny_model_dir)).tokenizer, sigma=1.5)


def test_risk_box_loss_reaches_only_the_tokens_on_the_risk_object():
    from vts_drive.training import risk_box_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 4)
    tokens = torch.randn(3, 4, 8, requires_grad=True)  # [F, N, D]
    on_risk = torch.zeros(3, 4, dtype=torch.bool)
    on_risk[0, 1] = on_risk[2, 3] = True
    boxes = torch.tensor(
        [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.6], [float("nan")] * 4]
    )  # frame 2: no risk object
    risk_box_loss(head, tokens, on_risk, boxes).backward()
    reached = tokens.grad.abs().sum(dim=-1) > 0
    assert reached.tolist() == [[False, True, False, False], [False] * 4, [False] * 4]
    nothing = risk_box_loss(head, tokens, torch.zeros(3, 4, dtype=torch.bool), boxes)
    assert nothing.item() == 0.0 and nothing.requires_grad
