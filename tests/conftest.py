"""Shared fixtures: a tiny random checkpoint written once per test session and
loaded back through the real loading code, and synthetic camera windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vts_drive.window import FrameWindow

CAMERAS = ["front", "front_left", "front_right"]
# the keyframe selection tests use unless they say otherwise: up to 3 keyframes per camera, the
# oldest frame the anchor, no frame gated away (the shipped model keeps 1, anchors the newest, gates)
TEST_SELECTION = dict(max_keyframes=3, skip_threshold=0.0, anchor="first")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vts_drive.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def routed_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a keyframe scorer and routers beside it, so every mode runs: layer 1
    routed at r = 0.25, layer 0 dense, so the layers' caches hold different numbers of entries.
    Shared by the tests that need it; none writes into it."""
    import shutil

    from vts_drive.config import KeyframeConfig, ModConfig
    from vts_drive.keyframe.scorer import KeyframeScorer, save_scorer
    from vts_drive.mod.routing import Routers, save_routers

    folder = tmp_path_factory.mktemp("routed") / "model"
    shutil.copytree(tiny_model_dir, folder)
    torch.manual_seed(0)
    save_routers(Routers(hidden_size=64, num_layers=2, config=ModConfig(keep_ratio=0.25, layers=[1])), folder)
    save_scorer(KeyframeScorer(KeyframeConfig(input_size=32, **TEST_SELECTION)).eval(), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir: Path):
    from vts_drive.pipeline import Pipeline

    return Pipeline.load(str(tiny_model_dir), {"max_new_tokens": 8})


def random_window(
    seed: int = 0, cameras: list[str] = CAMERAS, frames: int = 4, size: tuple[int, int] = (48, 64)
) -> FrameWindow:
    rng = np.random.default_rng(seed)
    images = [[rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(frames)] for _ in cameras]
    stamps = [[t * 100_000_000 for t in range(frames)] for _ in cameras]
    return FrameWindow(list(cameras), images, stamps)
