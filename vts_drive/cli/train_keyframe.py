"""`vts-drive train-keyframe`: train the keyframe CNN on a synthdrive dataset's camera streams."""

from __future__ import annotations

import argparse
from pathlib import Path

from vts_drive.cli.common import add_set_argument

# flags short for a keyframe.* setting: argparse dest -> dotted key
SCORER_FLAGS = {
    "threshold": "keyframe.threshold",
    "max_keyframes": "keyframe.max_keyframes",
    "skip_threshold": "keyframe.skip_threshold",
    "anchor": "keyframe.anchor",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-keyframe",
        help="train the keyframe scorer (scene-graph or self-supervised labels; resumable)",
        description="Trains the keyframe CNN on every camera stream of a synthdrive dataset and writes "
        "keyframe_scorer.safetensors/.json to OUT (usually the model folder, where loading picks it up). "
        "--labels novelty ignores the scene graph and labels frames by the novelty of their vision tokens "
        "(needs --model): the option for recordings without keyframe annotations.",
    )
    parser.add_argument("--data", type=Path, required=True, help="synthdrive folder (vts-drive synth)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the scorer to")
    parser.add_argument(
        "--val-data", type=Path, help="held-out synthdrive folder: precision/recall printed at the end"
    )
    parser.add_argument("--labels", choices=["synth", "novelty"], default="synth")
    parser.add_argument(
        "--model", help="model whose vision tower gives the novelty labels (with --labels novelty)"
    )
    parser.add_argument(
        "--novelty-threshold",
        type=float,
        default=0.1,
        help="1 - mean token cosine similarity above which a frame is novel",
    )
    parser.add_argument("--steps", type=int, default=600)
    from vts_drive.config import ANCHORS, KeyframeConfig

    defaults = KeyframeConfig()
    settings = parser.add_argument_group("scorer settings, written to OUT's settings file (keyframe.*)")
    settings.add_argument(
        "--threshold", type=float, help=f"keyframe probability threshold (default: {defaults.threshold})"
    )
    settings.add_argument(
        "--max-keyframes",
        type=int,
        help=f"per camera per window, the anchor frame included (default: {defaults.max_keyframes})",
    )
    settings.add_argument(
        "--skip-threshold",
        type=float,
        help=f"frames scored below it are not encoded, 0: encode all (default: {defaults.skip_threshold})",
    )
    settings.add_argument(
        "--anchor",
        choices=ANCHORS,
        help=f"each camera's frame that is always a keyframe (default: {defaults.anchor})",
    )
    add_set_argument(settings, "keyframe.input_size=32")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def camera_streams(data: Path, labels: str, model: str | None, novelty_threshold: float) -> list:
    """(frames, keyframe flags) for every camera of every scene."""
    from tqdm import tqdm

    from vts_drive.errors import InputError
    from vts_drive.keyframe.train import novelty_labels
    from vts_drive.synth.dataset import SynthDataset

    dataset = SynthDataset(data)
    vision = None
    if labels == "novelty":
        if not model:
            raise InputError("--labels novelty needs --model (its vision tower labels the frames)")
        from vts_drive.model.loading import load_model
        from vts_drive.model.vision import VisionEncoder

        vision = VisionEncoder(load_model(model))
    streams = []
    for scene in tqdm(dataset.scenes, desc=f"read {data}", unit="scene"):
        for camera in dataset.cameras:
            images = [scene.image(camera, t) for t in range(scene.frames)]
            flags = novelty_labels(images, vision, novelty_threshold) if vision else scene.keyframes[camera]
            streams.append((images, flags))
    return streams


def run(args: argparse.Namespace) -> int:
    from vts_drive.cli.common import section_settings
    from vts_drive.keyframe.scorer import KeyframeScorer
    from vts_drive.keyframe.train import precision_recall, stream_pairs, train_scorer

    config = section_settings(args, "keyframe", SCORER_FLAGS)
    shaper = KeyframeScorer(config)  # only its input preparation is used for the pairs
    pairs = stream_pairs(camera_streams(args.data, args.labels, args.model, args.novelty_threshold), shaper)
    print(f"{len(pairs)} frame pairs, {int(pairs.labels.sum())} keyframes")
    scorer = train_scorer(pairs, config, args.out, steps=args.steps, seed=args.seed)
    if args.val_data:
        held_out = stream_pairs(
            camera_streams(args.val_data, args.labels, args.model, args.novelty_threshold), shaper
        )
        figures = precision_recall(scorer, held_out, config.threshold)
        print(
            "held-out "
            + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        )
    print(f"keyframe scorer written to {args.out}")
    return 0
