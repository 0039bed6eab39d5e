"""Results files: reports as JSON Lines behind a header line that says what produced them.

    {"vts_drive_results": 1, "source": {...}}     line 1: input, model files, pipeline and window settings
    {"schema": "vts_drive.report/1", ...}         every other line: one report, appended as it is made

A rerun resumes a file only when its source is the rerun's own: then the reports in it are
finished work and the rerun describes only the rest (a last line cut short by a kill is dropped).
A file from another input, model, mode or setting is refused with what differs, so one file
never mixes runs and a results bag never pairs reports with another recording's images;
`force` starts such a file over.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from types import TracebackType

from vts_drive.errors import InputError

HEADER_KEY = "vts_drive_results"
FORMAT_VERSION = 1


def pipeline_source(pipeline) -> dict:
    """What decides a pipeline's reports: its model, scorer, router and engine files and its settings
    (identified as eval identifies them)."""
    from vts_drive.eval.runner import folder_identity  # imports torch, as a loaded pipeline has

    config = pipeline.config
    return {
        "model": folder_identity(pipeline.model.folder),
        "keyframe_scorer": folder_identity(config.keyframe_scorer or None),
        "routers": folder_identity(config.routers or None),
        "engines": folder_identity(config.engines or None),
        "pipeline": asdict(config),
    }


def files_digest(paths: list[Path]) -> str:
    """One digest of many files' paths, sizes and modification times (a frame folder holds thousands)."""
    from vts_drive.eval.benchmarks import file_identity  # imports torch, as the callers have

    digest = hashlib.sha256()
    for path in paths:
        digest.update(json.dumps(file_identity(path)).encode() + b"\n")
    return digest.hexdigest()


def read_reports(path: Path) -> list[dict]:
    """The reports of a results file, without its header (a line cut short by a kill is left out)."""
    return _parse(Path(path), _complete_lines(Path(path).read_bytes()))[1]


class ResultsFile:
    """A results file opened for appending: `finished` holds the reports a previous run of the same
    source wrote; `append` adds one report and flushes it, so a kill loses at most that line."""

    def __init__(self, path: Path, source: dict, force: bool = False) -> None:
        self.path = Path(path)
        self.source = json.loads(json.dumps(source))  # as it reads back from the file
        if self.path.is_dir():
            raise InputError(f"results file {self.path} is not a file (it is a folder); give a file path")
        try:
            self.finished = [] if force else self._resume()
            if force or not self.path.is_file() or self.path.stat().st_size == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps({HEADER_KEY: FORMAT_VERSION, "source": self.source}) + "\n")
            self._out = self.path.open("a")
        except OSError as error:
            raise InputError(
                f"results file {self.path} cannot be written: {error.strerror or error}"
            ) from None

    def _resume(self) -> list[dict]:
        """The finished reports, after checking the header; a last line cut short by a kill is dropped,
        and only from a file whose header matches (any other file is left as it is)."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        complete = _complete_lines(data)
        header, reports = _parse(self.path, complete)
        if header is None:
            if data:  # not even one complete line: nothing here says what wrote it
                raise _missing_header(self.path)
            return []
        if header["source"] != self.source:
            changes = differences(header["source"], self.source)
            listed = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            raise InputError(
                f"results file {self.path} holds reports of another run ({listed}); a rerun resumes only with the same "
                "input, model, mode and settings: give another output file, or --force to start this one over"
            )
        if len(complete) < len(data):
            os.truncate(self.path, len(complete))
        return reports

    def append(self, report: dict) -> None:
        self._out.write(json.dumps(report, separators=(",", ":")) + "\n")
        self._out.flush()

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _complete_lines(data: bytes) -> bytes:
    """`data` up to its last newline: what follows was being written when the writer was killed."""
    return data[: data.rfind(b"\n") + 1]


def _parse(path: Path, data: bytes) -> tuple[dict | None, list[dict]]:
    """(header, reports) of a results file's complete lines; (None, []) when it has none."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise InputError(
                f"{path} line {number} is not a JSON report; move the file away or fix that line"
            ) from None
        if not isinstance(records[-1], dict):
            raise InputError(f"{path} line {number} is not a JSON object; move the file away")
    if not records:
        return None, []
    header, reports = records[0], records[1:]
    if header.get(HEADER_KEY) != FORMAT_VERSION or not isinstance(header.get("source"), dict):
        raise _missing_header(path)
    for number, report in enumerate(reports, start=2):
        if HEADER_KEY in report or "stamp" not in report:
            raise InputError(f"{path} line {number} is not a report (no stamp); move the file away")
    return header, reports


def _missing_header(path: Path) -> InputError:
    return InputError(
        f"{path} has no vts_drive results header on line 1 (written by an older vts_drive, or not a results file), "
        "so what produced its reports is unknown: give another output file, or --force to start this one over"
    )


def differences(stored: object, current: object, path: str = "") -> list[str]:
    """'key.subkey: <stored> in the file, <current> now' for each value that differs between two JSON values."""
    if isinstance(stored, dict) and isinstance(current, dict):
        keys = [*stored, *(key for key in current if key not in stored)]  # in the order they were written
        return [
            line for key in keys for line in differences(stored.get(key), current.get(key), f"{path}{key}.")
        ]
    if isinstance(stored, list) and isinstance(current, list) and len(stored) == len(current):
        return [
            line for i, (a, b) in enumerate(zip(stored, current)) for line in differences(a, b, f"{path}{i}.")
        ]
    if stored == current:
        return []
    return [f"{path[:-1]}: {_short(stored)} in the file, {_short(current)} now"]


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
