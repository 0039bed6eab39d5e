"""`vts-drive train-synth`: train synthdrive-tiny (a small LlavaOnevision model) on synthdrive."""

from __future__ import annotations

import argparse
from pathlib import Path

SIZES = ("synthdrive-tiny", "test")
SIZE_ALIASES = {"small": "synthdrive-tiny", "tiny": "test"}  # the names of earlier releases


def register(subparsers: argparse._SubParsersAction) -> None:
    from vts_drive.config import ModConfig

    parser = subparsers.add_parser(
        "train-synth",
        help="train a small LlavaOnevision model on a synthdrive dataset (resumable)",
        description="Trains from scratch with a dense auxiliary loss; checkpoints in OUT/checkpoint and "
        "resumes from there after an interruption. The finished model is written to OUT. With --stages, runs "
        "a recipe instead: a file of stages (synth, train-synth, train-keyframe, train-router, settings, copy; "
        "see vts_drive/recipe.py), such as scripts/synthdrive_tiny_stages.yaml.",
    )
    recipe = parser.add_argument_group("a recipe of stages")
    recipe.add_argument(
        "--stages", type=Path, metavar="FILE", help="run the stages of this YAML file in order"
    )
    recipe.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a variable of the stages file (repeat), e.g. work=/scratch",
    )
    recipe.add_argument(
        "--first-stage", type=int, default=1, metavar="N", help="start at stage N (default: 1)"
    )
    parser.add_argument(
        "--data", type=Path, help="synthdrive folder (vts-drive synth); required without --stages"
    )
    parser.add_argument("--out", type=Path, help="model folder to write; required without --stages")
    parser.add_argument("--val-data", type=Path, help="held-out synthdrive folder for periodic validation")
    parser.add_argument(
        "--val-scenes",
        type=int,
        default=24,
        help="held-out scenes validated on, the newest window of each (one box is 1/boxes of box accuracy)",
    )
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--single-frame-steps", type=int, default=400, help="first stage: single front frames, every question"
    )
    parser.add_argument(
        "--routed-share",
        type=float,
        default=0.0,
        help="share of each batch's windows that also train with MoD routing on, routers jointly (0: dense only)",
    )
    parser.add_argument(
        "--token-dropout-share",
        type=float,
        default=0.3,
        help="share of windows whose frames other than the anchor keep part of their tokens",
    )
    parser.add_argument(
        "--empty-frame-share",
        type=float,
        default=0.0,
        help="in those windows, share of those other frames that keep no token (as under VTS)",
    )
    parser.add_argument(
        "--vts-share",
        type=float,
        default=0.0,
        help="share of windows that keep exactly the tokens mode vts gives the LLM (needs a keyframe scorer in OUT, "
        "from train-keyframe)",
    )
    parser.add_argument(
        "--r",
        type=float,
        help="with --routed-share, for new routers: keep ratio, mod.keep_ratio (default: "
        f"{ModConfig().keep_ratio}; routers already in OUT keep theirs)",
    )
    parser.add_argument(
        "--layers",
        help="with --routed-share, for new routers: comma-separated routed layer indices, mod.layers "
        "(default: every other from 1)",
    )
    parser.add_argument(
        "--box-weight",
        type=float,
        default=0.0,
        help="weight of the risk-box regression by the visual tokens on the risk object (0: off)",
    )
    parser.add_argument(
        "--coordinate-sigma",
        type=float,
        default=0.0,
        help="soft targets for box coordinates, a Gaussian of this width in hundredths (0: one-hot)",
    )
    parser.add_argument(
        "--risk-windows",
        type=int,
        default=0,
        help="after the first stage, extra front-camera windows per step asked only for the risk (cheap box practice)",
    )
    parser.add_argument(
        "--init",
        help="start from this model (name or folder): its weights, tokenizer, keyframe scorer and routers; "
        "its size replaces --size",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="input size in pixels (default: the size's, or the --init model's); a --init model of another size "
        "keeps its patch size and has its vision position embeddings interpolated to the new patch grid",
    )
    parser.add_argument(
        "--size",
        choices=[*SIZES, *SIZE_ALIASES],
        default="synthdrive-tiny",
        help="synthdrive-tiny: the shipped model's size; test: a model tests train in seconds "
        "(also: small, tiny; default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vts_drive.errors import InputError

    if args.stages is not None:
        return run_recipe(args)
    if args.data is None or args.out is None:
        raise InputError("give --data and --out (or --stages FILE)")

    import torch

    from vts_drive.cli.common import section_settings
    from vts_drive.cli.train_router import ROUTING_FLAGS
    from vts_drive.model.loading import check_device
    from vts_drive.model.small import SmallModelSize
    from vts_drive.synth.train import TrainConfig, train_synth
    from vts_drive.testing.tiny import TINY_SIZE

    check_device(args.device)
    if args.device.startswith("cuda"):
        torch.set_float32_matmul_precision("high")  # TF32 matrix products, as synthdrive-tiny was trained
    for name in ("routed_share", "token_dropout_share", "empty_frame_share", "vts_share"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if args.image_size is not None and args.image_size < 8:
        raise InputError(f"--image-size must be at least 8 pixels, got {args.image_size}")
    if args.val_scenes < 1:
        raise InputError(f"--val-scenes must be at least 1, got {args.val_scenes}")
    for name in ("box_weight", "coordinate_sigma", "risk_windows"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(args, name)}")
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        single_frame_steps=args.single_frame_steps,
        seed=args.seed,
        routed_share=args.routed_share,
        token_dropout_share=args.token_dropout_share,
        empty_frame_share=args.empty_frame_share,
        vts_share=args.vts_share,
        box_weight=args.box_weight,
        coordinate_sigma=args.coordinate_sigma,
        risk_windows=args.risk_windows,
        init=args.init,
        image_size=args.image_size,
        val_scenes=args.val_scenes,
        routing=section_settings(args, "mod", ROUTING_FLAGS),
        size=TINY_SIZE if SIZE_ALIASES.get(args.size, args.size) == "test" else SmallModelSize(),
    )
    out = train_synth(args.data, args.out, config, val_dir=args.val_data, device=args.device)
    print(f"model written to {out}")
    return 0


def run_recipe(args: argparse.Namespace) -> int:
    from vts_drive.errors import InputError
    from vts_drive.recipe import read_stages, run_stages

    if args.data is not None or args.out is not None:
        raise InputError(
            "--stages runs the stages file's own settings: give --data, --out and the rest in it"
        )
    stages = read_stages(args.stages, args.var)
    if not 1 <= args.first_stage <= len(stages):
        raise InputError(f"--first-stage must be from 1 to {len(stages)}, got {args.first_stage}")
    run_stages(stages, args.first_stage)
    print(f"{len(stages) - args.first_stage + 1} stage(s) of {args.stages} done")
    return 0
