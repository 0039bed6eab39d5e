"""Model names without loading anything (no torch): the shipped models and the default one."""

from __future__ import annotations

from pathlib import Path

REAL_MODEL_ID = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def shipped_model_path(name: str) -> Path | None:
    path = SHIPPED_MODELS_DIR / name
    return path if (path / "config.json").is_file() else None


def default_model() -> str:
    """The shipped synthdrive-tiny model when present (offline), else the real checkpoint's hub id."""
    return "synthdrive-tiny" if shipped_model_path("synthdrive-tiny") else REAL_MODEL_ID
