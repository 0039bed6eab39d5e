"""Teacher-forced training on windows with known answers, and resumable checkpoints.

The forward pass is the inference path itself: vision encoder -> prompt builder
-> decoder prefill of each example's visual context -> every prompt of that
example as a row branched off its prefix KV cache. Only answer tokens carry the
language-model loss. Optional auxiliary heads supervise the visual tokens
densely: every token classifies what its image cell contains (multi-label),
which a small model needs before the language-model loss alone teaches its
vision tower anything, and every token on the risk object regresses that
object's box, so the tokens the LLM reads carry where the object is, not only
that it is there.

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
from transformers import PreTrainedTokenizerBase

from vts_drive.config import VtsConfig
from vts_drive.errors import InputError
from vts_drive.mod.routing import RoutingTrace
from vts_drive.model.decoder import AttentionProbe, Qwen2Decoder
from vts_drive.model.kv_cache import KVCache
from vts_drive.model.vision import VisionEncoder
from vts_drive.prompt import FrameTokens, PromptBuilder
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
    risk_boxes: np.ndarray | None = None  # [C, T, 4] the risk object's box per frame, NaN where there is none


class AuxiliaryHeads(torch.nn.Module):
    """Training-only heads on the visual tokens [.., D]; the shipped model has no trace of them."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.cells = torch.nn.Linear(
            width, classes
        )  # logits: what the token's cell holds (last: the risk object)
        self.box = torch.nn.Sequential(
            torch.nn.Linear(width, width), torch.nn.GELU(), torch.nn.Linear(width, 4)
        )


@dataclass
class Losses:
    total: torch.Tensor
    language: torch.Tensor
    auxiliary: torch.Tensor | None
    box: torch.Tensor | None  # smooth L1 of the risk box regressed by the tokens on the risk object
    answer_tokens: int
    trace: list[RoutingTrace]
    answer_logits: torch.Tensor  # [A, V] logits at the answer tokens, in order


class CoordinateTargets:
    """Soft targets for the fraction token of a box coordinate ("0" "." "78"): a Gaussian of
    width `sigma` hundredths around the true value over the tokens "00".."99", instead of the
    one-hot target, which scores a coordinate one hundredth off as wrong as one far off."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, sigma: float) -> None:
        ids = [tokenizer.convert_tokens_to_ids(f"{value:02d}") for value in range(100)]
        point = tokenizer.convert_tokens_to_ids(".")
        zeros = [
            tokenizer.convert_tokens_to_ids(text) for text in ("0", "\u01200")
        ]  # "0" after "[", " 0" after ", "
        if {None, tokenizer.unk_token_id} & {*ids, point, *zeros}:
            raise InputError(
                "soft box-coordinate targets need the tokens '00'..'99', '.', '0' and ' 0' in the tokenizer"
            )
        self.fraction_ids = torch.tensor(ids)  # [100]
        self.point, self.zeros = point, torch.tensor(zeros)
        values = torch.arange(100, dtype=torch.float32)
        weights = torch.exp(
            -0.5 * ((values[None] - values[:, None]) / sigma) ** 2
        )  # [true value, token value]
        self.distributions = weights / weights.sum(dim=1, keepdim=True)  # [100, 100]

    def positions(self, labels: torch.Tensor) -> torch.Tensor:
        """labels [R, L] -> [R, L] bool: the fraction tokens of numbers written "0.dd" (in synthdrive
        answers, only box coordinates below 1)."""
        fraction = torch.isin(labels, self.fraction_ids.to(labels.device))
        after_point = F.pad(labels[:, :-1] == self.point, (1, 0))
        after_zero = F.pad(torch.isin(labels[:, :-2], self.zeros.to(labels.device)), (2, 0))
        return fraction & after_point & after_zero

    def loss(self, log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log_probs [A, V] and fraction-token labels [A] -> cross-entropy with the soft targets [A]."""
        lookup = torch.full((int(self.fraction_ids.max()) + 1,), -1, dtype=torch.long, device=labels.device)
        lookup[self.fraction_ids.to(labels.device)] = torch.arange(100, device=labels.device)
        targets = self.distributions.to(log_probs.device)[lookup[labels]]  # [A, 100]
        return -(targets * log_probs[:, self.fraction_ids.to(log_probs.device)]).sum(dim=-1)


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
    aux_heads: AuxiliaryHeads | None = None,
    device: torch.device | str = "cpu",
    coordinates: CoordinateTargets | None = None,
    probe: AttentionProbe | None = None,
) -> Losses:
    """`total` is the language-model loss plus the cell loss; the box loss is left for the
    caller to weigh. With `coordinates`, box coordinates' fraction tokens get soft targets;
    `probe` reads what every layer attends to (router training). A decoder built with routers
    routes the visual context."""
    device = torch.device(device)
    images = [image for ex in examples for camera in ex.images for image in camera]
    tokens, saliency = vision.encode(vision.preprocess(images))  # [sum C*T, N, D], [sum C*T, N]

    # Each example's visual context, right-padded into one prefix batch.
    contexts, offset = [], 0
    for ex in examples:
        count = len(ex.cameras) * len(ex.images[0])
        keep = token_keep(
            ex, tokens[offset : offset + count], saliency[offset : offset + count], vision.token_grid
        )
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
    decoder(embeds, positions, valid, cache, plan=decoder.routing_plan(frame_index), trace=trace, probe=probe)

    # Every prompt of every example, as a row over its example's prefix.
    rows, owners = [], []
    for b, ex in enumerate(examples):
        for row in prompt_rows(builder, ex.prompts):
            rows.append(row)
            owners.append(b)
    lengths = torch.tensor([len(ids) for ids, _ in rows], device=device)
    row_width = int(lengths.max())
    ids = torch.zeros(len(rows), row_width, dtype=torch.long)  # filled on the host, moved once
    labels = torch.full((len(rows), row_width), IGNORE, dtype=torch.long)
    for r, (row_ids, row_labels) in enumerate(rows):
        ids[r, : len(row_ids)] = torch.tensor(row_ids)
        labels[r, : len(row_labels)] = torch.tensor(row_labels)
    ids, labels = ids.to(device), labels.to(device)
    owner = torch.tensor(owners, device=device)
    prefix_lengths = torch.tensor([c.length for c in contexts], device=device)[owner]
    row_positions = prefix_lengths[:, None] + torch.arange(row_width, device=device)[None]
    row_valid = torch.arange(row_width, device=device)[None] < lengths[:, None]
    hidden = decoder(decoder.embed(ids), row_positions, row_valid, cache.select_rows(owner), probe=probe)
    logits = decoder.logits(hidden)  # [R, Ls, V]
    answer = labels != IGNORE
    if coordinates is None:
        language = F.cross_entropy(logits[answer], labels[answer])
    else:
        log_probs = F.log_softmax(logits[answer], dim=-1)  # [A, V]
        per_token = -log_probs.gather(1, labels[answer][:, None]).squeeze(1)  # [A]
        soft = coordinates.positions(labels)[answer]  # [A]
        if bool(soft.any()):
            per_token = per_token.masked_scatter(
                soft, coordinates.loss(log_probs[soft], labels[answer][soft])
            )
        language = per_token.mean()

    auxiliary = box = None
    if aux_heads is not None and all(ex.cell_labels is not None for ex in examples):
        targets = torch.from_numpy(
            np.concatenate([ex.cell_labels.reshape(-1, *ex.cell_labels.shape[2:]) for ex in examples])
        )
        targets = targets.to(device).float()  # [sum C*T, N, K]
        auxiliary = F.binary_cross_entropy_with_logits(aux_heads.cells(tokens).float(), targets)
        if all(ex.risk_boxes is not None for ex in examples):
            boxes = (
                torch.from_numpy(np.concatenate([ex.risk_boxes.reshape(-1, 4) for ex in examples]))
                .to(device)
                .float()
            )
            box = risk_box_loss(aux_heads.box, tokens, targets[..., -1] > 0, boxes)
    total = language if auxiliary is None else language + auxiliary
    return Losses(total, language, auxiliary, box, int(answer.sum()), trace, logits[answer])


def risk_box_loss(
    head: torch.nn.Module, tokens: torch.Tensor, on_risk: torch.Tensor, boxes: torch.Tensor
) -> torch.Tensor:
    """tokens [F, N, D], on_risk [F, N] (token's cell overlaps the risk object), boxes [F, 4] (NaN:
    no risk object) -> smooth L1 between each risk token's regressed box and its frame's box;
    zero when no token is on a risk object."""
    on_risk = on_risk & ~boxes.isnan().any(dim=-1, keepdim=True)
    if not bool(on_risk.any()):
        return tokens.sum() * 0.0  # keeps the graph, so the caller can always add it
    targets = boxes[:, None].expand(-1, tokens.shape[1], -1)[on_risk]  # [R, 4]
    # beta of 0.02 (about one pixel of a 64-pixel frame): L1 beyond, so a box that is off by a few
    # pixels still pulls as hard as one that is far off
    return F.smooth_l1_loss(head(tokens[on_risk]).float(), targets, beta=0.02)


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
    keep = vts_select(gated_tokens[None], gated_saliency[None], keyframes[None], grid, VtsConfig())[0]
    return keep & present[..., None]


def cosine_lr(step: int, steps: int, warmup: int, peak: float, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_checkpoint(
    folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
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
