"""`vts-drive train-router`: train mixture-of-depths routers for a frozen model on synthdrive."""

from __future__ import annotations

import argparse
from pathlib import Path

from vts_drive.cli.common import add_set_argument

ROUTING_FLAGS = {"r": "mod.keep_ratio", "layers": "mod.layers"}  # flags short for a mod.* setting


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-router",
        help="train MoD routers for a frozen model (LM + top-k membership BCE [+ KL to dense]; resumable)",
        description="Freezes the model and trains one linear router per routed layer on synthdrive windows. "
        "Writes mod_router.safetensors/.json to OUT; with OUT the model folder, loading the model picks "
        "the routers up for modes mod and vts+mod.",
    )
    parser.add_argument("--model", required=True, help="model folder or shipped model name")
    parser.add_argument("--data", type=Path, required=True, help="synthdrive folder (vts-drive synth)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the routers to")
    from vts_drive.config import ModConfig

    settings = parser.add_argument_group("router settings, written to OUT's settings file (mod.*)")
    settings.add_argument(
        "--r",
        type=float,
        help="keep ratio: share of each frame's vision tokens a routed layer computes "
        f"(default: {ModConfig().keep_ratio})",
    )
    settings.add_argument(
        "--layers", help="comma-separated routed layer indices (default: every other layer from 1)"
    )
    add_set_argument(settings, "mod.gate=false")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--aux-weight", type=float, default=1.0, help="weight of the top-k membership BCE (see --aux-target)"
    )
    parser.add_argument(
        "--aux-target",
        choices=["attention", "self"],
        default="attention",
        help="top-k the BCE targets: the tokens the dense model's prompts attend to most (default), or the router's own",
    )
    parser.add_argument(
        "--kl-weight", type=float, default=0.0, help="weight of the KL term to the dense model's answers"
    )
    parser.add_argument("--scenes", type=int, default=1000, help="scenes of --data to sample windows from")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from vts_drive.cli.common import section_settings
    from vts_drive.errors import InputError
    from vts_drive.mod.train import train_routers
    from vts_drive.model.loading import load_model
    from vts_drive.model.vision import VisionEncoder
    from vts_drive.synth.dataset import SynthDataset
    from vts_drive.synth.train import TrainConfig, prepare, sample_examples

    if args.scenes < 1:
        raise InputError(f"--scenes must be at least 1, got {args.scenes}")
    routing = section_settings(args, "mod", ROUTING_FLAGS)
    model = load_model(args.model)
    dataset = SynthDataset(args.data, max_scenes=args.scenes)
    dataset.check_cameras(["front"])
    vision = VisionEncoder(model)
    data = prepare(dataset, model.config.vision_config.image_size, vision.token_grid, cache=None)
    windows = TrainConfig(seed=args.seed)

    def batches(step: int):
        rng = np.random.default_rng([args.seed, step])
        return sample_examples(data, rng.integers(0, len(dataset), args.batch_size), windows, rng)

    train_routers(
        model,
        batches,
        routing,
        args.out,
        steps=args.steps,
        lr=args.lr,
        aux_weight=args.aux_weight,
        kl_weight=args.kl_weight,
        aux_target=args.aux_target,
        seed=args.seed,
    )
    print(f"routers written to {args.out}")
    return 0
