""".safetensors weight files, read with errors that name the file.

A weight file cut short by a copy or a download, or overwritten with something
else, fails inside the safetensors library with a message that does not say
which file it was; here it becomes an InputError naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from vts_drive.errors import InputError


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    try:
        yield
    except (SafetensorError, OSError) as error:
        raise InputError(
            f"weight file {path} cannot be read (truncated, corrupt or not safetensors): {error}"
        ) from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file, on the CPU."""
    with _naming(path):
        return load_file(str(path))


def check_weight_file(path: Path) -> None:
    """Open a .safetensors file without reading its tensors: opening checks the header against the
    file's size, so a file cut short or overwritten fails here, before a model is built for it."""
    with _naming(path):
        with safe_open(str(path), framework="pt"):
            pass


def read_tensor(path: Path, names: tuple[str, ...]) -> torch.Tensor | None:
    """The first of `names` a .safetensors file holds, read alone (None when it holds none)."""
    with _naming(path):
        with safe_open(str(path), framework="pt") as tensors:
            name = next((name for name in names if name in tensors.keys()), None)
            return None if name is None else tensors.get_tensor(name)
