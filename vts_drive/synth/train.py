"""Train a small LlavaOnevision model on synthdrive, from scratch, on CPU or one GPU.

Each step draws windows (scene, end frame, 3 cameras or the front one, 1 to 5
frames) with their truth, and teaches the description, the risk answer, a few
of the end frame's questions and, in windows of 2 frames or more, every
question about what changed during the window (synthdrive's temporal questions). Three things make a model this
small learn to see in minutes (measured, see METHODS.md section 8):
- a dense auxiliary loss: every visual token classifies what its image cell
  holds (the scene's class-id map pooled to the token grid), plus whether the
  cell overlaps the risk object, and (`box_weight`) every front-camera token on
  the risk object regresses its box: the language-model loss alone, which
  scores a coordinate one hundredth off as wrong as one far off, left the
  model writing a few typical boxes;
- token dropout: some windows keep all tokens of one frame per camera (the
  keyframe scorer's anchor: the first or the newest) and only part of the other
  frames' tokens (with `empty_frame_share`, none of some frames' tokens, as VTS
  leaves a frame that repeats its keyframe), so the model stays accurate when VTS or
  keyframe gating thins a window; with `vts_share`, some windows instead keep
  exactly the tokens the pipeline's mode vts would give the LLM (the keyframe
  scorer in the output folder picks keyframes and gates frames, VTS selects
  from the step's tokens);
- a first stage on single front frames with every question of the frame: a
  model trained on full windows from the start learns the answers' priors and
  then stays blind (still at its blind accuracy after 500 steps), while on
  single frames the LLM starts reading its visual tokens within ~300 steps;
  later steps mix 1- to 5-frame windows of 1 or 3 cameras.
With `routed_share` > 0 (after the first stage), the first windows of each batch
also go through a second pass with mixture-of-depths routing on, and the
routers train jointly with the model, as in the mixture-of-depths paper: the
model learns to answer from the tokens a routed layer computes, and each router
learns (BCE) the top-k tokens of its frame by the attention the prompts give
them in the dense pass of the same step. The routers start from the ones in
the output folder when there are any.
The run checkpoints every `checkpoint_every` steps and resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from vts_drive.config import KeyframeConfig, ModConfig, read_settings, resolve_config, write_settings
from vts_drive.keyframe.scorer import WEIGHTS_FILE as SCORER_WEIGHTS
from vts_drive.keyframe.scorer import KeyframeScorer, load_scorer, select_keyframes
from vts_drive.mod.routing import WEIGHTS_FILE as ROUTER_WEIGHTS
from vts_drive.mod.routing import Routers, load_routers, save_routers
from vts_drive.mod.train import PromptAttentionProbe, routed_losses
from vts_drive.model.decoder import Qwen2Decoder
from vts_drive.model.loading import VisionLanguageModel, load_model
from vts_drive.model.small import (
    SmallModelSize,
    build_small_model,
    save_small_model,
    train_tokenizer,
    with_image_size,
)
from vts_drive.model.vision import VisionEncoder
from vts_drive.pipeline import Pipeline
from vts_drive.prompt import DESCRIPTION_PROMPT, RISK_PROMPT, SYSTEM_PROMPT, PromptBuilder
from vts_drive.report import parse_risk
from vts_drive.scoring import box_iou, exact_match
from vts_drive.synth.dataset import SynthDataset, SynthScene
from vts_drive.synth.truth import QUESTIONS, TEMPORAL_QUESTIONS, question_kind
from vts_drive.training import (
    AuxiliaryHeads,
    CoordinateTargets,
    TrainingExample,
    cosine_lr,
    forward_losses,
    load_checkpoint,
    save_checkpoint,
)


@dataclass
class TrainConfig:
    steps: int = 700
    batch_size: int = 16
    lr: float = 1e-3
    single_frame_steps: int = 400  # first stage: one front frame per window, all its questions
    warmup_steps: int = 30
    weight_decay: float = 0.01
    questions_per_window: int = 5  # of the end frame's present-tense questions (temporal ones are all asked)
    window_frames: tuple[int, ...] = (1, 2, 4, 5)  # frames per window, drawn uniformly
    front_only_share: float = 0.2
    token_dropout_share: float = 0.3
    empty_frame_share: float = 0.0  # in token-dropout windows: share of the other frames that keep no token
    vts_share: float = 0.0  # share of windows whose tokens VTS and keyframe gating select, as at inference
    aux_weight: float = 1.0
    box_weight: float = 0.0  # weight of the risk-box regression by the tokens on the risk object
    coordinate_sigma: float = 0.0  # > 0: soft targets of this width (hundredths) for box coordinates
    risk_windows: int = (
        0  # after the first stage: extra front-camera windows per step, asked for the risk only
    )
    routed_share: float = 0.0  # share of each batch's windows that also train with MoD routing on
    routing: ModConfig = field(default_factory=ModConfig)
    router_lr: float = 3e-3
    vocab_size: int = 1024
    checkpoint_every: int = 50
    validate_every: int = 100
    val_scenes: int = 24  # held-out scenes validated on (the newest window of each)
    seed: int = 0
    size: SmallModelSize = field(default_factory=SmallModelSize)
    init: str | None = None  # start from this model's weights and tokenizer (its size replaces `size`)
    image_size: int | None = (
        None  # input size, overriding `size`'s or the start model's (its position embeddings interpolated)
    )


@dataclass
class PreparedData:
    """Every frame of every scene at the model's input size, and its token-cell labels."""

    images: np.ndarray  # [S, C, T, s, s, 3] uint8
    cells: np.ndarray  # [S, C, T, N, K + 1] uint8 (last channel: overlaps the risk object)
    scenes: list[SynthScene]  # truth and window questions of each scene
    cameras: list[str]
    keyframe_probabilities: np.ndarray | None = None  # [S, C, T] from the keyframe scorer (for vts_share)


def cell_labels(labels: np.ndarray, grid: tuple[int, int], classes: int, share: float = 0.03) -> np.ndarray:
    """A class-id map [H, W] -> [N, classes] multi-hot: classes covering >= share of each grid cell
    (cell r spans rows r*H//rows to (r+1)*H//rows, and likewise for columns)."""
    rows, cols = grid
    height, width = labels.shape
    row_of = np.searchsorted(np.arange(rows) * height // rows, np.arange(height), side="right") - 1  # [H]
    col_of = np.searchsorted(np.arange(cols) * width // cols, np.arange(width), side="right") - 1  # [W]
    cell = (row_of[:, None] * cols + col_of[None, :]).ravel()  # [H*W]
    values = max(classes, int(labels.max()) + 1)
    counts = np.bincount(cell * values + labels.ravel(), minlength=rows * cols * values).reshape(
        rows * cols, values
    )
    sizes = np.bincount(cell, minlength=rows * cols)  # [N]
    return (counts[:, :classes] >= share * sizes[:, None]).astype(np.uint8)


def risk_cells(box: list[float] | None, grid: tuple[int, int]) -> np.ndarray:
    rows, cols = grid
    if box is None:
        return np.zeros(rows * cols, dtype=np.uint8)
    x1, y1, x2, y2 = box
    columns, lines = np.arange(cols), np.arange(rows)
    overlap_x = np.minimum(x2, (columns + 1) / cols) - np.maximum(x1, columns / cols) > 0  # [cols]
    overlap_y = np.minimum(y2, (lines + 1) / rows) - np.maximum(y1, lines / rows) > 0  # [rows]
    return (overlap_y[:, None] & overlap_x[None, :]).ravel().astype(np.uint8)


def prepare(
    dataset: SynthDataset, input_size: int, grid: tuple[int, int], cache: Path | None
) -> PreparedData:
    """Every frame resized and labelled once, by a thread per core (image decoding releases the
    GIL); `cache` keeps the result for a resumed run at the same input size and token grid."""
    classes = len(dataset.classes)
    scenes, cameras, frames = len(dataset), len(dataset.cameras), dataset.frames
    images_shape = (scenes, cameras, frames, input_size, input_size, 3)
    cells_shape = (scenes, cameras, frames, grid[0] * grid[1], classes + 1)
    if cache is not None and cache.with_suffix(".npz").is_file():
        stored = np.load(cache.with_suffix(".npz"))
        if stored["images"].shape == images_shape and stored["cells"].shape == cells_shape:
            return PreparedData(stored["images"], stored["cells"], dataset.scenes, dataset.cameras)
    images = np.zeros(images_shape, dtype=np.uint8)
    cells = np.zeros(cells_shape, dtype=np.uint8)
    all_scenes = dataset.scenes  # read once, before the threads share it

    def load_scene(s: int) -> None:
        scene = all_scenes[s]
        for c, camera in enumerate(dataset.cameras):
            for t in range(frames):
                images[s, c, t] = cv2.resize(
                    scene.image(camera, t), (input_size, input_size), interpolation=cv2.INTER_AREA
                )
                cells[s, c, t, :, :classes] = cell_labels(scene.labels(camera, t), grid, classes)
                if camera == "front":
                    cells[s, c, t, :, classes] = risk_cells(scene.truth[t].risk_box, grid)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(tqdm(pool.map(load_scene, range(scenes)), total=scenes, desc="load synthdrive", unit="scene"))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache.with_suffix(".npz"), images=images, cells=cells)
    return PreparedData(images, cells, all_scenes, dataset.cameras)


def keyframe_probabilities(
    images: np.ndarray, scorer: KeyframeScorer, scenes_per_batch: int = 64
) -> np.ndarray:
    """images [S, C, T, s, s, 3] -> each frame's keyframe probability [S, C, T], every frame
    scored against the frame before it, as a stream is scored."""
    out = np.zeros(images.shape[:3], dtype=np.float32)
    for start in tqdm(range(0, len(images), scenes_per_batch), desc="score keyframes", unit="batch"):
        batch = images[start : start + scenes_per_batch]
        streams = scorer.prepare(list(batch.reshape(-1, *batch.shape[3:])))  # [S*C*T, 3, s', s']
        streams = streams.view(-1, batch.shape[2], *streams.shape[1:])  # [S*C, T, 3, s', s']
        out[start : start + len(batch)] = scorer.score_streams(streams).view(batch.shape[:3]).cpu().numpy()
    return out


def risk_boxes(data: PreparedData, scene: int, camera_rows: list[int], frames: range) -> np.ndarray:
    """[C, T, 4]: the risk object's box in each front frame of a window; NaN elsewhere (the
    truth places the risk object in the front camera only)."""
    boxes = np.full((len(camera_rows), len(frames), 4), np.nan, dtype=np.float32)
    for c, camera in enumerate(camera_rows):
        if data.cameras[camera] == "front":
            for t, frame in enumerate(frames):
                if data.scenes[scene].truth[frame].risk_box is not None:
                    boxes[c, t] = data.scenes[scene].truth[frame].risk_box
    return boxes


def single_frame_examples(
    data: PreparedData, rows: np.ndarray, rng: np.random.Generator
) -> list[TrainingExample]:
    front = data.cameras.index("front")
    examples = []
    for s in rows:
        t = int(rng.integers(0, data.images.shape[2]))
        truth = data.scenes[s].truth[t]
        examples.append(
            TrainingExample(
                cameras=["front"],
                images=[[data.images[s, front, t]]],
                prompts=[(question, answer) for question, answer, _ in truth.qa],
                cell_labels=data.cells[s, [front], t : t + 1],
                risk_boxes=risk_boxes(data, s, [front], range(t, t + 1)),
            )
        )
    return examples


def sample_examples(
    data: PreparedData,
    rows: np.ndarray,
    config: TrainConfig,
    rng: np.random.Generator,
    scorer_config: KeyframeConfig | None = None,
    risk_only: bool = False,
) -> list[TrainingExample]:
    """Windows of 1 or 3 cameras asked for the description, the risk and some questions; with
    `risk_only`, front-camera windows asked for the risk alone, with every token: cheap extra
    practice at the box of the window's newest frame, which a model that mixes the frames'
    positions misses."""
    examples = []
    per_frame = data.cells.shape[3]
    for s in rows:
        frames = int(rng.choice(config.window_frames))
        end = int(rng.integers(frames - 1, data.images.shape[2]))
        front_only = risk_only or rng.random() < config.front_only_share
        camera_rows = [data.cameras.index("front")] if front_only else list(range(len(data.cameras)))
        window = slice(end - frames + 1, end + 1)
        truth = data.scenes[s].truth[end]
        if risk_only:
            prompts = [(RISK_PROMPT, truth.risk_answer)]
        else:
            questions = rng.choice(len(truth.qa), size=config.questions_per_window, replace=False)
            prompts = [(DESCRIPTION_PROMPT, truth.description), (RISK_PROMPT, truth.risk_answer)]
            prompts += [(truth.qa[q][0], truth.qa[q][1]) for q in questions]
            prompts += [
                (question, answer) for question, answer, _ in data.scenes[s].qa(end, frames)[len(truth.qa) :]
            ]
        keep = keyframes = present = None
        if not risk_only and rng.random() < config.vts_share:
            probabilities = torch.from_numpy(data.keyframe_probabilities[s, camera_rows, window])  # [C, T]
            keyframes = select_keyframes(probabilities, scorer_config).numpy()
            present = keyframes | (probabilities >= scorer_config.skip_threshold).numpy()
            present[:, 0] = True  # the window's oldest frame always enters, as in the pipeline
        elif not risk_only and rng.random() < config.token_dropout_share:
            keep = rng.random((len(camera_rows), frames, per_frame)) < rng.uniform(0.2, 0.7)
            if config.empty_frame_share > 0:  # never the oldest frame, which always enters in the pipeline
                keep[:, 1:] &= rng.random((len(camera_rows), frames - 1, 1)) >= config.empty_frame_share
            # the anchor keyframe keeps every token (without a scorer: the oldest frame)
            keep[:, scorer_config.anchor_index if scorer_config else 0] = True
        examples.append(
            TrainingExample(
                cameras=[data.cameras[c] for c in camera_rows],
                images=[list(data.images[s, c, window]) for c in camera_rows],
                prompts=prompts,
                cell_labels=data.cells[s, camera_rows, window],
                token_keep=keep,
                keyframes=keyframes,
                present=present,
                risk_boxes=risk_boxes(data, s, camera_rows, range(window.start, window.stop)),
            )
        )
    return examples


def copy_side_files(source: Path, out: Path) -> None:
    """The keyframe scorer and MoD routers of the model training starts from (weights and their
    settings), where OUT has none of its own: training updates the routers and keeps the scorer."""
    settings = read_settings(source)
    for weights, section in ((SCORER_WEIGHTS, "keyframe."), (ROUTER_WEIGHTS, "mod.")):
        if (source / weights).is_file() and not (out / weights).is_file():
            write_settings(out, {key: value for key, value in settings.items() if key.startswith(section)})
            shutil.copy2(source / weights, out / weights)


def model_history(start: VisionLanguageModel | None, run: list[dict]) -> list[dict]:
    """The history of the written weights from their first step: a run started from another
    model continues that model's history, its steps numbered on from the last one there."""
    path = start.folder / "training_history.json" if start is not None else None
    if path is None or not path.is_file():
        return run
    before = json.loads(path.read_text())
    offset = before[-1]["step"] if before else 0
    return before + [{**record, "step": offset + record["step"], "init": start.name} for record in run]


def tokenizer_corpus(dataset: SynthDataset) -> list[str]:
    corpus = [
        SYSTEM_PROMPT,
        DESCRIPTION_PROMPT,
        RISK_PROMPT,
        *QUESTIONS.values(),
        *TEMPORAL_QUESTIONS.values(),
    ]
    corpus += ["<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|im_start|>assistant\n"]
    corpus += [f"camera {camera}:\n" for camera in dataset.cameras] + [f"frame {t}:" for t in range(16)]
    corpus += [f"{value / 100:.2f}" for value in range(101)] * 20  # box coordinates as whole tokens
    for scene in dataset.scenes:
        for end, truth in enumerate(scene.truth):
            corpus += [truth.description, truth.risk_answer] + [
                f"{q} {a}" for q, a, _ in scene.qa(end, min(4, end + 1))
            ]
    return corpus


def validate(
    model: VisionLanguageModel,
    dataset: SynthDataset,
    scenes: list[int],
    frames: int = 4,
    routers: Path | None = None,
) -> dict[str, float]:
    """Greedy answers on held-out windows through the real pipeline (mode mod with `routers`):
    exact match of the present-tense and of the temporal questions, and the risk box."""
    settings = {"mode": "mod", "routers": str(routers)} if routers else {"mode": "dense"}
    pipeline = Pipeline(model, {**settings, "frame_cache": False})
    hits = {"present": [], "temporal": []}
    ious = []
    for index in scenes:
        scene = dataset.scene(index)
        end = scene.frames - 1
        truth, qa = scene.truth[end], scene.qa(end, frames)
        answers = pipeline.answer(
            scene.window(end, frames, dataset.cameras), [RISK_PROMPT, *(q for q, _, _ in qa)]
        ).answers
        for answer, (question, expected, _) in zip(answers[1:], qa):
            hits[question_kind(question)].append(exact_match(answer, expected))
        if truth.risk_box is not None:
            ious.append(box_iou(parse_risk(answers[0], "front").bbox, truth.risk_box))
    figures = {f"qa_{kind}": float(np.mean(found)) for kind, found in hits.items() if found}
    figures["qa_exact_match"] = float(np.mean(hits["present"] + hits["temporal"]))
    return figures | {
        "bbox_acc50": float(np.mean([i > 0.5 for i in ious])) if ious else 0.0,
        "boxes": len(ious),
    }


def train_synth(
    data_dir: Path, out: Path, config: TrainConfig, val_dir: Path | None = None, device: str = "cpu"
) -> Path:
    out = Path(out)
    start = (
        load_model(config.init, device, dtype="fp32") if config.init is not None else None
    )  # trained in float32
    start_hf = start.hf_model if start is not None else None
    if start_hf is not None and config.image_size not in (None, start_hf.config.vision_config.image_size):
        start_hf = with_image_size(start_hf, config.image_size)
    dataset = SynthDataset(data_dir)  # inputs are checked before OUT is created
    dataset.check_cameras(["front"])
    val = SynthDataset(val_dir) if val_dir else None
    out.mkdir(parents=True, exist_ok=True)
    if start is not None:
        copy_side_files(start.folder, out)
    scorer, scorer_config = None, None  # the model's keyframe scorer, where it has one (vts_share needs it)
    if config.vts_share > 0 or (out / SCORER_WEIGHTS).is_file():
        scorer_config = resolve_config(out).keyframe
        scorer = load_scorer(out, scorer_config, device)
    checkpoint = out / "checkpoint"
    if start is not None and start_hf is not None:  # a checkpoint in OUT replaces these weights below
        hf, tokenizer = start_hf, start.tokenizer
    else:
        tokenizer_dir = checkpoint / "tokenizer"
        if (tokenizer_dir / "tokenizer.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        else:
            tokenizer = train_tokenizer(tokenizer_corpus(dataset), config.vocab_size)
            tokenizer.save_pretrained(tokenizer_dir)
        size = (
            config.size if config.image_size is None else replace(config.size, image_size=config.image_size)
        )
        hf = build_small_model(tokenizer, size, seed=config.seed)
    hf.to(device).train().requires_grad_(True)
    model = VisionLanguageModel.of(hf, "synthdrive-tiny", out, tokenizer, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    vision = VisionEncoder(model)
    decoder = Qwen2Decoder(hf.model.language_model, hf.lm_head)
    builder = PromptBuilder(tokenizer, decoder.embed)
    data = prepare(dataset, vision.image_size, vision.token_grid, checkpoint / "data")
    if config.vts_share > 0:
        data.keyframe_probabilities = keyframe_probabilities(data.images, scorer)
    coordinates = (
        CoordinateTargets(tokenizer, config.coordinate_sigma) if config.coordinate_sigma > 0 else None
    )
    aux_heads = AuxiliaryHeads(hf.config.text_config.hidden_size, data.cells.shape[-1]).to(device)
    trainable = torch.nn.ModuleDict({"model": hf, "aux_heads": aux_heads})
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = load_checkpoint(checkpoint, trainable, optimizer) or {"step": 0, "history": []}
    routers, routed, router_optimizer = None, None, None
    if config.routed_share > 0:
        text = hf.config.text_config
        if (out / ROUTER_WEIGHTS).is_file():
            routers = load_routers(
                out, resolve_config(out).mod, text.hidden_size, text.num_hidden_layers, device
            ).train()
        else:
            routers = Routers(text.hidden_size, text.num_hidden_layers, config.routing).to(device)
        routed = Qwen2Decoder(hf.model.language_model, hf.lm_head, routers)  # the same weights, routed layers
        router_optimizer = torch.optim.AdamW(routers.parameters(), lr=config.router_lr, weight_decay=0.0)
        load_checkpoint(checkpoint / "routers", routers, router_optimizer)
    (checkpoint / "config.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
    held_out = list(range(min(config.val_scenes, len(val)))) if val else []
    progress = tqdm(
        range(state["step"], config.steps),
        desc="train synthdrive-tiny",
        unit="step",
        initial=state["step"],
        total=config.steps,
    )
    for step in progress:
        rng = np.random.default_rng([config.seed, step])
        rows = rng.integers(0, len(dataset), config.batch_size)
        if step < config.single_frame_steps:
            examples = single_frame_examples(data, rows, rng)
        else:
            examples = sample_examples(data, rows, config, rng, scorer_config)
        routed_windows = (
            round(config.routed_share * len(examples)) if step >= config.single_frame_steps else 0
        )
        hf.train()
        probe = PromptAttentionProbe(routers.layer_indices, decoder.scale) if routed_windows else None
        losses = forward_losses(vision, decoder, builder, examples, aux_heads, device, coordinates, probe)
        loss = losses.language + config.aux_weight * losses.auxiliary + config.box_weight * losses.box
        record = {
            "step": step + 1,
            "lm": round(losses.language.item(), 4),
            "aux": round(losses.auxiliary.item(), 4),
            "box": round(losses.box.item(), 4),
        }
        if config.risk_windows and step >= config.single_frame_steps:
            extra = sample_examples(
                data, rng.integers(0, len(dataset), config.risk_windows), config, rng, risk_only=True
            )
            risk = forward_losses(vision, decoder, builder, extra, aux_heads, device, coordinates)
            loss = loss + risk.language + config.aux_weight * risk.auxiliary + config.box_weight * risk.box
            record |= {"risk_lm": round(risk.language.item(), 4), "risk_box": round(risk.box.item(), 4)}
        if routed_windows:
            routed_pass, membership = routed_losses(
                vision, routed, builder, examples[:routed_windows], probe.received, device
            )
            loss = loss + routed_pass.language + membership
            record |= {
                "routed_lm": round(routed_pass.language.item(), 4),
                "membership": round(membership.item(), 4),
            }
        lr = cosine_lr(step, config.steps, config.warmup_steps, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr * config.lr
        optimizer.zero_grad()
        if routers is not None:
            for group in router_optimizer.param_groups:
                group["lr"] = lr * config.router_lr
            router_optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable.parameters(), 1.0)
        optimizer.step()
        if routers is not None:
            router_optimizer.step()
        progress.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "step"})
        record["time"] = time.time()
        if held_out and ((step + 1) % config.validate_every == 0 or step + 1 == config.steps):
            hf.eval()
            record.update(validate(model, val, held_out))
            if routers is not None:
                save_routers(routers, out)
                record.update({f"mod_{k}": v for k, v in validate(model, val, held_out, routers=out).items()})
            tqdm.write(f"step {step + 1}: {record}")
        state["history"].append(record)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            state["step"] = step + 1
            if routers is not None:
                save_checkpoint(checkpoint / "routers", routers, router_optimizer, {"step": step + 1})
            save_checkpoint(checkpoint, trainable, optimizer, state)
    hf.eval()
    save_small_model(hf, tokenizer, out)
    if routers is not None:
        save_routers(routers.eval(), out)
    (out / "training_history.json").write_text(
        json.dumps(model_history(start, state["history"]), indent=1) + "\n"
    )
    return out
