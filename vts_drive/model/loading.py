"""Load a LlavaOnevision checkpoint (local folder or hub id) with clear errors.

Weights are read from safetensors only: nothing is unpickled from a model folder.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerBase

from vts_drive.errors import InputError

REAL_MODEL_ID = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt", "tf_model.h5")

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


@dataclass
class VisionLanguageModel:
    """A loaded checkpoint and what the pipeline needs beside the weights."""

    name: str
    folder: Path  # the checkpoint's folder (for a hub id: its local snapshot)
    hf_model: LlavaOnevisionForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @property
    def device(self) -> torch.device:
        return self.hf_model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf_model.dtype


def shipped_model_path(name: str) -> Path | None:
    path = SHIPPED_MODELS_DIR / name
    return path if (path / "config.json").is_file() else None


def resolve_dtype(device: str, dtype: str | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[dtype]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r}: use fp32, fp16 or bf16") from None


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available on this machine (use --device cpu)")
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
        raise InputError(f"{folder} has no .safetensors weights{found}; convert the checkpoint to safetensors")


def _read_image_statistics(folder: Path) -> tuple[tuple, tuple]:
    """Mean/std the checkpoint was trained with; SigLIP's 0.5/0.5 when the folder does not say."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            try:
                stats = json.loads(path.read_text())
                return tuple(stats["image_mean"]), tuple(stats["image_std"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise InputError(f"{path} lacks valid image_mean/image_std: {error}") from None
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _download_folder(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]))
    except Exception as error:  # the hub client raises many kinds; all mean "not available"
        raise InputError(
            f"model {model_id!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}); "
            "give a local checkpoint folder when offline"
        ) from None


def load_model(name_or_path: str, device: str = "cpu", dtype: str | None = None) -> VisionLanguageModel:
    """Load a checkpoint by shipped name (e.g. synthdrive-tiny), local folder, or hub id."""
    check_device(device)
    torch_dtype = resolve_dtype(device, dtype)
    folder = shipped_model_path(name_or_path) or Path(os.path.expanduser(name_or_path))
    if not folder.exists():
        if not _HUB_ID.match(name_or_path):
            raise InputError(f"model folder {name_or_path} does not exist")
        folder = _download_folder(name_or_path)
    check_checkpoint_folder(folder)
    try:
        hf_model = LlavaOnevisionForConditionalGeneration.from_pretrained(
            folder, use_safetensors=True, dtype=torch_dtype
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"could not load the weights in {folder}: {str(error).splitlines()[0]}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise InputError(f"could not load the tokenizer in {folder}: {str(error).splitlines()[0]}") from None
    image_mean, image_std = _read_image_statistics(folder)
    hf_model.to(device).eval().requires_grad_(False)
    return VisionLanguageModel(
        name=name_or_path,
        folder=folder,
        hf_model=hf_model,
        tokenizer=tokenizer,
        image_mean=image_mean,
        image_std=image_std,
    )


def default_model() -> str:
    """The shipped synthdrive-tiny model when present (offline), else the real checkpoint's hub id."""
    return "synthdrive-tiny" if shipped_model_path("synthdrive-tiny") else REAL_MODEL_ID
