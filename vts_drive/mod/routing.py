"""Mixture-of-depths routing of visual tokens through a decoder layer.

In a routed layer, a linear router scores every token (r_i = w . x_i). Within
each frame, only the k = ceil(keep_ratio x tokens in that frame) visual tokens
with the highest scores are computed, together with every text token; choosing
per frame keeps routing causal across frames, since a frame's tokens arrive
together. Computed visual tokens get x_i + g(r_i) (f(x)_i - x_i), with the gate
g = sigmoid, so the router sits on the gradient path. Skipped tokens keep x_i
and leave no K/V entry in this layer. Positions (RoPE) stay the original ones.

`routing` "random" and "uniform" replace the learned scores, for the ablation
(random scores; evenly spaced tokens of each frame).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vts_drive.errors import InputError

WEIGHTS_FILE = "mod_router.safetensors"
CONFIG_FILE = "mod_router.json"
ROUTINGS = ("learned", "random", "uniform")


@dataclass
class ModConfig:
    keep_ratio: float = 0.2  # share of each frame's visual tokens a routed layer computes
    layers: list[int] = field(default_factory=list)  # routed layer indices; empty: every other layer from 1
    gate: bool = True  # scale computed visual tokens' block output by sigmoid(router logit)
    routing: str = "learned"  # learned | random | uniform

    def routed_layers(self, num_layers: int) -> list[int]:
        return sorted(self.layers) if self.layers else list(range(1, num_layers, 2))


@dataclass
class RoutingTrace:
    """What a routed layer decided, for the router's auxiliary loss and for tests."""

    layer: int
    logits: torch.Tensor  # [B, L] router logits
    selected: torch.Tensor  # [B, L] bool, visual tokens computed by the layer
    visual: torch.Tensor  # [B, L] bool


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


def rank_within_frame(scores: torch.Tensor, frame_index: torch.Tensor) -> torch.Tensor:
    """Each token's rank among the tokens of its frame by descending score: [B, L] long."""
    length = scores.shape[1]
    by_score = torch.sort(scores, dim=1, descending=True, stable=True).indices
    by_frame = torch.sort(frame_index.gather(1, by_score), dim=1, stable=True).indices
    order = by_score.gather(1, by_frame)  # grouped by frame, best first within a frame
    frames_sorted = frame_index.gather(1, order)
    index = torch.arange(length, device=scores.device).expand_as(order)
    starts = torch.ones_like(frames_sorted, dtype=torch.bool)
    starts[:, 1:] = frames_sorted[:, 1:] != frames_sorted[:, :-1]
    group_start = torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values
    return torch.empty_like(order).scatter_(1, order, index - group_start)


def select_per_frame(scores: torch.Tensor, frame_index: torch.Tensor, keep_ratio: float, routing: str) -> torch.Tensor:
    """scores, frame_index [B, L] (-1 for text) -> [B, L] bool: the visual tokens each frame computes."""
    visual = frame_index >= 0
    groups = frame_index.clamp(min=0)
    frame_sizes = torch.zeros(scores.shape[0], int(groups.max()) + 1, device=scores.device)
    frame_sizes.scatter_add_(1, groups, visual.float())  # [B, F]
    size = frame_sizes.gather(1, groups)  # [B, L]: the size of each token's frame
    keep = torch.ceil(keep_ratio * size - 1e-6)  # [B, L]: k of each token's frame
    if routing == "uniform":
        # evenly spaced tokens: index i of n is chosen when floor((i+1) k / n) > floor(i k / n)
        position = -torch.arange(scores.shape[1], device=scores.device, dtype=torch.float).expand_as(scores)
        i = rank_within_frame(position, frame_index).float()
        return visual & (torch.floor((i + 1) * keep / size.clamp(min=1)) > torch.floor(i * keep / size.clamp(min=1)))
    return visual & (rank_within_frame(scores, frame_index) < keep)


def routed_layer_forward(
    decoder,
    routers: Routers,
    index: int,
    hidden: torch.Tensor,  # [B, L, D]
    positions: torch.Tensor,  # [B, L]
    valid: torch.Tensor,  # [B, L]
    cache,
    frame_index: torch.Tensor,  # [B, L], -1 for text
    trace: list[RoutingTrace] | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    config = routers.config
    visual = frame_index >= 0
    logits = routers.logits(index, hidden)  # [B, L]
    if config.routing == "random":
        scores = torch.rand(logits.shape, generator=generator, device=logits.device)
    else:
        scores = logits
    selected = select_per_frame(scores, frame_index, config.keep_ratio, config.routing)
    computed = (~visual | selected) & valid
    if trace is not None:
        trace.append(RoutingTrace(index, logits, selected, visual))

    # Gather the computed tokens to the front of each row, in their original order.
    counts = computed.sum(dim=1)  # [B]
    width = int(counts.max())
    gather_index = torch.sort((~computed).to(torch.int8), dim=1, stable=True).indices[:, :width]  # [B, M]
    in_row = torch.arange(width, device=hidden.device)[None, :] < counts[:, None]  # [B, M]
    dim = hidden.shape[-1]
    expand = gather_index.unsqueeze(-1).expand(-1, -1, dim)
    sub_hidden = hidden.gather(1, expand)  # [B, M, D]
    out = decoder.layer_forward(index, sub_hidden, positions.gather(1, gather_index), in_row, cache)
    if config.gate:
        gate = torch.where(visual.gather(1, gather_index), torch.sigmoid(logits.gather(1, gather_index)), 1.0)
        out = sub_hidden + gate.unsqueeze(-1).to(out.dtype) * (out - sub_hidden)
    out = torch.where(in_row.unsqueeze(-1), out, sub_hidden)  # padding slots write back their own value
    return hidden.scatter(1, expand, out)


def save_routers(routers: Routers, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in routers.state_dict().items()}, str(folder / WEIGHTS_FILE))
    config = asdict(routers.config) | {"layers": routers.layer_indices}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def load_routers(folder: Path, hidden_size: int, num_layers: int, device: torch.device | str = "cpu") -> Routers:
    folder = Path(folder)
    weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not weights.is_file() or not config_path.is_file():
        raise InputError(
            f"{folder} has no mixture-of-depths routers ({WEIGHTS_FILE} + {CONFIG_FILE}); "
            "train them with `vts-drive train-router`"
        )
    try:
        config = ModConfig(**json.loads(config_path.read_text()))
        routers = Routers(hidden_size, num_layers, config)
        routers.load_state_dict(load_file(str(weights)))
    except (ValueError, TypeError, RuntimeError, json.JSONDecodeError) as error:
        raise InputError(f"routers in {folder} do not fit this model: {str(error).splitlines()[0]}") from None
    return routers.to(device).eval()
