"""Training the mixture-of-depths routers of a frozen model.

Loss = language-model loss through the routed layers
     + aux_weight x BCE(router logit, whether the token made its frame's top-k)
     + kl_weight x KL(dense model's answer distribution || routed model's)   (optional)
The BCE term makes selected tokens' gates approach 1 (so a computed token gets
nearly its full block output) and separates chosen from skipped tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vts_drive.mod.routing import ModConfig, Routers, RoutingTrace, save_routers
from vts_drive.model.decoder import Qwen2Decoder
from vts_drive.model.loading import VisionLanguageModel
from vts_drive.model.vision import VisionEncoder
from vts_drive.prompt import PromptBuilder
from vts_drive.training import TrainingExample, cosine_lr, forward_losses, load_checkpoint, save_checkpoint


def membership_loss(trace: list[RoutingTrace]) -> torch.Tensor:
    """BCE of each visual token's router logit against its top-k membership, over routed layers."""
    losses = [
        F.binary_cross_entropy_with_logits(t.logits[t.visual], t.selected[t.visual].float()) for t in trace if t.visual.any()
    ]
    return torch.stack(losses).mean()


def train_routers(
    model: VisionLanguageModel,
    batches: Callable[[int], list[TrainingExample]],
    config: ModConfig,
    out: Path,
    steps: int = 300,
    lr: float = 3e-3,
    aux_weight: float = 1.0,
    kl_weight: float = 0.0,
    seed: int = 0,
) -> Routers:
    """`batches(step)` gives the examples of a step (deterministic per step, so resuming is exact)."""
    torch.manual_seed(seed)
    hf = model.hf_model.eval().requires_grad_(False)
    text = hf.config.text_config
    routers = Routers(text.hidden_size, text.num_hidden_layers, config).to(model.device)
    decoder = Qwen2Decoder(hf.model.language_model, hf.lm_head)
    vision, builder = VisionEncoder(model), PromptBuilder(model.tokenizer, decoder.embed)
    optimizer = torch.optim.AdamW(routers.parameters(), lr=lr, weight_decay=0.0)
    checkpoint = Path(out) / "router_checkpoint"
    state = load_checkpoint(checkpoint, routers, optimizer) or {"step": 0}
    progress = tqdm(range(state["step"], steps), desc="train routers", unit="step", initial=state["step"], total=steps)
    for step in progress:
        examples = batches(step)
        teacher = None
        if kl_weight > 0:
            decoder.routers = None
            with torch.no_grad():
                teacher = forward_losses(vision, decoder, builder, examples, device=model.device).answer_logits
        decoder.routers = routers
        losses = forward_losses(vision, decoder, builder, examples, device=model.device)
        loss = losses.language + aux_weight * membership_loss(losses.trace)
        if teacher is not None:
            kl = F.kl_div(F.log_softmax(losses.answer_logits, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
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
