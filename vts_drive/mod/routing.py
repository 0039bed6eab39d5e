"""Mixture-of-depths routing of visual tokens through a decoder layer.

In a routed layer, a linear router scores every token (r_i = w . x_i). Within
each frame, only the k = ceil(keep_ratio x tokens in that frame) visual tokens
with the highest scores are computed, together with every text token; choosing
per frame keeps routing causal across frames, since a frame's tokens arrive
together. Computed visual tokens get x_i + g(r_i) (f(x)_i - x_i), with the gate
g = sigmoid, so the router sits on the gradient path. Skipped tokens keep x_i
and leave no K/V entry in this layer. Positions (RoPE) stay the original ones.

The work is laid out so every shape follows from input shapes alone (what ONNX
and TensorRT need): a RoutingPlan, built on the host once per sequence, lists
the text tokens, each frame's token slots (padded to the longest frame) and,
for each visual token a layer computes, its place among its frame's ranked
slots (frame f's k best: f x K + 0 .. k-1). A routed layer ranks each frame's
slots by top-K (K fixed by the slot count), picks exactly those places, runs
the block on text + picked tokens in sequence order, and scatters the results
back: a sequence computes text + sum of each frame's k tokens, no padding slot,
and leaves as many K/V entries. Padding (rows of a training batch) reads and
writes a junk row appended after the sequence.

`routing` "random" and "uniform" replace the learned scores, for the ablation
(random scores; evenly spaced tokens of each frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file
from torch import nn

from vts_drive.config import ModConfig, section, write_settings
from vts_drive.errors import InputError
from vts_drive.model.kv_cache import KVCache
from vts_drive.model.weights import read_weights

if TYPE_CHECKING:
    from vts_drive.model.decoder import AttentionProbe, DecoderLayer

WEIGHTS_FILE = "mod_router.safetensors"


@dataclass
class RoutingTrace:
    """What a routed layer decided, for the router's auxiliary loss and for tests."""

    layer: int
    logits: torch.Tensor  # [B, L] router logits
    selected: torch.Tensor  # [B, L] bool, visual tokens computed by the layer
    visual: torch.Tensor  # [B, L] bool
    plan: RoutingPlan


class Routers(nn.Module):
    """One linear router per routed layer."""

    def __init__(self, hidden_size: int, num_layers: int, config: ModConfig) -> None:
        super().__init__()
        self.config = config
        self.layer_indices = config.routed_layers(num_layers)
        if any(not 0 <= i < num_layers for i in self.layer_indices):
            raise InputError(f"routed layers {self.layer_indices} out of range for a {num_layers}-layer LLM")
        self.routers = nn.ModuleDict({str(i): nn.Linear(hidden_size, 1) for i in self.layer_indices})
        for router in self.routers.values():
            nn.init.normal_(router.weight, std=hidden_size**-0.5)
            nn.init.zeros_(router.bias)

    def routes(self, layer: int) -> bool:
        return str(layer) in self.routers

    def logits(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, L, D] -> router logits [B, L]."""
        return self.routers[str(layer)](hidden).squeeze(-1).float()


@dataclass
class RoutingPlan:
    """Where the text tokens and each frame's visual tokens sit in a batch of sequences.
    Index L (the sequence length) is the junk row that padding points to."""

    text_index: torch.Tensor  # [B, Lt] long
    text_valid: torch.Tensor  # [B, Lt] bool
    frame_slots: torch.Tensor  # [B, F, N] long: sequence index of each frame's n-th token
    slot_valid: torch.Tensor  # [B, F, N] bool
    keep_slots: torch.Tensor  # [B, Kv] long: each computed visual token's rank slot f x K + r; F x K pads
    keep_ratio: float

    @classmethod
    def from_frame_index(cls, frame_index: torch.Tensor, keep_ratio: float) -> RoutingPlan:
        """frame_index [B, L] (visual token's frame, -1 for text) -> plan. Host-side bookkeeping."""
        batch, length = frame_index.shape
        device = frame_index.device
        rows_text, rows_frames = [], []
        for row in frame_index.tolist():
            rows_text.append([i for i, f in enumerate(row) if f < 0])
            frames: dict[int, list[int]] = {}
            for i, f in enumerate(row):
                if f >= 0:
                    frames.setdefault(f, []).append(i)
            rows_frames.append(list(frames.values()))
        text_width = max(1, max(len(t) for t in rows_text))
        frame_count = max(1, max(len(f) for f in rows_frames))
        slot_count = max([1] + [len(slots) for frames in rows_frames for slots in frames])
        top_k = ranked_slots(keep_ratio, slot_count)
        text_index = torch.full((batch, text_width), length, dtype=torch.long)
        frame_slots = torch.full((batch, frame_count, slot_count), length, dtype=torch.long)
        keeps = [  # frame f's k best ranked slots: f x K + 0 .. k-1
            [
                f * top_k + rank
                for f, slots in enumerate(frames)
                for rank in range(kept_tokens(keep_ratio, len(slots)))
            ]
            for frames in rows_frames
        ]
        # none in a text-only batch (the system turn): a padding slot would leave an entry in the cache
        keep_width = max(len(keep) for keep in keeps)
        keep_slots = torch.full((batch, keep_width), frame_count * top_k, dtype=torch.long)
        for b, (text, row_frames, keep) in enumerate(zip(rows_text, rows_frames, keeps)):
            text_index[b, : len(text)] = torch.tensor(text, dtype=torch.long)
            keep_slots[b, : len(keep)] = torch.tensor(keep, dtype=torch.long)
            for f, slots in enumerate(row_frames):
                frame_slots[b, f, : len(slots)] = torch.tensor(slots, dtype=torch.long)
        return cls.of(
            text_index.to(device), frame_slots.to(device), keep_slots.to(device), keep_ratio, length
        )

    @classmethod
    def of(
        cls,
        text_index: torch.Tensor,
        frame_slots: torch.Tensor,
        keep_slots: torch.Tensor,
        keep_ratio: float,
        length: int,
    ) -> RoutingPlan:
        """The plan of the tensors a routed graph takes (a sequence of `length` tokens)."""
        return cls(text_index, text_index < length, frame_slots, frame_slots < length, keep_slots, keep_ratio)

    def visual_mask(self, length: int) -> torch.Tensor:
        """[B, L] bool: which sequence positions hold visual tokens."""
        return token_mask(self.frame_slots, self.slot_valid, length)

    @property
    def top_k(self) -> int:
        """Slots ranked per frame: k of a full frame, from the slot count alone (a shape, not data)."""
        return ranked_slots(self.keep_ratio, self.frame_slots.shape[-1])

    @property
    def keep_valid(self) -> torch.Tensor:
        """[B, Kv] bool: which entries of keep_slots are computed tokens, not padding."""
        return self.keep_slots < self.frame_slots.shape[1] * self.top_k

    @property
    def frame_keep(self) -> torch.Tensor:
        """[B, F] long: how many tokens each frame computes (k; padding counts for no frame)."""
        frames = torch.arange(self.frame_slots.shape[1], device=self.keep_slots.device)
        return (self.keep_slots[:, :, None] // self.top_k == frames).sum(dim=1)


def kept_tokens(keep_ratio: float, tokens: int) -> int:
    """k: how many of a frame's `tokens` visual tokens a routed layer computes."""
    return math.ceil(keep_ratio * tokens - 1e-9)


def ranked_slots(keep_ratio: float, slots: int) -> int:
    """K: how many of each frame's `slots` slots are ranked, the k of the largest frame (at least 1)."""
    return max(1, kept_tokens(keep_ratio, slots))


def routing_scores(
    logits: torch.Tensor, plan: RoutingPlan, routing: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Router logits [B, L] -> each frame slot's score [B, F, N]; empty slots score -inf."""
    batch, frames, slots = plan.frame_slots.shape
    if routing == "learned":
        padded = torch.cat([logits, logits.new_zeros(batch, 1)], dim=1)  # junk row L
        scores = padded.gather(1, plan.frame_slots.view(batch, -1)).view(batch, frames, slots)
    elif routing == "random":
        scores = torch.rand((batch, frames, slots), generator=generator, device=logits.device)
    else:  # uniform: the k of a frame's n slots at which floor(j k / n) steps up, earliest first
        size = plan.slot_valid.sum(dim=-1, keepdim=True).clamp(min=1).float()  # [B, F, 1]
        keep = plan.frame_keep.unsqueeze(-1).float()
        j = torch.arange(slots, device=logits.device, dtype=torch.float)
        steps_up = torch.floor((j + 1) * keep / size) > torch.floor(j * keep / size)
        scores = steps_up.float() - j / (slots + 1)
    return scores.masked_fill(~plan.slot_valid, -math.inf)


class RoutedLayer(nn.Module):
    """A decoder layer behind its router: given a plan, it computes the text tokens and each
    frame's chosen visual tokens, and every other token rides the residual stream past it."""

    def __init__(self, block: DecoderLayer, routers: Routers, generator: torch.Generator | None) -> None:
        super().__init__()
        self.block, self.routers = block, routers
        self.index = block.index
        self.generator = generator  # random routing's draws (seeded, so an ablation reruns alike)

    def forward(
        self,
        hidden: torch.Tensor,  # [B, L, D]
        positions: torch.Tensor,  # [B, L]
        valid: torch.Tensor,  # [B, L]
        cache: KVCache | None,
        plan: RoutingPlan | None = None,  # None: every token is computed (decoding, text-only calls)
        trace: list[RoutingTrace] | None = None,
        probe: AttentionProbe | None = None,
    ) -> torch.Tensor:
        if plan is None:
            return self.block(hidden, positions, valid, cache, probe)
        config = self.routers.config
        batch, length, dim = hidden.shape
        logits = self.routers.logits(self.index, hidden)  # [B, L]
        scores = routing_scores(logits, plan, config.routing, self.generator)
        chosen, chosen_valid = choose_tokens(scores, plan, length)  # [B, Kv]

        # Computed tokens in sequence order: text and chosen visual tokens as a mask, compacted by a
        # running count into M = Lt + Kv indices (the plan's shapes alone); in a sequence of its own
        # (batch 1) with text and visual tokens every one of them is a token computed.
        selected = token_mask(chosen, chosen_valid, length)  # [B, L]
        computed_mask = (selected | ~plan.visual_mask(length)) & valid  # [B, L]
        width = plan.text_index.shape[1] + chosen.shape[1]
        slot = (
            torch.cumsum(computed_mask.to(torch.int32), dim=1).long() - 1
        )  # [B, L] place in the compact list
        target = torch.where(computed_mask, slot, torch.full_like(slot, width))
        sequence = torch.arange(length, device=hidden.device).expand(batch, -1)
        computed = torch.full((batch, width + 1), length, dtype=torch.long, device=hidden.device)
        computed = computed.scatter(1, target, sequence)[
            :, :width
        ]  # [B, M] sequence indices, junk row L past the end
        computed_valid = torch.arange(width, device=hidden.device)[None, :] < computed_mask.sum(
            dim=1, keepdim=True
        )
        padded_visual = torch.cat([plan.visual_mask(length), valid.new_zeros(batch, 1)], dim=1)
        is_visual = padded_visual.gather(1, computed)

        padded_hidden = torch.cat([hidden, hidden.new_zeros(batch, 1, dim)], dim=1)  # [B, L+1, D]
        padded_positions = torch.cat([positions, positions.new_zeros(batch, 1)], dim=1)
        sub_hidden = padded_hidden.gather(1, computed.unsqueeze(-1).expand(-1, -1, dim))  # [B, M, D]
        out = self.block(sub_hidden, padded_positions.gather(1, computed), computed_valid, cache, probe)
        if config.gate:
            padded_logits = torch.cat([logits, logits.new_zeros(batch, 1)], dim=1)
            ones = torch.ones_like(computed, dtype=logits.dtype)
            gate = torch.where(is_visual, torch.sigmoid(padded_logits.gather(1, computed)), ones)
            out = sub_hidden + gate.unsqueeze(-1).to(out.dtype) * (out - sub_hidden)
        target = torch.where(
            computed_valid, computed, torch.full_like(computed, length)
        )  # not computed -> junk row
        updated = padded_hidden.scatter(1, target.unsqueeze(-1).expand(-1, -1, dim), out)
        if trace is not None:
            trace.append(RoutingTrace(self.index, logits, selected, plan.visual_mask(length), plan))
        return updated[:, :length]


def choose_tokens(scores: torch.Tensor, plan: RoutingPlan, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot scores [B, F, N] of a sequence of `length` tokens -> the sequence index of every token
    computed [B, Kv] (each frame's k best, frame by frame; padding: the junk row L) and which of
    them are tokens, not padding [B, Kv]."""
    batch = scores.shape[0]
    top = scores.topk(plan.top_k, dim=-1, sorted=True).indices  # [B, F, K] slots, best first
    ranked = plan.frame_slots.gather(2, top).view(batch, -1)  # [B, F*K] sequence indices
    valid = plan.keep_valid  # [B, Kv]
    places = torch.where(valid, plan.keep_slots, 0)  # padding (F x K) reads slot 0, then becomes L
    return torch.where(valid, ranked.gather(1, places), length), valid


def token_mask(indices: torch.Tensor, index_valid: torch.Tensor, length: int) -> torch.Tensor:
    """Valid sequence indices [B, ...] -> a [B, L] bool mask over the sequence."""
    batch = indices.shape[0]
    mask = torch.zeros(batch, length + 1, dtype=torch.bool, device=indices.device)
    mask.scatter_(1, torch.where(index_valid, indices, length).view(batch, -1), True)
    return mask[:, :length]


def save_routers(routers: Routers, folder: Path) -> None:
    """The weights, and the settings as the `mod` section of the folder's settings file."""
    folder = Path(folder)
    config = ModConfig(
        routers.config.keep_ratio, routers.layer_indices, routers.config.gate, routers.config.routing
    )
    write_settings(folder, section(config))
    save_file({k: v.contiguous() for k, v in routers.state_dict().items()}, str(folder / WEIGHTS_FILE))


def load_routers(
    folder: Path | str,
    config: ModConfig,
    hidden_size: int,
    num_layers: int,
    device: torch.device | str = "cpu",
) -> Routers:
    """The routers in `folder`, built as `config` says (the `mod` settings resolved for the run)."""
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(
            f"{folder} has no mixture-of-depths routers ({WEIGHTS_FILE}); train them with `vts-drive train-router`"
        )
    try:
        routers = Routers(hidden_size, num_layers, config)
        routers.load_state_dict(read_weights(weights))
    except RuntimeError as error:
        raise InputError(f"routers in {folder} do not fit this model: {str(error).splitlines()[0]}") from None
    return routers.to(device).eval()
