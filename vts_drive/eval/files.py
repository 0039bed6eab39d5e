"""Reading benchmark files safely: paths that stay inside their data folder, text that is UTF-8,
numbers that are numbers.

Annotation files name the files to read (key frames, clips, segment images); a name holding
`..`, an absolute path or a symlink could otherwise make a loader read, and a run score, any
file on the machine. Predictions files come from other systems and other editors; bytes that
are not UTF-8 are reported at their line instead of as a decoder traceback.
"""

from __future__ import annotations

import math
from pathlib import Path

from vts_drive.errors import InputError


def inside_folder(folder: Path, path: Path, what: str) -> Path:
    """`path` resolved (symlinks and `..` followed), when that lies inside `folder` resolved the same
    way; else InputError naming `what` (the entry that named the path), the path and the folder."""
    folder, resolved = Path(folder).resolve(), Path(path).resolve()
    if not resolved.is_relative_to(folder):
        raise InputError(f"{what}: {path} resolves to {resolved}, outside the data folder {folder}")
    return resolved


def read_utf8(path: Path) -> str:
    """A text file's content (a UTF-8 byte order mark is dropped); InputError naming the file and
    the line of the first bytes that are not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(
            f"{path} line {line} is not UTF-8 text (byte {data[error.start]:#04x}); save it as UTF-8"
        ) from None


def finite_number(value) -> bool:
    """Whether a value read from JSON is a finite number (JSON's true and false are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
