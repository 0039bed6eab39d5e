"""Pipeline stages computed by exported graphs, for the onnxruntime and tensorrt backends.

Each class implements the protocol of the stage it replaces (vts_drive/backend.py:
KeyframeStage, VisionStage, LanguageStage), so Pipeline and generate() call them
as they call the torch stages; the computation is in the graphs of engines/NAME
(graphs.py). They hold no torch weights: what they need beside the graphs is the
checkpoint's spec (configuration, image statistics) and the run's settings, so a
vehicle loads the model once, as engines.

A graph is anything called with a dict of torch tensors that returns one:
OnnxRuntimeGraph (onnxruntime_runtime.py) or TensorRTEngine (tensorrt_runtime.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import PretrainedConfig
from vts_drive.engines.graphs import PLAN_INPUTS, flatten_kv, kv_names, router_settings, unflatten_kv
from vts_drive.engines.manifest import Manifest, read_manifest, verify_model

from vts_drive.config import KeyframeConfig, PipelineConfig
from vts_drive.errors import InputError
from vts_drive.keyframe.scorer import prepare_frames
from vts_drive.mod.routing import Routers, RoutingPlan
from vts_drive.model.decoder import head_dim, routing_plan
from vts_drive.model.kv_cache import KVCache, LayerKV
from vts_drive.model.loading import ModelSpec
from vts_drive.model.vision import FramePreprocessor
from vts_drive.shapes import GenerationShapes

Graph = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class ExportedKeyframeScorer:
    """The keyframe CNN run by the keyframe_scorer graph; its settings say how frames are prepared."""

    def __init__(self, config: KeyframeConfig, graph: Graph, device: torch.device) -> None:
        self.config, self.graph, self.device = config, graph, device

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames -> [F, 3, S, S] float in [0, 1], as the torch scorer prepares them."""
        return prepare_frames(images, self.config, self.device)

    def __call__(self, frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """frames, previous [F, 3, S, S] -> keyframe logits [F]."""
        return self.graph({"frames": frames, "previous": previous})["logits"]


class ExportedVisionEncoder(FramePreprocessor):
    """Vision tower, projector, pooling and saliency run by the vision graph; the preprocessing
    is the torch stage's own (FramePreprocessor)."""

    def __init__(self, model: ModelSpec, graph: Graph) -> None:
        super().__init__(model)
        self.graph = graph

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels [F, 3, S, S] -> tokens [F, N, D] and saliency [F, N]."""
        outputs = self.graph({"pixels": pixels})
        return outputs["tokens"], outputs["saliency"]


class ExportedDecoder:
    """The LLM run by llm_embed, llm_prefill, llm_decode and llm_head.

    A call picks the graph from the cache it is given: a single-row cache, empty
    or holding the system turn's entries (HeadCache), gets prefix tokens
    (llm_prefill, routed when the export has MoD, its entries the graph's past);
    a cache branched off a prefix gets the rows' new tokens (llm_decode).
    `text_config` gives the cache's shapes; `keep_ratio` is the exported routed
    layers' r (None: llm_prefill does not route).
    """

    def __init__(
        self, text_config: PretrainedConfig, graphs: Mapping[str, Graph], keep_ratio: float | None
    ) -> None:
        self.graphs = graphs
        self.keep_ratio = keep_ratio
        self.num_layers: int = text_config.num_hidden_layers
        self.num_kv_heads: int = text_config.num_key_value_heads
        self.head_dim = head_dim(text_config)
        self.hidden_size: int = text_config.hidden_size

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids [...] -> embeds [..., D]."""
        embeds = self.graphs["llm_embed"]({"token_ids": token_ids.reshape(-1)})["embeds"]
        return embeds.view(*token_ids.shape, -1)

    def routing_plan(self, frame_index: torch.Tensor) -> RoutingPlan | None:
        """frame_index [B, L] (-1 for text) -> the plan the routed llm_prefill follows."""
        return routing_plan(frame_index, self.keep_ratio)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., D] -> float32 logits [..., V]."""
        logits = self.graphs["llm_head"]({"hidden": hidden.reshape(-1, hidden.shape[-1])})["logits"]
        return logits.view(*hidden.shape[:-1], -1)

    def __call__(
        self,
        embeds: torch.Tensor,  # [B, L, D]
        positions: torch.Tensor,  # [B, L] long
        valid: torch.Tensor | None = None,  # [B, L] bool
        cache: KVCache | None = None,
        plan: RoutingPlan | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, L, D]; the new tokens' K/V go into `cache`."""
        if cache is None:
            raise ValueError("exported graphs run inference on a KV cache: give one")
        if valid is None:
            valid = torch.ones(positions.shape, dtype=torch.bool, device=positions.device)
        inputs = {"embeds": embeds, "positions": positions, "valid": valid}
        batch = embeds.shape[0]
        past = [cache.layers[layer] or self.empty_kv(batch, embeds) for layer in range(self.num_layers)]
        prefix = [kv for kv in cache.shared if kv is not None]
        if not prefix:
            if self.keep_ratio is not None:
                # a prefix without visual tokens gets a plan with none, so the routed layers compute everything
                if plan is None:
                    plan = RoutingPlan.from_frame_index(torch.full_like(positions, -1), self.keep_ratio)
                inputs |= {name: getattr(plan, name) for name in PLAN_INPUTS}
            inputs |= dict(zip(kv_names("past", self.num_layers), flatten_kv(past)))
            outputs = self.graphs["llm_prefill"](inputs)
        else:
            prefix = [
                replace(kv, valid=kv.valid.expand(batch, -1)) for kv in prefix
            ]  # the graph takes a mask per row
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
    model: ModelSpec, config: PipelineConfig
) -> tuple[ExportedVisionEncoder, ExportedDecoder, ExportedKeyframeScorer | None, GenerationShapes]:
    """The pipeline's vision encoder, decoder and keyframe scorer (modes with VTS), on the graphs
    exported to config.engines, from the checkpoint's spec and the run's settings alone, and the
    largest sizes the graphs were exported for (what a window may need).

    Refuses engines exported from another checkpoint, for another mode or dtype, or with
    other routers than this run's, saying to export again.
    """
    folder = Path(config.engines)
    manifest = read_manifest(folder)
    limits = check_export(manifest, folder, model, config)
    if config.backend == "onnxruntime":
        from vts_drive.engines.onnxruntime_runtime import load_sessions as load_graphs
    else:
        from vts_drive.engines.tensorrt_runtime import load_engines as load_graphs
    graphs = load_graphs(folder, model.device)
    keep_ratio = config.mod.keep_ratio if config.layer_skipping else None
    decoder = ExportedDecoder(model.config.text_config, graphs, keep_ratio)
    scorer = None
    if config.token_reduction == "vts":
        scorer = ExportedKeyframeScorer(config.keyframe, graphs["keyframe_scorer"], model.device)
    return ExportedVisionEncoder(model, graphs["vision"]), decoder, scorer, limits


def routing_settings(model: ModelSpec, config: PipelineConfig) -> dict | None:
    """What the run's routers bake into a routed llm_prefill (graphs.router_settings), from the
    settings alone: the routers are built on the meta device, so no weight is read or held."""
    if not config.layer_skipping:
        return None
    text_config = model.config.text_config
    with torch.device("meta"):
        routers = Routers(text_config.hidden_size, text_config.num_hidden_layers, config.mod)
    return router_settings(routers)


def check_export(
    manifest: Manifest, folder: Path, model: ModelSpec, config: PipelineConfig
) -> GenerationShapes:
    """The export's largest sizes, if its graphs are this run's; else InputError saying to export again."""
    mode = config.mode
    export = f"export again with `vts-drive export --model {model.name} --mode {mode} --out {folder}`"
    verify_model(manifest, model.folder)
    try:
        limits = GenerationShapes(**manifest.settings["limits"])
    except (KeyError, TypeError):
        raise InputError(
            f"engines {folder} were exported by an older vts_drive (no sizes in its manifest, "
            f"llm_prefill without past entries): {export}"
        ) from None
    if manifest.mode != mode:
        raise InputError(f"engines {folder} were exported for mode {manifest.mode}, not {mode}: {export}")
    dtype = str(model.dtype).removeprefix("torch.")
    if manifest.dtype != dtype:
        raise InputError(
            f"engines {folder} were exported in {manifest.dtype}, the model is loaded in {dtype}: "
            f"load it in {manifest.dtype} or {export}"
        )
    routers = routing_settings(model, config)
    if manifest.settings.get("routers") != routers:
        raise InputError(
            f"engines {folder} were exported with routers {manifest.settings.get('routers')}, this run "
            f"has {routers}: {export}"
        )
    expected = {"vision", "llm_embed", "llm_prefill", "llm_decode", "llm_head"}
    if config.token_reduction == "vts":
        expected.add("keyframe_scorer")
    missing = sorted(expected - {graph.name for graph in manifest.graphs})
    if missing:
        raise InputError(
            f"engines {folder} lack the graphs {', '.join(missing)} (an interrupted export?): {export}"
        )
    return limits
