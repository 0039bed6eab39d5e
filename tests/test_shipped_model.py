"""The shipped synthdrive-tiny model: small enough to ship, the default model, and complete
(keyframe scorer and routers beside it, so every mode runs offline)."""
from vts_drive.model.loading import default_model, shipped_model_path
from vts_drive.pipeline import MODES, Pipeline, PipelineConfig
from vts_drive.synth.generate import SynthConfig, generate_dataset
from vts_drive.synth.dataset import SynthDataset


def test_shipped_model_is_small_and_the_default():
    folder = shipped_model_path("synthdrive-tiny")
    assert folder is not None and default_model() == "synthdrive-tiny"
    assert sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) <= 25 * 2**20
    assert not any(f.is_dir() for f in folder.iterdir())  # no training checkpoint shipped


def test_every_mode_runs_on_the_shipped_model(tmp_path):
    generate_dataset(tmp_path, SynthConfig(scenes=1, seed=5, frames=4, formats=("synth",)))
    dataset = SynthDataset(tmp_path)
    window = dataset.scene(0).window(3, 4, dataset.cameras)
    for mode in MODES:
        report = Pipeline.load("synthdrive-tiny", PipelineConfig(mode=mode, max_new_tokens=6)).describe(window)
        assert report.mode == mode and report.description
        assert 0 < report.tokens["vision_kept"] <= report.tokens["vision_dense"]
