"""Teacher-forced training on windows with known answers, and resumable checkpoints.

The forward pass is the inference path itself: vision encoder -> prompt builder
-> decoder prefill of each example's visual context -> every prompt of that
example as a row branched off its prefix KV cache. Only answer tokens carry the
language-model loss. An optional auxiliary head asks every visual token to
classify what its image cell contains (multi-label), which a small model needs
before the language-model loss alone teaches its vision tower anything.

Checkpoints are safetensors (model and optimizer tensors) plus a JSON state, so
resuming never unpickles anything. Each step draws its batch from a generator
seeded by (seed, step), so a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model

from vts_drive.mod.routing import RoutingTrace
from vts_drive.model.decoder import Qwen2Decoder
from vts_drive.model.kv_cache import KVCache
from vts_drive.model.vision import VisionEncoder
from vts_drive.prompt import FrameTokens, PromptBuilder
from vts_drive.tokens.vts import SparsifierConfig
from vts_drive.tokens.vts import select_tokens as vts_select

IGNORE = -100


@dataclass
class TrainingExample:
    """One window and what the model should answer about it."""

    cameras: list[str]
    images: list[list[np.ndarray]]  # [C][T] RGB uint8
    prompts: list[tuple[str, str]]  # (question, answer)
    cell_labels: np.ndarray | None = None  # [C, T, N, K] multi-hot: classes present in each token's cell
    token_keep: np.ndarray | None = None  # [C, T, N] bool: tokens that enter the LLM (None: all)
    # VTS as at inference, instead of token_keep: the keyframes [C, T] bool and the frames that
    # enter with tokens [C, T] bool (keyframes and the frames keyframe gating lets through; a
    # keyframe the gate would skip is seen with its own tokens, at inference with its
    # predecessor's, which the keyframe CNN found no different)
    keyframes: np.ndarray | None = None
    present: np.ndarray | None = None


@dataclass
class Losses:
    total: torch.Tensor
    language: torch.Tensor
    auxiliary: torch.Tensor | None
    answer_tokens: int
    trace: list[RoutingTrace]
    answer_logits: torch.Tensor  # [A, V] logits at the answer tokens, in order


def prompt_rows(builder: PromptBuilder, prompts: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(question, answer) -> (input ids, next-token labels with IGNORE outside the answer)."""
    rows = []
    for question, answer in prompts:
        question_ids, answer_ids = builder.question_ids(question), builder.answer_ids(answer)
        inputs = (question_ids + answer_ids)[:-1]  # the last answer token is never an input
        labels = [IGNORE] * (len(question_ids) - 1) + answer_ids  # position i predicts token i + 1
        rows.append((inputs, labels))
    return rows


def forward_losses(
    vision: VisionEncoder,
    decoder: Qwen2Decoder,
    builder: PromptBuilder,
    examples: list[TrainingExample],
    aux_head: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> Losses:
    device = torch.device(device)
    images = [image for ex in examples for camera in ex.images for image in camera]
    tokens, saliency = vision.encode(vision.preprocess(images))  # [sum C*T, N, D], [sum C*T, N]

    # Each example's visual context, right-padded into one prefix batch.
    contexts, offset = [], 0
    for ex in examples:
        count = len(ex.cameras) * len(ex.images[0])
        keep = token_keep(ex, tokens[offset : offset + count], saliency[offset : offset + count], vision.token_grid)
        frames = []
        for c, (camera, camera_images) in enumerate(zip(ex.cameras, ex.images)):
            for t in range(len(camera_images)):
                kept = tokens[offset] if keep is None else tokens[offset][keep[c, t]]
                frames.append(FrameTokens(camera, t, kept))
                offset += 1
        contexts.append(builder.context(frames, device))
    batch, width = len(examples), max(c.length for c in contexts)
    embeds = torch.zeros(batch, width, tokens.shape[-1], device=device, dtype=tokens.dtype)
    frame_index = torch.full((batch, width), -1, dtype=torch.long, device=device)
    valid = torch.zeros(batch, width, dtype=torch.bool, device=device)
    for b, context in enumerate(contexts):
        embeds[b, : context.length] = context.embeds
        frame_index[b, : context.length] = context.frame_index
        valid[b, : context.length] = True
    positions = torch.arange(width, device=device).expand(batch, -1)
    cache, trace = KVCache(decoder.num_layers), []
    decoder(embeds, positions, valid, cache, plan=decoder.routing_plan(frame_index), trace=trace)

    # Every prompt of every example, as a row over its example's prefix.
    rows, owners = [], []
    for b, ex in enumerate(examples):
        for row in prompt_rows(builder, ex.prompts):
            rows.append(row)
            owners.append(b)
    lengths = torch.tensor([len(ids) for ids, _ in rows], device=device)
    row_width = int(lengths.max())
    ids = torch.zeros(len(rows), row_width, dtype=torch.long, device=device)
    labels = torch.full((len(rows), row_width), IGNORE, dtype=torch.long, device=device)
    for r, (row_ids, row_labels) in enumerate(rows):
        ids[r, : len(row_ids)] = torch.tensor(row_ids, device=device)
        labels[r, : len(row_labels)] = torch.tensor(row_labels, device=device)
    owner = torch.tensor(owners, device=device)
    prefix_lengths = torch.tensor([c.length for c in contexts], device=device)[owner]
    row_positions = prefix_lengths[:, None] + torch.arange(row_width, device=device)[None]
    row_valid = torch.arange(row_width, device=device)[None] < lengths[:, None]
    hidden = decoder(decoder.embed(ids), row_positions, row_valid, cache.select_rows(owner))
    logits = decoder.logits(hidden)  # [R, Ls, V]
    answer = labels != IGNORE
    language = F.cross_entropy(logits[answer], labels[answer])

    auxiliary = None
    if aux_head is not None and all(ex.cell_labels is not None for ex in examples):
        targets = torch.from_numpy(np.concatenate([ex.cell_labels.reshape(-1, *ex.cell_labels.shape[2:]) for ex in examples]))
        auxiliary = F.binary_cross_entropy_with_logits(aux_head(tokens).float(), targets.to(device).float())
    total = language if auxiliary is None else language + auxiliary
    return Losses(total, language, auxiliary, int(answer.sum()), trace, logits[answer])


@torch.no_grad()
def token_keep(
    example: TrainingExample, tokens: torch.Tensor, saliency: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor | None:
    """The example's tokens [C*T, N, D] and saliency [C*T, N] -> which enter the LLM [C, T, N]
    (None: all). With keyframes, VTS chooses them as the pipeline does, from this step's tokens:
    a frame that is not present is a zero frame (never chosen) and keeps no token."""
    cameras, frames = len(example.cameras), len(example.images[0])
    if example.keyframes is None:
        return None if example.token_keep is None else torch.from_numpy(example.token_keep).to(tokens.device)
    present = torch.from_numpy(example.present).to(tokens.device)  # [C, T]
    gated_tokens = tokens.view(cameras, frames, *tokens.shape[1:]) * present[..., None, None]
    gated_saliency = saliency.view(cameras, frames, -1) * present[..., None]
    keyframes = torch.from_numpy(example.keyframes).to(tokens.device)
    keep = vts_select(gated_tokens[None], gated_saliency[None], keyframes[None], grid, SparsifierConfig())[0]
    return keep & present[..., None]


def cosine_lr(step: int, steps: int, warmup: int, peak: float, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_checkpoint(folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """module weights, optimizer moments and a JSON state; written to a temporary name, then renamed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in module.named_parameters()}
    moments = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for key, value in optimizer.state.get(parameter, {}).items():
                if torch.is_tensor(value):
                    moments[f"{names[id(parameter)]}::{key}"] = value.detach().contiguous()
    save_model(module, str(folder / "weights.tmp.safetensors"))  # handles tied weights
    (folder / "weights.tmp.safetensors").replace(folder / "weights.safetensors")
    save_file(moments, str(folder / "optimizer.tmp.safetensors"))
    (folder / "optimizer.tmp.safetensors").replace(folder / "optimizer.safetensors")
    (folder / "state.tmp.json").write_text(json.dumps(state, indent=2))
    (folder / "state.tmp.json").replace(folder / "state.json")


def load_checkpoint(folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
    """Restore a checkpoint written by save_checkpoint; None when there is none."""
    folder = Path(folder)
    if not (folder / "state.json").is_file():
        return None
    load_model(module, str(folder / "weights.safetensors"))
    moments = load_file(str(folder / "optimizer.safetensors"))
    by_name = dict(module.named_parameters())
    for key, value in moments.items():
        name, _, slot = key.rpartition("::")
        optimizer.state[by_name[name]][slot] = value
    return json.loads((folder / "state.json").read_text())
