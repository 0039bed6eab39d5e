"""Invariants of the token reducers and the keyframe selection."""

import shutil

import numpy as np
import pytest
import torch

from conftest import TEST_SELECTION, random_window
from vts_drive.config import KeyframeConfig, PruMergeConfig, VtsConfig, resolve_config
from vts_drive.errors import InputError
from vts_drive.keyframe.scorer import KeyframeScorer, save_scorer, select_keyframes
from vts_drive.pipeline import Pipeline
from vts_drive.tokens.prumerge import outliers, prumerge_frame
from vts_drive.tokens.vts import redundancy, select_tokens
from vts_drive.window import FrameWindow

GRID = (4, 4)


def random_tokens(batch=2, cameras=3, frames=4, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, cameras, frames, GRID[0] * GRID[1], dim, generator=generator)
    saliency = torch.rand(batch, cameras, frames, GRID[0] * GRID[1], generator=generator)
    return tokens, saliency / saliency.sum(-1, keepdim=True)


def test_full_budget_without_redundancy_keeps_everything():
    tokens, saliency = random_tokens()
    keyframes = torch.zeros(2, 3, 4, dtype=torch.bool)
    keep = select_tokens(tokens, saliency, keyframes, GRID, VtsConfig(budget=1.0, redundancy_threshold=1.01))
    assert keep.all()


def test_keyframe_tokens_are_never_dropped():
    tokens, saliency = random_tokens()
    keyframes = torch.rand(2, 3, 4) > 0.5
    keyframes[:, :, 0] = True
    for budget in [0.0, 0.1, 0.5]:
        keep = select_tokens(tokens, saliency, keyframes, GRID, VtsConfig(budget=budget))
        assert keep[keyframes].all()
        if budget == 0.0:
            assert not keep[~keyframes].any()


def test_budget_is_respected_when_keyframes_fit():
    tokens, saliency = random_tokens()
    keyframes = torch.zeros(2, 3, 4, dtype=torch.bool)
    keyframes[:, :, 0] = True  # 3 of 12 frames: 25 % of the tokens
    keep = select_tokens(tokens, saliency, keyframes, GRID, VtsConfig(budget=0.4, redundancy_threshold=1.01))
    assert keep.view(2, -1).sum(1).tolist() == [round(0.4 * 3 * 4 * 16)] * 2


def test_identical_frames_collapse_to_keyframe_tokens():
    tokens, saliency = random_tokens(batch=1)
    tokens = tokens[:, :, :1].expand(-1, -1, 4, -1, -1)  # every frame repeats the first
    saliency = saliency[:, :, :1].expand(-1, -1, 4, -1)
    keyframes = torch.zeros(1, 3, 4, dtype=torch.bool)
    keyframes[:, :, 0] = True
    keep = select_tokens(tokens, saliency, keyframes, GRID, VtsConfig(budget=0.9))
    assert keep[:, :, 0].all() and not keep[:, :, 1:].any()


def test_shifted_content_is_found_within_the_radius():
    tokens, _ = random_tokens(batch=1, cameras=1, frames=2)
    grid_tokens = tokens[0, 0, 0].view(4, 4, -1)
    tokens[0, 0, 1] = torch.roll(grid_tokens, shifts=1, dims=1).reshape(
        16, -1
    )  # content moved one cell right
    keyframes = torch.tensor([[[True, False]]])
    interior = torch.arange(16).view(4, 4)[:, 1:].flatten()  # cells whose source is inside the grid
    assert torch.allclose(redundancy(tokens, keyframes, GRID, radius=1)[0, 0, 1, interior], torch.ones(12))
    assert redundancy(tokens, keyframes, GRID, radius=0)[0, 0, 1, interior].max() < 0.99


def test_batch_and_single_give_the_same_selection():
    tokens, saliency = random_tokens(batch=3)
    keyframes = torch.rand(3, 3, 4) > 0.6
    keyframes[:, :, 0] = True
    config = VtsConfig(budget=0.5, redundancy_threshold=0.5)
    batched = select_tokens(tokens, saliency, keyframes, GRID, config)
    for b in range(3):
        single = select_tokens(tokens[b : b + 1], saliency[b : b + 1], keyframes[b : b + 1], GRID, config)
        assert torch.equal(batched[b : b + 1], single)


def test_prumerge_keeps_iqr_outliers_and_merges_by_saliency():
    tokens = torch.eye(6)[:, :4].clone()  # distinct directions
    saliency = torch.tensor([0.02, 0.02, 0.03, 0.02, 0.9, 0.01])
    assert outliers(saliency[None])[0].tolist() == [False, False, False, False, True, False]
    kept, merged = prumerge_frame(tokens, saliency, PruMergeConfig(merge_neighbours=2))
    assert kept.tolist() == [4]
    similarity = tokens[[0, 1, 2, 3, 5]] @ tokens[4]
    nearest = torch.tensor([0, 1, 2, 3, 5])[similarity.topk(2).indices]
    expected = tokens[4] + (saliency[nearest, None] * tokens[nearest]).sum(0)
    torch.testing.assert_close(merged[0], expected)


def test_prumerge_plus_adds_uniform_samples():
    tokens, saliency = random_tokens(batch=1, cameras=1, frames=1)
    kept, merged = prumerge_frame(tokens[0, 0, 0], saliency[0, 0, 0], PruMergeConfig(), plus=True)
    assert kept.numel() >= 4 and merged.shape == (kept.numel(), 8)
    assert kept.tolist() == sorted(kept.tolist())


def test_keyframe_selection_rules():
    probabilities = torch.tensor([[0.1, 0.9, 0.7, 0.95, 0.2], [0.1, 0.2, 0.3, 0.4, 0.45]])
    flags = select_keyframes(probabilities, KeyframeConfig(threshold=0.5, max_keyframes=3, anchor="first"))
    assert flags.tolist() == [[True, True, False, True, False], [True, False, False, False, False]]
    newest = select_keyframes(probabilities, KeyframeConfig(threshold=0.5, max_keyframes=3, anchor="newest"))
    assert newest.tolist() == [[False, True, False, True, True], [False, False, False, False, True]]


def test_unknown_keyframe_anchor_is_refused(tmp_path):
    with pytest.raises(InputError, match="keyframe.anchor 'middle'"):
        save_scorer(KeyframeScorer(KeyframeConfig(input_size=32, anchor="middle")), tmp_path)
    with pytest.raises(InputError, match="keyframe.anchor 'middle'"):
        resolve_config(None, {"mode": "vts", "keyframe.anchor": "middle"})


@pytest.fixture(scope="module")
def model_with_scorer(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vts") / "model"
    shutil.copytree(tiny_model_dir, folder)
    torch.manual_seed(0)
    save_scorer(KeyframeScorer(KeyframeConfig(input_size=32, **TEST_SELECTION)).eval(), folder)
    return folder


def test_vts_at_full_budget_gives_exactly_the_dense_answers(model_with_scorer):
    window = random_window(seed=11)
    config = {"max_new_tokens": 8, "questions": ["Why?"]}
    dense = Pipeline.load(str(model_with_scorer), {"mode": "dense", **config})
    full = Pipeline.load(
        str(model_with_scorer), {"mode": "vts", "vts.budget": 1.0, "vts.redundancy_threshold": 1.01, **config}
    )
    tokens, saliency = dense.encode_window(window)
    keyframes = full.score_keyframes(window)
    dense_context = dense.prompts.context(dense.select_tokens(window, tokens, saliency, None), dense.device)
    vts_context = full.prompts.context(full.select_tokens(window, tokens, saliency, keyframes), full.device)
    assert torch.equal(dense_context.embeds, vts_context.embeds)
    dense_report, vts_report = dense.describe(window), full.describe(window)
    assert (dense_report.description, dense_report.qa) == (vts_report.description, vts_report.qa)
    assert vts_report.tokens["vision_kept"] == vts_report.tokens["vision_dense"]


def test_vts_on_a_static_scene_keeps_only_keyframes(model_with_scorer):
    frame = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    window = FrameWindow(["front", "front_left"], [[frame] * 4, [frame[::-1].copy()] * 4], [[0, 1, 2, 3]] * 2)
    pipeline = Pipeline.load(
        str(model_with_scorer), {"mode": "vts", "keyframe.max_keyframes": 1, "max_new_tokens": 2}
    )
    report = pipeline.describe(window)
    per_frame = pipeline.vision.tokens_per_frame
    assert report.tokens["vision_kept"] == 2 * per_frame  # the first frame of each camera
    assert "keyframe" in report.timings_ms and "sparsify" in report.timings_ms


def test_vts_without_a_scorer_is_a_clear_error(tiny_model_dir):
    from vts_drive.errors import InputError

    with pytest.raises(InputError, match="no keyframe scorer.*train-keyframe"):
        Pipeline.load(str(tiny_model_dir), {"mode": "vts"})


def test_a_stored_scorer_setting_selection_cannot_use_is_refused(model_with_scorer, tmp_path):
    import json
    import shutil

    from vts_drive.config import SETTINGS_FILE
    from vts_drive.errors import InputError

    folder = tmp_path / "scorer"
    shutil.copytree(model_with_scorer, folder)
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    settings["keyframe"]["max_keyframes"] = 0
    (folder / SETTINGS_FILE).write_text(json.dumps(settings))
    with pytest.raises(
        InputError, match=f"{folder / SETTINGS_FILE}: keyframe.max_keyframes must be at least 1"
    ):
        resolve_config(folder)
    with pytest.raises(
        InputError, match=f"{folder / SETTINGS_FILE}: keyframe.max_keyframes must be at least 1"
    ):
        Pipeline.load(str(folder), {"mode": "vts"})
