"""The shipped synthdrive-tiny model: small enough to ship, the default model, and complete
(keyframe scorer and routers beside it, so every mode runs offline)."""

from dataclasses import asdict

from vts_drive.config import MODES, PipelineConfig, flatten, read_settings
from vts_drive.model.names import default_model, shipped_model_path
from vts_drive.pipeline import Pipeline
from vts_drive.synth.dataset import SynthDataset
from vts_drive.synth.generate import SynthConfig, generate_dataset


def test_shipped_model_is_small_and_the_default():
    folder = shipped_model_path("synthdrive-tiny")
    assert folder is not None and default_model() == "synthdrive-tiny"
    assert sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) <= 25 * 2**20
    assert not any(f.is_dir() for f in folder.iterdir())  # no training checkpoint shipped


def test_code_defaults_are_the_shipped_settings():
    """Its settings file holds what its training chose; the configuration's defaults are the same,
    but for the routed layers, which belong to a checkpoint (the default routes every other layer)."""
    settings = read_settings(shipped_model_path("synthdrive-tiny"))
    defaults = flatten(asdict(PipelineConfig()))
    assert {"keyframe.anchor", "keyframe.max_keyframes", "keyframe.skip_threshold", "mod.keep_ratio"} <= set(
        settings
    )
    assert {key: value for key, value in settings.items() if key != "mod.layers"} == {
        key: defaults[key] for key in settings if key != "mod.layers"
    }


def test_every_mode_runs_on_the_shipped_model(tmp_path):
    generate_dataset(tmp_path, SynthConfig(scenes=1, seed=5, frames=4, formats=("synth",)))
    dataset = SynthDataset(tmp_path)
    window = dataset.scene(0).window(3, 4, dataset.cameras)
    for mode in MODES:
        report = Pipeline.load("synthdrive-tiny", {"mode": mode, "max_new_tokens": 6}).describe(window)
        assert report.mode == mode and report.description
        assert 0 < report.tokens["vision_kept"] <= report.tokens["vision_dense"]
