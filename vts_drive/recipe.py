"""Training recipes: a YAML file of stages, run in order by `vts-drive train-synth --stages FILE`.

    vars: {work: data, device: cuda}        ${work} in any value below; --var work=/scratch overrides
    stages:
      - synth: {out: "${work}/synth-train", scenes: 3000, workers: "${cpus}", overwrite: true}
      - train-synth: {data: "${work}/synth-train", out: "${work}/models/m", steps: 700}
      - settings: {model: "${work}/models/m", set: {mod.keep_ratio: 0.2}}
      - copy: {from: "${work}/models/m", to: "${work}/models/n", exclude: ["keyframe_scorer.*"]}

A stage named after a `vts-drive` command (synth, train-synth, train-keyframe, train-router)
runs it in a process of its own, its mapping as flags: `key: value` is --key value, a list
repeats the flag, `true` is a bare flag, and a mapping (for --set) gives KEY=VALUE items.
`settings` writes dotted keys into a model folder's settings file (vts_drive/config.py);
`copy` replaces a folder with a copy of another, less the names matching `exclude`. Every
stage is checked before the first one runs; `first` starts the run at a later stage.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from vts_drive.config import parse_assignment, resolve_config, write_settings
from vts_drive.errors import InputError

COMMANDS = ("synth", "train-synth", "train-keyframe", "train-router")
KINDS = (*COMMANDS, "settings", "copy")
_VARIABLE = re.compile(r"\$\{(\w+)\}")


@dataclass
class Stage:
    number: int
    kind: str
    options: dict

    def __str__(self) -> str:
        return f"stage {self.number} ({self.kind})"

    def argv(self) -> list[str]:
        """A command stage as `vts-drive` arguments."""
        args = [self.kind]
        for key, value in self.options.items():
            flag = f"--{key.replace('_', '-')}"
            if value is True:
                args.append(flag)
            elif isinstance(value, dict):
                args += [
                    item for name, setting in value.items() for item in (flag, f"{name}={_text(setting)}")
                ]
            elif isinstance(value, list):
                args += [item for setting in value for item in (flag, _text(setting))]
            elif value is not False and value is not None:
                args += [flag, _text(value)]
        return args


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_stages(path: Path, variables: list[str] | None = None) -> list[Stage]:
    """The stages of a recipe file, variables filled in, each checked as far as it can be
    without running the ones before it."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"stages file {path} cannot be read: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("stages"), list):
        raise InputError(f"stages file {path} must hold a mapping with a `stages` list")
    values = {
        "cpus": str(os.cpu_count() or 1),
        **{k: str(v) for k, v in (document.get("vars") or {}).items()},
    }
    for item in variables or []:
        name, value = parse_assignment(item, "--var")
        if name not in values:
            raise InputError(f"--var {item!r}: {path} has no variable {name!r}; it has {', '.join(values)}")
        values[name] = value
    stages = []
    for number, entry in enumerate(document["stages"], 1):
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in KINDS:
            raise InputError(
                f"{path} stage {number}: expected one of {', '.join(KINDS)} with its options, got {entry!r}"
            )
        ((kind, options),) = entry.items()
        if not isinstance(options or {}, dict):
            raise InputError(
                f"{path} stage {number}: the options of {kind} must be a mapping, got {options!r}"
            )
        stage = Stage(number, kind, typing.cast(dict, _fill(options or {}, values, f"{path} stage {number}")))
        check_stage(stage)
        stages.append(stage)
    return stages


def _fill(value: object, variables: dict[str, str], where: str) -> object:
    """${name} in every string of a stage's options replaced by the variable's value."""
    if isinstance(value, dict):
        return {key: _fill(item, variables, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, variables, where) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group(1) not in variables:
            raise InputError(
                f"{where}: unknown variable ${{{match.group(1)}}}; variables: {', '.join(variables)}"
            )
        return variables[match.group(1)]

    return _VARIABLE.sub(replace, value)


def check_stage(stage: Stage) -> None:
    """InputError naming the stage for options its command or action would refuse."""
    options = stage.options
    if stage.kind in COMMANDS:
        from vts_drive.cli import build_parser

        try:
            build_parser().parse_args(stage.argv())
        except SystemExit:
            raise InputError(
                f"{stage}: its options are not {stage.kind}'s flags (see the message above)"
            ) from None
    elif stage.kind == "settings":
        if set(options) != {"model", "set"} or not isinstance(options["set"], dict):
            raise InputError(
                f"{stage}: expected {{model: FOLDER, set: {{KEY: VALUE, ...}}}}, got {options!r}"
            )
        resolve_config(None, options["set"], source=str(stage))
    elif not {"from", "to"} <= set(options) <= {"from", "to", "exclude"}:
        raise InputError(
            f"{stage}: expected {{from: FOLDER, to: FOLDER, exclude: [PATTERN, ...]}}, got {options!r}"
        )


def run_stage(stage: Stage) -> None:
    if stage.kind in COMMANDS:
        # a process per command, as separate invocations would have: nothing one stage sets
        # (threads, matmul precision, caches) reaches the next
        code = subprocess.call([sys.executable, "-m", "vts_drive", *stage.argv()])
        if code:
            raise InputError(
                f"{stage} failed (exit code {code}); fix it and rerun from it with --first-stage {stage.number}"
            )
    elif stage.kind == "settings":
        write_settings(Path(stage.options["model"]), stage.options["set"])
    else:
        source, target = Path(stage.options["from"]), Path(stage.options["to"])
        if not source.is_dir():
            raise InputError(f"{stage}: {source} is not a folder")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(*stage.options.get("exclude", [])))


def run_stages(stages: list[Stage], first: int = 1) -> None:
    for stage in stages[first - 1 :]:
        print(
            f"=== {stage} of {len(stages)}: {' '.join(stage.argv()) if stage.kind in COMMANDS else stage.options}",
            flush=True,
        )
        run_stage(stage)
