"""Training the mixture-of-depths routers of a frozen model.

Loss = language-model loss through the routed layers
     + aux_weight x BCE(router logit, whether the token is among its frame's top-k)
     + kl_weight x KL(dense model's answer distribution || routed model's)   (optional)

Which top-k the BCE term targets is `aux_target`:
- "attention" (default): the k tokens of each frame that the prompts and answers
  attend to most in that layer of the dense model. A skipped token leaves no
  K/V entry in a routed layer, so the text cannot read it there: the tokens the
  text reads are the ones to compute.
- "self": the router's own current top-k, as in the mixture-of-depths paper,
  where it only sharpens the router's choice; with a frozen base model the
  language-model loss reaches the router only through the gate of the tokens
  it already chose, and on synthdrive the routers it trains choose worse
  tokens than random ones (docs/results.md, MoD).
The BCE term also drives chosen tokens' gates towards 1 (so a computed token
gets nearly its full block output).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vts_drive.config import ModConfig
from vts_drive.errors import InputError
from vts_drive.mod.routing import (
    Routers,
    RoutingTrace,
    choose_tokens,
    routing_scores,
    save_routers,
    token_mask,
)
from vts_drive.model.decoder import Qwen2Decoder, visible_entries
from vts_drive.model.kv_cache import LayerKV
from vts_drive.model.loading import VisionLanguageModel
from vts_drive.model.vision import VisionEncoder
from vts_drive.prompt import PromptBuilder
from vts_drive.training import (
    Losses,
    TrainingExample,
    cosine_lr,
    forward_losses,
    load_checkpoint,
    save_checkpoint,
)

AUX_TARGETS = ("attention", "self")


class PromptAttentionProbe:
    """Given to a dense decoder's training forward pass (forward_losses): for each layer asked for,
    the attention each prefix entry receives from the prompt rows, averaged over heads and the
    rows' valid tokens. Prompt rows are the calls whose queries come after cached entries."""

    def __init__(self, layers: list[int], scale: float) -> None:
        self.layers = set(layers)
        self.scale = scale
        self.received: dict[int, torch.Tensor] = {}  # layer -> [R, W] over the W prefix entries

    @torch.no_grad()
    def __call__(
        self, layer: int, query: torch.Tensor, positions: torch.Tensor, segments: list[LayerKV]
    ) -> None:
        kv = segments[-1]
        prefix_width = kv.keys.shape[2] - query.shape[2]
        if layer not in self.layers or len(segments) != 1 or prefix_width <= 0:
            return
        keys = kv.keys.repeat_interleave(query.shape[1] // kv.keys.shape[1], dim=1)  # [R, H, S, d]
        visible = visible_entries(kv, positions)  # [R, L, S]
        scores = (query @ keys.transpose(-1, -2)).float() * self.scale  # [R, H, L, S]
        weights = torch.softmax(scores.masked_fill(~visible[:, None], float("-inf")), dim=-1)
        query_valid = kv.valid[:, prefix_width:].float()  # [R, L]
        per_query = weights[..., :prefix_width].mean(dim=1)  # [R, L, W]
        self.received[layer] = (per_query * query_valid[..., None]).sum(1) / query_valid.sum(
            1, keepdim=True
        ).clamp(min=1)


def attention_targets(
    trace: list[RoutingTrace], received: dict[int, torch.Tensor], prompts_per_example: list[int]
) -> list[torch.Tensor]:
    """Each routed layer's target [B, L]: the top-k visual tokens of every frame by the attention
    the example's prompt rows gave them in the dense model. The dense pass may have covered more
    examples than the routed one: its first rows and prefix entries are these examples'."""
    owner = torch.repeat_interleave(torch.arange(len(prompts_per_example)), torch.tensor(prompts_per_example))
    targets = []
    for t in trace:
        by_row = received[t.layer][: len(owner), : t.logits.shape[1]]  # [R, L]
        by_example = torch.zeros(len(prompts_per_example), by_row.shape[1], device=by_row.device).index_add_(
            0, owner.to(by_row.device), by_row
        )
        length = by_example.shape[1]
        chosen, chosen_valid = choose_tokens(
            routing_scores(by_example, t.plan, "learned", None), t.plan, length
        )
        targets.append(token_mask(chosen, chosen_valid, length))
    return targets


def membership_loss(trace: list[RoutingTrace], targets: list[torch.Tensor]) -> torch.Tensor:
    """BCE of each visual token's router logit against its target membership, over routed layers."""
    losses = [
        F.binary_cross_entropy_with_logits(t.logits[t.visual], target[t.visual].float())
        for t, target in zip(trace, targets)
        if t.visual.any()
    ]
    return torch.stack(losses).mean()


def routed_losses(
    vision: VisionEncoder,
    routed: Qwen2Decoder,
    builder: PromptBuilder,
    examples: list[TrainingExample],
    received: dict[int, torch.Tensor] | None,
    device: torch.device | str,
) -> tuple[Losses, torch.Tensor]:
    """A training forward pass through a decoder built with routers, and the routers' membership
    loss against the dense pass's attention (`received`, from a PromptAttentionProbe) or their
    own top-k (None)."""
    losses = forward_losses(vision, routed, builder, examples, device=device)
    if received is not None:
        targets = attention_targets(losses.trace, received, [len(ex.prompts) for ex in examples])
    else:
        targets = [t.selected for t in losses.trace]
    return losses, membership_loss(losses.trace, targets)


def train_routers(
    model: VisionLanguageModel,
    batches: Callable[[int], list[TrainingExample]],
    config: ModConfig,
    out: Path,
    steps: int = 300,
    lr: float = 3e-3,
    aux_weight: float = 1.0,
    kl_weight: float = 0.0,
    aux_target: str = "attention",
    seed: int = 0,
) -> Routers:
    """`batches(step)` gives the examples of a step (deterministic per step, so resuming is exact)."""
    if aux_target not in AUX_TARGETS:
        raise InputError(f"unknown router target {aux_target!r}; choose from {', '.join(AUX_TARGETS)}")
    torch.manual_seed(seed)
    hf = model.hf_model.eval().requires_grad_(False)
    text = hf.config.text_config
    routers = Routers(text.hidden_size, text.num_hidden_layers, config).to(model.device)
    decoder = Qwen2Decoder(hf.model.language_model, hf.lm_head)
    routed = Qwen2Decoder(hf.model.language_model, hf.lm_head, routers)
    vision, builder = VisionEncoder(model), PromptBuilder(model.tokenizer, decoder.embed)
    optimizer = torch.optim.AdamW(routers.parameters(), lr=lr, weight_decay=0.0)
    checkpoint = Path(out) / "router_checkpoint"
    state = load_checkpoint(checkpoint, routers, optimizer) or {"step": 0}
    progress = tqdm(
        range(state["step"], steps), desc="train routers", unit="step", initial=state["step"], total=steps
    )
    for step in progress:
        examples = batches(step)
        probe = (
            PromptAttentionProbe(routers.layer_indices, decoder.scale) if aux_target == "attention" else None
        )
        teacher = None
        if kl_weight > 0 or probe is not None:
            with torch.no_grad():
                teacher = forward_losses(
                    vision, decoder, builder, examples, device=model.device, probe=probe
                ).answer_logits
        losses, membership = routed_losses(
            vision, routed, builder, examples, probe.received if probe else None, model.device
        )
        loss = losses.language + aux_weight * membership
        if kl_weight > 0:
            kl = F.kl_div(
                F.log_softmax(losses.answer_logits, -1),
                F.log_softmax(teacher, -1),
                log_target=True,
                reduction="batchmean",
            )
            loss = loss + kl_weight * kl
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, max(1, steps // 20), lr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress.set_postfix(lm=f"{losses.language.item():.3f}", loss=f"{loss.item():.3f}")
        if (step + 1) % 50 == 0 or step + 1 == steps:
            save_checkpoint(checkpoint, routers, optimizer, {"step": step + 1})
    routers.eval()
    save_routers(routers, out)
    return routers
