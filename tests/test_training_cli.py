"""The training commands end to end on a tiny synthdrive set: train-synth (and its resume),
train-keyframe, train-router, and the demo, each read back through the real loading code."""

import json
from pathlib import Path

import pytest
import torch

from conftest import TEST_SELECTION
from vts_drive.cli import main
from vts_drive.config import KeyframeConfig, resolve_config
from vts_drive.errors import InputError
from vts_drive.keyframe.scorer import KeyframeScorer, save_scorer
from vts_drive.mod.routing import load_routers
from vts_drive.model.loading import load_model
from vts_drive.pipeline import Pipeline
from vts_drive.synth.generate import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("drive") / "d"
    generate_dataset(out, SynthConfig(scenes=3, seed=3, frames=6, image_size=(96, 64), formats=("synth",)))
    return out


@pytest.fixture(scope="module")
def trained(drive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "model"
    common = [
        "train-synth",
        "--data",
        str(drive),
        "--out",
        str(out),
        "--size",
        "test",
        "--batch-size",
        "2",
        "--single-frame-steps",
        "25",
    ]
    assert main([*common, "--steps", "50"]) == 0  # checkpoint at 50
    first = json.loads((out / "training_history.json").read_text())
    assert (
        main([*common, "--steps", "52", "--val-data", str(drive), "--val-scenes", "1"]) == 0
    )  # resumes: only steps 51-52 run
    history = json.loads((out / "training_history.json").read_text())
    assert [r["step"] for r in history] == list(range(1, 53))
    assert history[:50] == first
    assert "qa_exact_match" in history[-1]
    assert history[-1]["boxes"] <= 1  # one scene validated, so at most one risk box scored
    return out


def test_train_synth_writes_a_loadable_model_and_resumes(trained):
    model = load_model(str(trained))
    assert model.hf_model.__class__.__name__ == "LlavaOnevisionForConditionalGeneration"
    assert (trained / "tokenizer.json").is_file()


def test_train_keyframe_writes_a_scorer_the_pipeline_uses(drive, trained, tmp_path, capsys):
    code = main(
        [
            "train-keyframe",
            "--data",
            str(drive),
            "--out",
            str(trained),
            "--steps",
            "5",
            "--val-data",
            str(drive),
            "--max-keyframes",
            "2",
            "--anchor",
            "newest",
        ]
    )
    assert code == 0
    assert "held-out precision=" in capsys.readouterr().out
    assert resolve_config(trained).keyframe.max_keyframes == 2
    assert resolve_config(trained).keyframe.anchor == "newest"
    report = Pipeline.load(str(trained), {"mode": "vts", "max_new_tokens": 4}).describe(_window(drive))
    assert report.tokens["vision_kept"] <= report.tokens["vision_dense"]


def test_train_keyframe_with_novelty_labels_needs_a_model(drive, tmp_path, capsys):
    assert main(["train-keyframe", "--data", str(drive), "--out", str(tmp_path), "--labels", "novelty"]) == 2
    assert "--model" in capsys.readouterr().err


def test_train_router_writes_routers_the_pipeline_uses(drive, trained, tmp_path):
    out = tmp_path / "routers"
    assert (
        main(
            [
                "train-router",
                "--model",
                str(trained),
                "--data",
                str(drive),
                "--out",
                str(out),
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--r",
                "0.3",
            ]
        )
        == 0
    )
    routers = load_routers(
        out,
        resolve_config(out).mod,
        64,
        load_model(str(trained)).hf_model.config.text_config.num_hidden_layers,
    )
    assert routers.config.keep_ratio == 0.3
    report = Pipeline.load(str(trained), {"mode": "mod", "routers": str(out), "max_new_tokens": 4}).describe(
        _window(drive)
    )
    assert report.description is not None


def test_train_synth_with_routing_trains_routers_jointly_and_resumes(drive, tmp_path):
    out = tmp_path / "routed"
    common = [
        "train-synth",
        "--data",
        str(drive),
        "--out",
        str(out),
        "--size",
        "test",
        "--batch-size",
        "2",
        "--single-frame-steps",
        "2",
    ]
    routing = ["--routed-share", "0.5", "--r", "0.5", "--layers", "1"]
    assert main([*common, *routing, "--steps", "4"]) == 0
    history = json.loads((out / "training_history.json").read_text())
    assert ["routed_lm" in r for r in history] == [False, False, True, True]  # not in the single-frame stage
    num_layers = load_model(str(out)).hf_model.config.text_config.num_hidden_layers
    after_four = load_routers(out, resolve_config(out).mod, 64, num_layers)
    assert after_four.layer_indices == [1] and after_four.config.keep_ratio == 0.5
    assert main([*common, *routing, "--steps", "6", "--val-data", str(drive)]) == 0  # resumes routers too
    assert json.loads((out / "checkpoint" / "routers" / "state.json").read_text())["step"] == 6
    after_six = load_routers(out, resolve_config(out).mod, 64, num_layers)
    assert not torch.equal(after_four.routers["1"].weight, after_six.routers["1"].weight)
    assert "mod_qa_exact_match" in json.loads((out / "training_history.json").read_text())[-1]
    report = Pipeline.load(str(out), {"mode": "mod", "max_new_tokens": 4}).describe(_window(drive))
    assert report.description is not None


def test_train_synth_on_vts_windows_uses_the_scorer_in_out(drive, tmp_path, capsys):
    """--vts-share needs the model's keyframe scorer: without one a clear error naming the folder
    and no checkpoint; with one the windows train on the tokens mode vts keeps."""
    out = tmp_path / "vts"
    common = [
        "train-synth",
        "--data",
        str(drive),
        "--out",
        str(out),
        "--size",
        "test",
        "--batch-size",
        "2",
        "--single-frame-steps",
        "1",
        "--steps",
        "3",
        "--vts-share",
        "1",
    ]
    assert main(common) == 2
    assert f"{out} has no keyframe scorer" in capsys.readouterr().err
    assert not (out / "checkpoint").exists()  # refused before any work
    torch.manual_seed(0)
    save_scorer(
        KeyframeScorer(KeyframeConfig(input_size=32, **{**TEST_SELECTION, "anchor": "newest"})).eval(), out
    )
    assert main(common) == 0
    assert [r["step"] for r in json.loads((out / "training_history.json").read_text())] == [1, 2, 3]
    report = Pipeline.load(str(out), {"mode": "vts", "max_new_tokens": 4}).describe(_window(drive))
    assert report.tokens["vision_kept"] < report.tokens["vision_dense"]


def test_train_synth_from_a_trained_model(drive, trained, tmp_path):
    """--init starts from a model's weights and tokenizer and carries its keyframe scorer over;
    with learning rate 0 the written weights are exactly the start's."""
    import shutil

    from safetensors.torch import load_file

    start = tmp_path / "start"
    shutil.copytree(trained, start, ignore=shutil.ignore_patterns("checkpoint"))
    save_scorer(KeyframeScorer(KeyframeConfig(input_size=32, **TEST_SELECTION)).eval(), start)
    out = tmp_path / "fine"
    common = [
        "train-synth",
        "--data",
        str(drive),
        "--out",
        str(out),
        "--init",
        str(start),
        "--batch-size",
        "2",
        "--single-frame-steps",
        "0",
        "--box-weight",
        "1",
        "--coordinate-sigma",
        "1.5",
        "--risk-windows",
        "2",
    ]
    assert main([*common, "--steps", "1", "--lr", "0"]) == 0
    assert (out / "keyframe_scorer.safetensors").is_file()
    assert resolve_config(out).keyframe == resolve_config(start).keyframe
    before, after = load_file(start / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert (out / "tokenizer.json").read_text() == (start / "tokenizer.json").read_text()
    assert main([*common, "--steps", "3"]) == 0  # resumes from its own checkpoint, not from --init
    history = json.loads((out / "training_history.json").read_text())
    assert history[:52] == json.loads(
        (start / "training_history.json").read_text()
    )  # the start's history goes on
    assert [r["step"] for r in history[52:]] == [53, 54, 55]
    assert all(r["box"] >= 0 and "risk_box" in r and r["init"] == str(start) for r in history[52:])
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_train_synth_from_a_trained_model_at_a_larger_input_size(drive, trained, tmp_path):
    """--image-size with --init: the start's weights read a larger patch grid (position embeddings
    interpolated), the model is written at the new size and the pipeline gives it 4x the tokens."""
    out = tmp_path / "larger"
    args = [
        "train-synth",
        "--data",
        str(drive),
        "--out",
        str(out),
        "--init",
        str(trained),
        "--image-size",
        "64",
        "--batch-size",
        "2",
        "--single-frame-steps",
        "0",
        "--steps",
        "1",
        "--lr",
        "0",
    ]
    assert main(args) == 0
    start, larger = load_model(str(trained)), load_model(str(out))
    assert larger.hf_model.config.vision_config.image_size == 64
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 64, "width": 64}
    before, after = start.hf_model.state_dict(), larger.hf_model.state_dict()
    moved = [k for k in before if before[k].shape != after[k].shape or not torch.equal(before[k], after[k])]
    assert moved == ["model.vision_tower.embeddings.position_embedding.weight"]
    window = _window(drive)
    small_report = Pipeline.load(str(trained), {"mode": "dense", "max_new_tokens": 2}).describe(window)
    large_report = Pipeline.load(str(out), {"mode": "dense", "max_new_tokens": 2}).describe(window)
    assert large_report.tokens["vision_dense"] == 4 * small_report.tokens["vision_dense"]


def test_larger_input_interpolates_the_position_embedding_grid(trained):
    from vts_drive.model.small import with_image_size

    hf = load_model(str(trained)).hf_model
    embedding = hf.model.vision_tower.embeddings.position_embedding.weight  # [4 x 4 patches, Dv]
    with torch.no_grad():  # an embedding that changes along x only
        embedding.copy_(torch.linspace(-1, 1, 4).repeat(4)[:, None].expand_as(embedding))
    resized = with_image_size(
        hf, 64
    ).model.vision_tower.embeddings.position_embedding.weight.detach()  # [8 x 8, Dv]
    grid = resized.view(8, 8, -1)
    assert torch.allclose(grid, grid[:1].expand_as(grid))  # still the same in every row
    assert bool((grid[0, 1:, 0] > grid[0, :-1, 0]).all())  # and increasing along x
    with pytest.raises(InputError, match="not a multiple of the patch size 8"):
        with_image_size(hf, 60)


def test_demo_prints_reports_and_writes_jsonl(trained, tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--model",
                str(trained),
                "--mode",
                "dense",
                "--out",
                str(out),
                "--scenes",
                "1",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    reports = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    assert len(reports) == 3  # 8 frames, windows of 4 ending at 3, 5, 7
    assert all(r["schema"] == "vts_drive.report/1" for r in reports)
    assert printed.count("truth:") == 3


def _window(drive: Path):
    from vts_drive.synth.dataset import SynthDataset

    dataset = SynthDataset(drive)
    return dataset.scene(0).window(5, 4, dataset.cameras)


def test_training_commands_refuse_bad_input(drive, tmp_path, capsys):
    missing = tmp_path / "no_such_data"
    assert main(["train-keyframe", "--data", str(missing), "--out", str(tmp_path / "k")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert (
        main(["train-keyframe", "--data", str(drive), "--out", str(tmp_path / "k"), "--max-keyframes", "0"])
        == 2
    )
    assert "max_keyframes must be at least 1 (the anchor frame), got 0" in capsys.readouterr().err
    common = [
        "train-router",
        "--model",
        "synthdrive-tiny",
        "--data",
        str(drive),
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*common, "--r", "0"]) == 2
    assert "--r: mod.keep_ratio must be in (0, 1]" in capsys.readouterr().err
    assert main([*common, "--scenes", "0"]) == 2
    assert "--scenes must be at least 1" in capsys.readouterr().err
    assert main([*common, "--layers", "1,x"]) == 2
    assert "--layers: mod.layers must be a whole number, got 'x'" in capsys.readouterr().err
    routed = ["train-synth", "--data", str(drive), "--out", str(tmp_path / "m"), "--routed-share"]
    assert main([*routed, "1.5"]) == 2
    assert "--routed-share must be in [0, 1]" in capsys.readouterr().err
    for flag in ("--token-dropout-share", "--empty-frame-share", "--vts-share"):
        assert main([*routed, "0.5", flag, "-0.1"]) == 2
        assert f"{flag} must be in [0, 1], got -0.1" in capsys.readouterr().err
    assert main([*routed, "0.5", "--layers", "one"]) == 2
    assert "--layers: mod.layers must be a whole number, got 'one'" in capsys.readouterr().err
    for flag in ("--box-weight", "--coordinate-sigma", "--risk-windows"):
        assert main([*routed, "0", flag, "-1"]) == 2
        assert f"{flag} must be at least 0, got -1" in capsys.readouterr().err
    assert main([*routed, "0", "--image-size", "4"]) == 2
    assert "--image-size must be at least 8 pixels, got 4" in capsys.readouterr().err
    assert main([*routed, "0", "--val-scenes", "0"]) == 2
    assert "--val-scenes must be at least 1, got 0" in capsys.readouterr().err
    assert main([*routed, "0", "--val-data", str(missing)]) == 2
    assert f"{missing} is not a synthdrive dataset" in capsys.readouterr().err
    assert main([*routed, "0", "--init", str(missing)]) == 2
    assert f"model folder {missing} does not exist" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("k", "r", "m"))  # nothing half-written


def test_a_recipe_runs_its_stages_in_order(drive, trained, tmp_path, capsys):
    """train-synth --stages: commands in processes of their own, settings written into a model
    folder, folders copied; variables filled in; a stage a command would refuse stops the recipe
    before its first stage runs."""
    start = tmp_path / "start"
    stages = tmp_path / "stages.yaml"
    stages.write_text(
        f"vars: {{work: {tmp_path}, steps: 1}}\n"
        "stages:\n"
        f"  - copy: {{from: {trained}, to: '${{work}}/start', exclude: ['*checkpoint', 'keyframe_scorer.*']}}\n"
        f"  - train-keyframe: {{data: {drive}, out: '${{work}}/start', steps: '${{steps}}', max-keyframes: 2,\n"
        "                     set: {keyframe.input_size: 32}}\n"
        "  - settings: {model: '${work}/start', set: {keyframe.anchor: first}}\n"
    )
    assert main(["train-synth", "--stages", str(stages), "--var", "steps=3"]) == 0
    config = resolve_config(start)
    assert (config.keyframe.max_keyframes, config.keyframe.anchor, config.keyframe.input_size) == (
        2,
        "first",
        32,
    )
    assert json.loads((start / "keyframe_checkpoint" / "state.json").read_text())["step"] == 3
    assert (start / "model.safetensors").is_file() and not (start / "checkpoint").exists()
    assert "stage 3 (settings) of 3" in capsys.readouterr().out

    stages.write_text(
        f"stages:\n  - settings: {{model: {start}, set: {{mod.keep_ratio: 0.5}}}}\n"
        f"  - train-keyframe: {{data: {drive}, out: {start}, speed: 11}}\n"
    )
    assert main(["train-synth", "--stages", str(stages)]) == 2
    assert "stage 2 (train-keyframe)" in capsys.readouterr().err
    assert resolve_config(start).mod.keep_ratio != 0.5, "nothing ran"
    assert main(["train-synth", "--stages", str(stages), "--var", "work=/elsewhere"]) == 2
    assert "has no variable 'work'" in capsys.readouterr().err
    assert main(["train-synth", "--stages", str(stages), "--data", str(drive)]) == 2


def test_the_synthdrive_tiny_recipe_is_valid():
    """Every stage of the shipped recipe is one its command accepts (checked without running it)."""
    from vts_drive.recipe import read_stages

    root = Path(__file__).resolve().parents[1]
    stages = read_stages(root / "scripts" / "synthdrive_tiny_stages.yaml", ["work=/w", "device=cpu"])
    kinds = [stage.kind for stage in stages]
    assert kinds.count("train-synth") == 11 and kinds.count("settings") == 4 and kinds[-1] == "train-synth"
    assert (
        stages[-1].argv()[-2:] == ["--device", "cpu"]
        and "/w/models/synthdrive-tiny-temporal" in stages[-1].argv()
    )
