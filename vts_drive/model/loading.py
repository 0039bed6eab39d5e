"""Load a LlavaOnevision checkpoint (local folder or hub id) with clear errors.

Weights are read from safetensors only: nothing is unpickled from a model folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoTokenizer,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerBase,
)

from vts_drive.errors import InputError
from vts_drive.model.names import shipped_model_path
from vts_drive.model.weights import check_weight_file, read_tensor

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt", "tf_model.h5")
MODEL_WEIGHTS = "model.safetensors"
MODEL_WEIGHTS_INDEX = "model.safetensors.index.json"  # a sharded checkpoint's map: tensor -> shard file
# settings the vision tower, the pipeline's preprocessing and the context bound read: positive integers
POSITIVE_SETTINGS = (
    "vision_config.image_size",
    "vision_config.patch_size",
    "vision_config.num_hidden_layers",
    "text_config.max_position_embeddings",
)
FEATURE_STRATEGIES = ("default", "full")  # vision_feature_select_strategy: drop SigLIP's first token or not
# files only a transformers processor writes (the hub's llava-hf checkpoints have them; the project's
# own checkpoints, written by save_small_model, never do): their chat template prompts the checkpoint
PROCESSOR_FILES = ("processor_config.json", "chat_template.json")
# image processor resample codes (PIL's) the pipeline resizes with; a folder naming none: the project's own
RESAMPLE = {3: "bicubic"}
IMAGE_NEWLINE = ("model.image_newline", "image_newline")  # its name in transformers 5's files, in older ones
MISSING_NAMES_SHOWN = 20

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


@dataclass
class ModelSpec:
    """A checkpoint without its weights: what the pipeline needs around them (tokenizer,
    configuration, image statistics). The onnxruntime and tensorrt backends run on this alone,
    their weights being in the exported graphs."""

    name: str
    folder: Path  # the checkpoint's folder (for a hub id: its local snapshot)
    config: LlavaOnevisionConfig
    tokenizer: PreTrainedTokenizerBase
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    device: torch.device
    dtype: torch.dtype
    # how frames are resized: "area" (cv2, the project's checkpoints) or "bicubic" (PIL, the processor's)
    resample: str = dataclasses.field(default="area", kw_only=True)

    @property
    def max_positions(self) -> int:
        """Positions the LLM was built for (max_position_embeddings): a window's prompt and its
        answers must fit in them."""
        return self.config.text_config.max_position_embeddings


@dataclass
class VisionLanguageModel(ModelSpec):
    """A loaded checkpoint: its spec and its weights (what the torch backend runs)."""

    hf_model: LlavaOnevisionForConditionalGeneration

    @classmethod
    def of(
        cls,
        hf_model: LlavaOnevisionForConditionalGeneration,
        name: str,
        folder: Path,
        tokenizer: PreTrainedTokenizerBase,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        resample: str = "area",
    ) -> VisionLanguageModel:
        """The model around `hf_model`, whose weights set its configuration, device and dtype."""
        config, device, dtype = hf_model.config, hf_model.device, hf_model.dtype
        return cls(
            name, folder, config, tokenizer, image_mean, image_std, device, dtype, hf_model, resample=resample
        )


def resolve_dtype(device: str, dtype: str | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "float16": torch.float16,
            "fp16": torch.float16,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
        }[dtype]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r}: use fp32, fp16 or bf16") from None


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} requested but CUDA is not available on this machine (use --device cpu)"
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise InputError(f"unknown device {device!r}: use cpu or cuda")


def check_checkpoint_folder(folder: Path) -> None:
    """Fail early, naming the file, for folders that are not LlavaOnevision safetensors checkpoints."""
    if not folder.is_dir():
        raise InputError(f"model folder {folder} does not exist")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InputError(f"{folder} is not a model folder: it has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{config_path} is not readable JSON: {error}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "llava_onevision":
        architectures = ", ".join(config.get("architectures") or []) if isinstance(config, dict) else ""
        raise InputError(
            f"{folder} holds a {model_type or 'unknown'!s} checkpoint ({architectures or 'no architecture named'}); "
            "vts_drive needs a LlavaOnevisionForConditionalGeneration checkpoint (model_type llava_onevision)"
        )
    if not any(folder.glob("*.safetensors")):
        pickled = [name for name in _PICKLED_WEIGHTS if (folder / name).exists()]
        found = f" (found {', '.join(pickled)}, which would need unpickling)" if pickled else ""
        raise InputError(
            f"{folder} has no .safetensors weights{found}; convert the checkpoint to safetensors"
        )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _read_model_config(folder: Path) -> LlavaOnevisionConfig:
    """The checkpoint's config, with the settings that no weights can make up for checked before
    any tensor is built: a patch size of 0 would otherwise fail deep inside torch."""
    path = folder / "config.json"
    try:
        config = LlavaOnevisionConfig.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, StrictDataclassError) as error:
        raise InputError(f"{path} is not a usable model config: {' '.join(str(error).split())}") from None
    for field in POSITIVE_SETTINGS:
        section, name = field.split(".")
        value = getattr(getattr(config, section), name, None)
        if not _is_positive_int(value):
            raise InputError(f"{path}: {field} must be a positive integer, got {value!r}")
    vision = config.vision_config
    if vision.patch_size > vision.image_size:
        raise InputError(
            f"{path}: vision_config.patch_size {vision.patch_size} is larger than "
            f"vision_config.image_size {vision.image_size}"
        )
    if vision.num_channels != 3:
        raise InputError(
            f"{path}: vision_config.num_channels must be 3 (camera frames are RGB), got {vision.num_channels!r}"
        )
    layer, layers = config.vision_feature_layer, vision.num_hidden_layers
    if not isinstance(layer, int) or isinstance(layer, bool) or not -layers - 1 <= layer <= layers:
        raise InputError(
            f"{path}: vision_feature_layer must be one layer index from {-layers - 1} to {layers}, got {layer!r}"
        )
    if config.vision_feature_select_strategy not in FEATURE_STRATEGIES:
        raise InputError(
            f"{path}: vision_feature_select_strategy must be one of {', '.join(FEATURE_STRATEGIES)}, "
            f"got {config.vision_feature_select_strategy!r}"
        )
    return config


def _per_channel(path: Path, field: str, values: object, positive: bool) -> tuple[float, float, float]:
    """Three finite numbers, one per RGB channel (above 0 when `positive`), or InputError naming the field."""
    numbers = (
        isinstance(values, list)
        and len(values) == 3
        and all(
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and (v > 0 or not positive)
            for v in values
        )
    )
    if not numbers:
        kind = "finite numbers above 0" if positive else "finite numbers"
        raise InputError(f"{path}: {field} must be 3 {kind}, one per RGB channel, got {values!r}")
    red, green, blue = typing.cast(list, values)
    return float(red), float(green), float(blue)


def _read_image_processing(
    folder: Path,
) -> tuple[tuple[float, float, float], tuple[float, float, float], str]:
    """Mean, std and resize the checkpoint's frames are prepared with: its video processor's
    settings, else its image processor's; SigLIP's 0.5/0.5 and the project's area resize when the
    folder says nothing."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            try:
                stats = json.loads(path.read_text())
                mean, std = stats["image_mean"], stats["image_std"]
                resample = stats.get("resample")
            except (
                OSError,
                UnicodeDecodeError,
                json.JSONDecodeError,
                KeyError,
                TypeError,
                AttributeError,
            ) as error:
                raise InputError(f"{path} lacks valid image_mean/image_std: {error}") from None
            if resample is not None and resample not in RESAMPLE:
                raise InputError(
                    f"{path}: resample {resample!r} is not supported: frames are resized bicubic (3), "
                    "or with area interpolation where the file names no resample"
                )
            return (
                _per_channel(path, "image_mean", mean, positive=False),
                _per_channel(path, "image_std", std, positive=True),
                "area" if resample is None else RESAMPLE[resample],
            )
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "area"


def saved_by_processor(folder: Path) -> bool:
    """Whether a transformers processor saved the folder, as it does the hub's checkpoints: the rule
    prompt_layout auto follows (docs/methods.md, checkpoint families)."""
    return any((folder / name).is_file() for name in PROCESSOR_FILES)


def read_chat_template(folder: Path) -> str:
    """The chat template the checkpoint's processor applies, found where transformers' processor
    looks: processor_config.json, chat_template.json, then chat_template.jinja."""
    for name, key in (
        ("processor_config.json", "chat_template"),
        ("chat_template.json", "chat_template"),
        ("chat_template.jinja", None),
    ):
        path = folder / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
            template = json.loads(text).get(key) if key else text
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
            raise InputError(f"{path} is not readable: {error}") from None
        if template is None:
            continue
        if not isinstance(template, str) or not template.strip():
            raise InputError(
                f"{path}: the chat template must be one non-empty text, got {type(template).__name__}"
            )
        return template
    raise InputError(
        f"{folder} has no chat template (processor_config.json, chat_template.json or chat_template.jinja), "
        "which prompt_layout chat_template follows: add the checkpoint's, or set prompt_layout=vts_drive"
    )


def read_image_newline(folder: Path) -> torch.Tensor:
    """The checkpoint's image_newline [D] (the embedding after each video), read alone from its
    weights: backends that run exported graphs hold no other weight."""
    weights, files = _model_weight_files(folder)
    for file in files:
        newline = read_tensor(file, IMAGE_NEWLINE)
        if newline is not None:
            return newline
    raise InputError(
        f"{weights} has no image_newline, which prompt_layout chat_template puts after each video"
    )


def _model_weight_files(folder: Path) -> tuple[Path, list[Path]]:
    """The file that lists the checkpoint's tensors, and the files that hold them: model.safetensors
    itself, or else a shard index and the shards it names (which must lie in the folder)."""
    single, index = folder / MODEL_WEIGHTS, folder / MODEL_WEIGHTS_INDEX
    if single.is_file():
        return single, [single]
    if not index.is_file():
        raise InputError(f"{folder} has no {MODEL_WEIGHTS} (nor a {MODEL_WEIGHTS_INDEX} naming its shards)")
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise InputError(f"{index} is not a readable shard index: {error}") from None
    outside = sorted(
        str(shard) for shard in shards if not isinstance(shard, str) or Path(shard).name != shard
    )
    if outside:
        raise InputError(f"{index} names shard files outside {folder}: {', '.join(outside)}")
    return index, [folder / shard for shard in sorted(shards)]


def _check_complete(weights: Path, missing: set[str]) -> None:
    """from_pretrained fills the tensors a file lacks with random values and only logs it; a model
    with random layers answers with fluent nonsense, so a missing tensor is an error."""
    if missing:
        names = sorted(missing)
        more = f" and {len(names) - MISSING_NAMES_SHOWN} more" if len(names) > MISSING_NAMES_SHOWN else ""
        raise InputError(
            f"{weights} lacks {len(names)} tensors its config needs: {', '.join(names[:MISSING_NAMES_SHOWN])}{more}"
        )


def _download_folder(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                model_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
            )
        )
    except Exception as error:  # the hub client raises many kinds; all mean "not available"
        raise InputError(
            f"model {model_id!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}); "
            "give a local checkpoint folder when offline"
        ) from None


def model_folder(name_or_path: str) -> Path:
    """The folder of a shipped name (e.g. synthdrive-tiny), a local folder, or a hub id (downloaded)."""
    folder = shipped_model_path(name_or_path) or Path(os.path.expanduser(name_or_path))
    if not folder.exists():
        if not _HUB_ID.match(name_or_path):
            raise InputError(f"model folder {name_or_path} does not exist")
        folder = _download_folder(name_or_path)
    return folder


def load_spec(name_or_path: str, device: str = "cpu", dtype: str | None = None) -> ModelSpec:
    """A checkpoint's spec by shipped name (e.g. synthdrive-tiny), local folder, or hub id, its
    weights not read."""
    check_device(device)
    torch_dtype = resolve_dtype(device, dtype)
    folder = model_folder(name_or_path)
    check_checkpoint_folder(folder)
    config = _read_model_config(folder)
    image_mean, image_std, resample = _read_image_processing(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise InputError(f"could not load the tokenizer in {folder}: {str(error).splitlines()[0]}") from None
    return ModelSpec(
        name=name_or_path,
        folder=folder,
        config=config,
        tokenizer=tokenizer,
        image_mean=image_mean,
        image_std=image_std,
        device=torch.device(device),
        dtype=torch_dtype,
        resample=resample,
    )


def load_model(name_or_path: str, device: str = "cpu", dtype: str | None = None) -> VisionLanguageModel:
    """Load a checkpoint by shipped name (e.g. synthdrive-tiny), local folder, or hub id."""
    spec = load_spec(name_or_path, device, dtype)
    weights, files = _model_weight_files(spec.folder)
    for file in files:
        check_weight_file(file)
    try:
        hf_model, loading = LlavaOnevisionForConditionalGeneration.from_pretrained(
            spec.folder, config=spec.config, use_safetensors=True, dtype=spec.dtype, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(
            f"could not load the weights in {spec.folder}: {str(error).splitlines()[0]}"
        ) from None
    _check_complete(weights, loading["missing_keys"])
    hf_model.to(device).eval().requires_grad_(False)
    return VisionLanguageModel.of(
        hf_model, spec.name, spec.folder, spec.tokenizer, spec.image_mean, spec.image_std, spec.resample
    )
