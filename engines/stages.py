"""Pipeline stages computed by exported graphs, for the onnxruntime and tensorrt backends.

Each class keeps the interface of the torch stage it replaces (KeyframeScorer,
VisionEncoder, Qwen2Decoder), so Pipeline and generate() call them unchanged;
only the computation moves into the graphs of engines/NAME (graphs.py). The
torch modules stay as the source of configuration, preprocessing and shapes.

A graph is anything called with a dict of torch tensors that returns one:
OnnxRuntimeGraph (onnxruntime_runtime.py) or TensorRTEngine (tensorrt_runtime.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from vts_drive.engines.graphs import PLAN_INPUTS, flatten_kv, kv_names, router_settings, unflatten_kv
from vts_drive.engines.manifest import Manifest, read_manifest, verify_model

from vts_drive.errors import InputError
from vts_drive.keyframe.scorer import KeyframeScorer
from vts_drive.mod.routing import Routers, RoutingPlan, RoutingTrace
from vts_drive.model.decoder import AttentionProbe, Qwen2Decoder
from vts_drive.model.kv_cache import KVCache, LayerKV
from vts_drive.model.loading import VisionLanguageModel
from vts_drive.model.vision import VisionEncoder

Graph = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class ExportedKeyframeScorer(nn.Module):
    """The keyframe CNN run by the keyframe_scorer graph."""

    def __init__(self, scorer: KeyframeScorer, graph: Graph) -> None:
        super().__init__()
        self.scorer = scorer  # configuration, preprocessing and the FLOP count; its weights are in the graph
        self.config = scorer.config
        self.graph = graph

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        return self.scorer.prepare(images)

    def forward(self, frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return self.graph({"frames": frames, "previous": previous})["logits"]


class ExportedVisionEncoder(VisionEncoder):
    """Vision tower, projector, pooling and saliency run by the vision graph."""

    def __init__(self, model: VisionLanguageModel, graph: Graph) -> None:
        super().__init__(model)
        self.graph = graph

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.graph({"pixels": pixels})
        return outputs["tokens"], outputs["saliency"]


class ExportedDecoder(Qwen2Decoder):
    """The LLM run by llm_embed, llm_prefill, llm_decode and llm_head.

    forward picks the graph from the cache it is given: an empty cache is the
    window's prefix (llm_prefill, routed when the export has MoD); a cache that
    holds entries gets new tokens (llm_decode), over its shared prefix when it
    was branched, as generate() does, or over its own entries otherwise.
    """

    def __init__(
        self, language_model: nn.Module, lm_head: nn.Linear, graphs: dict[str, Graph], routers: Routers | None
    ) -> None:
        super().__init__(language_model, lm_head, routers)
        self.graphs = graphs
        # the exported routed layers' r (check_export found it the routers'); None: llm_prefill does not route
        self.keep_ratio = routers.config.keep_ratio if routers is not None else None

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        embeds = self.graphs["llm_embed"]({"token_ids": token_ids.reshape(-1)})["embeds"]
        return embeds.view(*token_ids.shape, -1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.graphs["llm_head"]({"hidden": hidden.reshape(-1, hidden.shape[-1])})["logits"]
        return logits.view(*hidden.shape[:-1], -1)

    def forward(
        self,
        embeds: torch.Tensor,  # [B, L, D]
        positions: torch.Tensor,  # [B, L] long
        valid: torch.Tensor | None = None,  # [B, L] bool
        cache: KVCache | None = None,
        plan: RoutingPlan | None = None,
        trace: list[RoutingTrace] | None = None,
        probe: AttentionProbe | None = None,
    ) -> torch.Tensor:
        if cache is None or trace is not None or probe is not None:
            raise ValueError("exported graphs run inference on a KV cache, without routing traces or probes")
        if valid is None:
            valid = torch.ones(positions.shape, dtype=torch.bool, device=positions.device)
        inputs = {"embeds": embeds, "positions": positions, "valid": valid}
        held = [kv for kv in cache.layers + cache.shared if kv is not None]
        if not held:
            if self.keep_ratio is not None:
                # a prefix without visual tokens gets a plan with none, so the routed layers compute everything
                if plan is None:
                    plan = RoutingPlan.from_frame_index(torch.full_like(positions, -1), self.keep_ratio)
                inputs |= {name: getattr(plan, name) for name in PLAN_INPUTS}
            outputs = self.graphs["llm_prefill"](inputs)
        else:
            batch = embeds.shape[0]
            prefix = [cache.shared[layer] or self.empty_kv(1, embeds) for layer in range(self.num_layers)]
            prefix = [
                replace(kv, valid=kv.valid.expand(batch, -1)) for kv in prefix
            ]  # the graph takes a mask per row
            past = [cache.layers[layer] or self.empty_kv(batch, embeds) for layer in range(self.num_layers)]
            inputs |= dict(zip(kv_names("prefix", self.num_layers), flatten_kv(prefix)))
            inputs |= dict(zip(kv_names("past", self.num_layers), flatten_kv(past)))
            outputs = self.graphs["llm_decode"](inputs)
        present = [outputs[name] for name in kv_names("present", self.num_layers)]
        cache.layers = unflatten_kv(present)
        return outputs["hidden"]

    def empty_kv(self, batch: int, like: torch.Tensor) -> LayerKV:
        """A segment with no entries, for the graph inputs of a cache part that holds nothing yet."""
        keys = like.new_zeros(batch, self.num_kv_heads, 0, self.head_dim)
        positions = torch.zeros(batch, 0, dtype=torch.long, device=like.device)
        return LayerKV(keys, keys, positions, positions.bool())


def load_exported_stages(
    model: VisionLanguageModel,
    mode: str,
    backend: str,
    folder: Path,
    keyframe_scorer: KeyframeScorer | None,
    routers: Routers | None,
) -> tuple[ExportedVisionEncoder, ExportedDecoder, ExportedKeyframeScorer | None]:
    """The pipeline's vision encoder, decoder and keyframe scorer, on the graphs exported to folder.

    Refuses engines exported from another checkpoint, for another mode or dtype, or with
    other routers than this run's, saying to export again.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    check_export(manifest, folder, model, mode, keyframe_scorer, routers)
    if backend == "onnxruntime":
        from vts_drive.engines.onnxruntime_runtime import load_sessions as load_graphs
    else:
        from vts_drive.engines.tensorrt_runtime import load_engines as load_graphs
    graphs = load_graphs(folder, model.device)
    language_model, lm_head = model.hf_model.model.language_model, model.hf_model.lm_head
    decoder = ExportedDecoder(language_model, lm_head, graphs, routers)
    scorer = ExportedKeyframeScorer(keyframe_scorer, graphs["keyframe_scorer"]) if keyframe_scorer else None
    return ExportedVisionEncoder(model, graphs["vision"]), decoder, scorer


def check_export(
    manifest: Manifest,
    folder: Path,
    model: VisionLanguageModel,
    mode: str,
    scorer: KeyframeScorer | None,
    routers: Routers | None,
) -> None:
    export = f"export again with `vts-drive export --model {model.name} --mode {mode} --out {folder}`"
    verify_model(manifest, model.folder)
    if manifest.mode != mode:
        raise InputError(f"engines {folder} were exported for mode {manifest.mode}, not {mode}: {export}")
    dtype = str(model.dtype).removeprefix("torch.")
    if manifest.dtype != dtype:
        raise InputError(
            f"engines {folder} were exported in {manifest.dtype}, the model is loaded in {dtype}: "
            f"load it in {manifest.dtype} or {export}"
        )
    if manifest.settings.get("routers") != router_settings(routers):
        raise InputError(
            f"engines {folder} were exported with routers {manifest.settings.get('routers')}, this run "
            f"has {router_settings(routers)}: {export}"
        )
    expected = {"vision", "llm_embed", "llm_prefill", "llm_decode", "llm_head"}
    if scorer is not None:
        expected.add("keyframe_scorer")
    missing = sorted(expected - {graph.name for graph in manifest.graphs})
    if missing:
        raise InputError(
            f"engines {folder} lack the graphs {', '.join(missing)} (an interrupted export?): {export}"
        )
