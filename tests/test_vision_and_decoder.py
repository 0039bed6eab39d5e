"""Our vision loop and Qwen2 decoder compute what transformers' own classes compute."""

import torch

from conftest import random_window
from vts_drive.generation import generate, pass_groups, prefill_suffixes
from vts_drive.measure import StageTimer
from vts_drive.model.kv_cache import KVCache
from vts_drive.prompt import RISK_PROMPT


def test_vision_tokens_equal_llava_onevision_video_features(tiny_pipeline):
    window = random_window(seed=1)
    tokens, saliency = tiny_pipeline.encode_window(window)  # [C, T, N, D]
    hf = tiny_pipeline.model.hf_model
    pixels = tiny_pipeline.vision.preprocess([im for cam in window.images for im in cam])
    video = pixels.view(3, 4, *pixels.shape[1:])
    with torch.no_grad():
        reference = hf.model.get_video_features(
            video, vision_feature_layer=-1, vision_feature_select_strategy="full"
        )
    expected = reference.pooler_output[:, :-1].reshape(tokens.shape)  # drop the trailing image_newline
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(saliency.sum(-1), torch.ones(3, 4))


def test_saliency_is_attention_received_in_feature_layer(tiny_pipeline):
    window = random_window(seed=2, cameras=["front"], frames=1)
    _, saliency = tiny_pipeline.encode_window(window)
    tower = tiny_pipeline.model.hf_model.model.vision_tower
    pixels = tiny_pipeline.vision.preprocess(window.images[0])
    tower.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = tower(pixels, output_attentions=True)
    finally:
        tower.config._attn_implementation = "sdpa"
    received = out.attentions[-1].mean(dim=(1, 2))  # [1, P]
    grid = tiny_pipeline.vision.patch_grid
    pooled = torch.nn.functional.interpolate(
        received.view(1, 1, *grid), scale_factor=0.5, mode="bilinear"
    ).flatten()
    torch.testing.assert_close(saliency.flatten(), pooled / pooled.sum(), rtol=1e-4, atol=1e-6)


def _full_sequence(pipeline, question):
    window = random_window(seed=3)
    tokens, saliency = pipeline.encode_window(window)
    context = pipeline.prompts.context(
        pipeline.select_tokens(window, tokens, saliency, None), pipeline.device
    )
    suffix = pipeline.prompts.question_ids(question)
    return context, suffix, torch.cat([context.embeds, pipeline.decoder.embed(torch.tensor(suffix))])


def test_decoder_logits_equal_transformers(tiny_pipeline):
    _, _, embeds = _full_sequence(tiny_pipeline, "Describe the driving scene.")
    with torch.no_grad():
        expected = tiny_pipeline.model.hf_model(inputs_embeds=embeds[None]).logits
        hidden = tiny_pipeline.decoder(embeds[None], torch.arange(embeds.shape[0])[None])
    torch.testing.assert_close(tiny_pipeline.decoder.logits(hidden), expected, rtol=1e-5, atol=1e-5)


def test_prefill_then_decode_equals_full_forward(tiny_pipeline):
    decoder = tiny_pipeline.decoder
    _, _, embeds = _full_sequence(tiny_pipeline, "Why?")
    length = embeds.shape[0]
    with torch.no_grad():
        full = decoder.logits(decoder(embeds[None], torch.arange(length)[None]))
        cache = KVCache(decoder.num_layers)
        decoder(embeds[None, :-3], torch.arange(length - 3)[None], cache=cache)
        steps = [
            decoder.logits(decoder(embeds[None, i : i + 1], torch.tensor([[i]]), cache=cache))
            for i in range(length - 3, length)
        ]
    # one-token steps and the full pass reduce over different matmul shapes: fp32 rounding, not a cache error
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, -3:], rtol=1e-4, atol=1e-4)
    assert cache.entries(0) == length


def _reference_answer(pipeline, context, suffix, stop_ids, max_new_tokens):
    """transformers' generate over the full sequence of one prompt, cut at the first stop token."""
    embeds = torch.cat([context.embeds, pipeline.decoder.embed(torch.tensor(suffix))])[None]
    reference = pipeline.model.hf_model.generate(
        inputs_embeds=embeds, max_new_tokens=max_new_tokens, do_sample=False
    )[0].tolist()
    return reference[: next((i for i, t in enumerate(reference) if t in stop_ids), len(reference))]


def test_shared_prefix_batched_generation_equals_transformers_generate(tiny_pipeline):
    questions = [
        "Describe the driving scene.",
        RISK_PROMPT,
        "What should the ego car do?",
        "Is there a pedestrian ahead?",
    ]
    context, _, _ = _full_sequence(tiny_pipeline, questions[0])
    suffixes = [tiny_pipeline.prompts.question_ids(q) for q in questions]
    assert len(pass_groups([len(s) for s in suffixes])) > 1, (
        "the risk prompt is prefilled apart from the short ones"
    )
    result = generate(tiny_pipeline.decoder, context, suffixes, tiny_pipeline.stop_ids, 10, StageTimer())
    for suffix, ours in zip(suffixes, result):
        assert ours == _reference_answer(tiny_pipeline, context, suffix, tiny_pipeline.stop_ids, 10)
    assert len({tuple(ids) for ids in result}) > 1, "the prompts should not all give the same answer"

    # A token one answer produces becomes a stop token: rows end at different steps and leave
    # the batch, and the rows still decoding are unaffected.
    stop_ids = tiny_pipeline.stop_ids | {result[1][2]}
    early = generate(tiny_pipeline.decoder, context, suffixes, stop_ids, 10, StageTimer())
    assert len({len(ids) for ids in early}) > 1
    for suffix, ours in zip(suffixes, early):
        assert ours == _reference_answer(tiny_pipeline, context, suffix, stop_ids, 10)


def test_pass_groups_bound_padding():
    assert pass_groups([10, 66, 15, 12]) == [[1], [0, 2, 3]]  # the long suffix alone
    assert pass_groups([5, 5, 5]) == [[0, 1, 2]]


def test_pooled_prompt_rows_hold_each_prompt_once_without_padding(tiny_pipeline):
    questions = ["Describe the driving scene.", RISK_PROMPT, "What should the ego car do?"]
    context, _, _ = _full_sequence(tiny_pipeline, questions[0])
    suffixes = [tiny_pipeline.prompts.question_ids(q) for q in questions]
    decoder = tiny_pipeline.decoder
    with torch.no_grad():
        prefix = KVCache(decoder.num_layers)
        decoder(context.embeds[None], torch.arange(context.length)[None], cache=prefix)
        caches = []
        for rows in pass_groups([len(s) for s in suffixes]):
            caches.append(prefix.branch())
            prefill_suffixes(decoder, [suffixes[row] for row in rows], context.length, caches[-1], pad_id=0)
    order = [row for rows in pass_groups([len(s) for s in suffixes]) for row in rows]
    pooled = KVCache.pool_rows(caches)
    for layer in range(decoder.num_layers):
        kv = pooled.shared[layer]
        assert kv.keys.shape[:3] == (
            1,
            decoder.num_kv_heads,
            context.length + sum(map(len, suffixes)),
        )  # no padding
        assert kv.valid.shape == (len(suffixes), kv.keys.shape[2]) and pooled.layers[layer] is None
        seen = kv.valid[:, context.length :]  # each row sees its own prompt and no other
        assert seen.sum(dim=1).tolist() == [len(suffixes[row]) for row in order]
        assert kv.valid[:, : context.length].all() and not (seen.sum(dim=0) != 1).any()
    per_entry = prefix.nbytes() // context.length  # keys and values of one token in every layer
    assert pooled.nbytes() == per_entry * (context.length + sum(map(len, suffixes)))
    kept = pooled.select_rows(torch.tensor([2, 0]))
    assert (
        torch.equal(kept.shared[0].valid, pooled.shared[0].valid[[2, 0]])
        and kept.shared[0].keys is pooled.shared[0].keys
    )
