"""Mixture-of-depths invariants on the tiny model with randomly initialised routers."""

import math
import shutil

import pytest
import torch

from conftest import random_window
from vts_drive.config import ModConfig, resolve_config
from vts_drive.generation import GenerationMeter
from vts_drive.mod.routing import (
    RoutedLayer,
    Routers,
    RoutingPlan,
    choose_tokens,
    load_routers,
    routing_scores,
    save_routers,
    token_mask,
)
from vts_drive.model.kv_cache import KVCache
from vts_drive.pipeline import Pipeline


@pytest.fixture(scope="module")
def model_with_routers(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mod") / "model"
    shutil.copytree(tiny_model_dir, folder)
    torch.manual_seed(0)
    save_routers(
        Routers(hidden_size=64, num_layers=2, config=ModConfig(keep_ratio=0.25, layers=[0, 1])), folder
    )
    return folder


def sequence(pipeline, seed=0, question="What should the ego car do?"):
    """A window's prefix plus one question: embeds [1, L, D], positions, frame index (-1 for text)."""
    window = random_window(seed=seed)
    tokens, saliency = pipeline.encode_window(window)
    context = pipeline.prompts.context(
        pipeline.select_tokens(window, tokens, saliency, None), pipeline.device
    )
    suffix = torch.tensor(pipeline.prompts.question_ids(question))
    embeds = torch.cat([context.embeds, pipeline.decoder.embed(suffix)])[None]
    frame_index = torch.cat([context.frame_index, torch.full((len(suffix),), -1)])[None]
    return embeds, torch.arange(embeds.shape[1])[None], frame_index, context.length


def test_keep_all_without_gate_reproduces_dense_logits(model_with_routers):
    dense = Pipeline.load(str(model_with_routers), {"mode": "dense"})
    routed = Pipeline.load(str(model_with_routers), {"mode": "mod", "mod.keep_ratio": 1.0, "mod.gate": False})
    embeds, positions, frame_index, _ = sequence(dense)
    with torch.no_grad():
        expected = dense.decoder.logits(dense.decoder(embeds, positions))
        trace = []
        plan = routed.decoder.routing_plan(frame_index)
        got = routed.decoder.logits(routed.decoder(embeds, positions, plan=plan, trace=trace))
    assert len(trace) == 2 and all(t.selected.sum() == t.visual.sum() for t in trace)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def selected(scores, frame_index, keep_ratio, routing):
    plan = RoutingPlan.from_frame_index(frame_index, keep_ratio)
    length = frame_index.shape[1]
    chosen, valid = choose_tokens(routing_scores(scores, plan, routing, None), plan, length)
    return token_mask(chosen, valid, length)


def test_each_frame_computes_ceil_r_n_tokens():
    frame_index = torch.tensor([[-1, 0, 0, 0, 0, 0, -1, 1, 1, 1, 2, -1]])
    scores = torch.tensor([[9.0, 0.1, 0.5, 0.3, 0.9, 0.2, 9.0, 0.3, 0.2, 0.1, 0.0, 9.0]])
    for routing in ["learned", "random", "uniform"]:
        chosen = selected(scores, frame_index, 0.34, routing)
        assert chosen[frame_index < 0].sum() == 0
        assert [int(chosen[frame_index == f].sum()) for f in range(3)] == [
            math.ceil(0.34 * n) for n in (5, 3, 1)
        ]
    learned = selected(scores, frame_index, 0.34, "learned")
    assert torch.nonzero(learned[0]).flatten().tolist() == [2, 4, 7, 8, 10]  # best 2 of 5, 2 of 3, 1 of 1
    uniform = selected(scores, frame_index, 0.4, "uniform")
    assert torch.nonzero(uniform[0, 1:6]).flatten().tolist() == [2, 4]  # 2 of 5, evenly spaced


def test_plan_pads_rows_and_frames_to_fixed_shapes():
    frame_index = torch.tensor([[-1, 0, 0, 1, -1, -1], [-1, -1, 0, 0, 0, 0]])
    plan = RoutingPlan.from_frame_index(frame_index, 0.5)
    assert plan.frame_slots.shape == (2, 2, 4) and plan.text_index.shape == (2, 3)
    assert plan.frame_keep.tolist() == [[1, 1], [2, 0]]
    assert plan.keep_slots.tolist() == [[0, 2], [0, 1]]  # frame f's k best of K = 2 ranked: f x 2 + rank
    assert plan.keep_valid.all()  # both rows compute two visual tokens: no padding entry
    assert plan.frame_slots[1, 1].tolist() == [6, 6, 6, 6]  # an absent frame: all slots point at the junk row
    assert torch.equal(plan.visual_mask(6), frame_index >= 0)


def test_skipped_tokens_pass_unchanged_and_leave_no_kv(model_with_routers):
    pipeline = Pipeline.load(str(model_with_routers), {"mode": "mod"})
    decoder = pipeline.decoder
    embeds, positions, frame_index, _ = sequence(pipeline, seed=1)
    cache, trace = KVCache(decoder.num_layers), []
    valid = torch.ones_like(positions, dtype=torch.bool)
    hidden_in = embeds
    with torch.no_grad():
        plan = decoder.routing_plan(frame_index)
        assert isinstance(decoder.layers[0], RoutedLayer)
        out = decoder.layers[0](hidden_in, positions, valid, cache, plan, trace)
    selected, visual = trace[0].selected[0], trace[0].visual[0]
    skipped = visual & ~selected
    assert skipped.sum() > 0
    assert torch.equal(out[0, skipped], hidden_in[0, skipped])
    assert not torch.allclose(out[0, ~skipped], hidden_in[0, ~skipped])
    computed_positions = torch.nonzero(~visual | selected).flatten()
    layer_cache = cache.layers[0]
    assert cache.entries(0) == int((~visual).sum() + selected.sum())  # no padding slots
    assert int(layer_cache.valid.sum()) == int((~visual).sum() + selected.sum())
    held = layer_cache.positions[0][layer_cache.valid[0]]
    assert torch.equal(
        held.sort().values, computed_positions
    )  # exactly text + selected, original RoPE positions


def test_frames_of_unequal_size_compute_exactly_their_k_tokens(model_with_routers):
    """Frames as VTS leaves them (16, 5 and 9 tokens): a routed layer computes the text and each
    frame's ceil(r n_f) best tokens by router score, no slot of padding, and leaves as many K/V
    entries; its output is the block run on just those tokens, gated, with the rest passed through."""
    pipeline = Pipeline.load(str(model_with_routers), {"mode": "mod"})
    decoder, keep_ratio = pipeline.decoder, 0.25
    layer = decoder.layers[0]
    assert isinstance(layer, RoutedLayer) and layer.routers.config.keep_ratio == keep_ratio
    sizes = [16, 5, 9]
    frame_index = torch.tensor(
        [[-1] * 3 + [0] * sizes[0] + [-1] * 2 + [1] * sizes[1] + [2] * sizes[2] + [-1] * 4]
    )  # [1, L]
    length = frame_index.shape[1]
    torch.manual_seed(3)
    hidden = torch.randn(1, length, 64)  # [1, L, D]
    positions = torch.arange(length)[None]
    valid = torch.ones_like(positions, dtype=torch.bool)
    cache = KVCache(decoder.num_layers)
    with torch.no_grad():
        out = layer(hidden, positions, valid, cache, decoder.routing_plan(frame_index))

        # Reference: each frame's top-k tokens by router score, picked one frame at a time.
        logits = layer.routers.logits(0, hidden)[0]  # [L]
        computed = torch.nonzero(frame_index[0] < 0).flatten().tolist()
        for frame in range(len(sizes)):
            tokens = torch.nonzero(frame_index[0] == frame).flatten()
            best = logits[tokens].topk(math.ceil(keep_ratio * len(tokens))).indices
            computed += tokens[best].tolist()
        computed = sorted(computed)
        reference_cache = KVCache(decoder.num_layers)
        sub = hidden[:, computed]  # [1, M, D]
        block = layer.block(sub, positions[:, computed], valid[:, computed], reference_cache)
        gate = torch.where(frame_index[0, computed] >= 0, torch.sigmoid(logits[computed]), 1.0)
        expected = hidden.clone()
        expected[:, computed] = sub + gate[None, :, None] * (block - sub)

    assert len(computed) == 9 + sum(math.ceil(keep_ratio * n) for n in sizes)  # 9 + 4 + 2 + 3
    held = cache.layers[0]
    assert cache.entries(0) == len(computed) and bool(held.valid.all())  # no K/V slot of padding
    assert held.positions[0].tolist() == computed
    torch.testing.assert_close(held.keys, reference_cache.layers[0].keys, rtol=0, atol=1e-5)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_prefill_then_decode_equals_full_forward_with_routing(model_with_routers):
    pipeline = Pipeline.load(str(model_with_routers), {"mode": "mod"})
    decoder = pipeline.decoder
    embeds, positions, frame_index, prefix = sequence(pipeline, seed=2)
    length = embeds.shape[1]
    with torch.no_grad():
        full = decoder.logits(decoder(embeds, positions, plan=decoder.routing_plan(frame_index)))
        cache = KVCache(decoder.num_layers)
        decoder(
            embeds[:, :prefix],
            positions[:, :prefix],
            cache=cache,
            plan=decoder.routing_plan(frame_index[:, :prefix]),
        )
        steps = [
            decoder.logits(decoder(embeds[:, i : i + 1], positions[:, i : i + 1], cache=cache))
            for i in range(prefix, length)
        ]
    # Token-by-token sums run in another order than one pass; the tiny model's wide weights give logits ~1e2.
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, prefix:], rtol=1e-4, atol=1e-4)
    visual = int((frame_index >= 0).sum())
    assert cache.entries(0) < length - visual + visual // 2  # the routed layers hold far fewer entries


def test_mod_pipeline_report_and_kv_savings(model_with_routers):
    window = random_window(seed=4)
    dense = Pipeline.load(str(model_with_routers), {"mode": "dense", "max_new_tokens": 4})
    routed = Pipeline.load(str(model_with_routers), {"mode": "mod", "max_new_tokens": 4})
    dense_meter, routed_meter = (GenerationMeter(dense.decoder.config) for _ in range(2))
    dense.answer(window, ["Why?"], dense_meter)
    routed.answer(window, ["Why?"], routed_meter)
    assert 0 < routed_meter.kv_cache_bytes < dense_meter.kv_cache_bytes
    assert routed.describe(window).mode == "mod"


def test_router_adapter_round_trip_and_errors(model_with_routers, tiny_model_dir, tmp_path):
    from vts_drive.errors import InputError

    settings = resolve_config(model_with_routers).mod
    routers = load_routers(model_with_routers, settings, hidden_size=64, num_layers=2)
    assert routers.layer_indices == [0, 1] and routers.config.keep_ratio == 0.25
    with pytest.raises(InputError, match="train-router"):
        Pipeline.load(str(tiny_model_dir), {"mode": "mod"})
    with pytest.raises(InputError, match="do not fit this model"):
        load_routers(model_with_routers, settings, hidden_size=32, num_layers=2)
    with pytest.raises(InputError, match="routing 'best'"):
        resolve_config(None, {"mode": "mod", "mod.routing": "best"})


@pytest.mark.parametrize("mode", ["dense", "mod"])
def test_head_cache_gives_the_answers_of_a_full_prefix_prefill(model_with_routers, mode):
    """The system turn's K/V, kept from an earlier window, stand in for prefilling it again."""
    from vts_drive.flops import prefix_prefill_flops
    from vts_drive.generation import HeadCache, decode, prefill

    pipeline = Pipeline.load(str(model_with_routers), {"mode": mode})
    decoder, head_cache = pipeline.decoder, HeadCache()
    suffixes = [
        pipeline.prompts.question_ids(q)
        for q in ["Describe the driving scene.", "What should the ego car do?"]
    ]
    held = None
    for seed in (5, 6):  # the second window starts from the head the first one computed
        window = random_window(seed=seed)
        tokens, saliency = pipeline.encode_window(window)
        context = pipeline.prompts.context(
            pipeline.select_tokens(window, tokens, saliency, None), pipeline.device
        )
        full_meter, cached_meter = GenerationMeter(decoder.config), GenerationMeter(decoder.config)
        with torch.no_grad():
            full_state = prefill(decoder, context, suffixes, pipeline.pad_id, meter=full_meter)
            cached_state = prefill(decoder, context, suffixes, pipeline.pad_id, head_cache, cached_meter)
            layers = range(decoder.num_layers)
            assert [cached_state.cache.entries(i) for i in layers] == [
                full_state.cache.entries(i) for i in layers
            ]
            full = decode(decoder, full_state, pipeline.stop_ids, 8)
            assert decode(decoder, cached_state, pipeline.stop_ids, 8) == full
        saved = prefix_prefill_flops(decoder.config, [context.head_length] * decoder.num_layers)
        assert cached_meter.prefill_flops == pytest.approx(full_meter.prefill_flops - saved)
        held = held or head_cache.cache
        assert head_cache.cache is held  # computed once, not grown by the windows that used it
        assert all(
            head_cache.cache.entries(layer) == context.head_length for layer in range(decoder.num_layers)
        )


def test_random_routing_is_seeded(model_with_routers):
    """The routing ablation reruns alike: random routing draws from the pipeline's seed, so two
    pipelines with the same seed choose the same tokens window after window, another seed others."""

    def routed_tokens(seed: int) -> list[torch.Tensor]:
        pipeline = Pipeline.load(
            str(model_with_routers), {"mode": "mod", "mod.routing": "random", "seed": seed}
        )
        chosen = []
        for window_seed in (7, 8):
            embeds, positions, frame_index, _ = sequence(pipeline, seed=window_seed)
            trace = []
            with torch.no_grad():
                pipeline.decoder(
                    embeds, positions, plan=pipeline.decoder.routing_plan(frame_index), trace=trace
                )
            chosen += [t.selected for t in trace]
        return chosen

    first, again, other = routed_tokens(0), routed_tokens(0), routed_tokens(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
