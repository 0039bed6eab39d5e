"""One configuration: every setting that decides a pipeline's answers, with its one default.

A tree of dataclasses. Each setting has a dotted key (`mode`, `vts.budget`,
`keyframe.skip_threshold`, `mod.keep_ratio`) set by the same `key=value` everywhere:

    vts-drive describe --set vts.budget=0.3           CLI (--mode, --skip-threshold, ... are aliases)
    vts-drive bench --modes "vts[vts.budget=0.3]"     bench and eval mode specs
    vts: {budget: 0.3}   or   vts.budget: 0.3         ROS parameters (under ros__parameters)
    {"vts": {"budget": 0.3}}                          a model folder's settings file, vts_drive.json

A run's configuration is built in layers, each later one winning: the defaults here, the
model folder's settings file (training writes the keyframe scorer's and the routers'
settings there), the `keyframe` section of the `keyframe_scorer` folder's file and the
`mod` section of the `routers` folder's file when those folders are given, then the run's
own overrides. Nothing here imports torch: `--help` and parameter checks stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vts_drive.errors import InputError

MODES = ("dense", "newest", "vts", "prumerge", "prumerge+", "mod", "vts+mod")
BACKENDS = ("torch", "onnxruntime", "tensorrt")
ANCHORS = ("first", "newest")
ROUTINGS = ("learned", "random", "uniform")
PROMPT_LAYOUTS = ("auto", "vts_drive", "chat_template")
SETTINGS_FILE = "vts_drive.json"
# files an older layout kept a model's settings in, one per side module (see scripts/convert_model_settings.py)
OLD_SETTINGS_FILES = ("keyframe_scorer.json", "mod_router.json")

# Short names of mode specs (vts[budget=0.3]) for the dotted keys they set
ALIASES = {
    "budget": "vts.budget",
    "radius": "vts.radius",
    "redundancy": "vts.redundancy_threshold",
    "keyframe": "keyframe.threshold",
    "max_keyframes": "keyframe.max_keyframes",
    "skip": "keyframe.skip_threshold",
    "anchor": "keyframe.anchor",
    "cache": "frame_cache",
    "r": "mod.keep_ratio",
    "routing": "mod.routing",
    "gate": "mod.gate",
}

Overrides = Mapping[str, object]  # dotted key -> value (typed, or text as typed on a command line)


@dataclass
class KeyframeConfig:
    """The keyframe CNN's shape and how its scores pick and gate frames (saved with its weights)."""

    input_size: int = 64  # frames are resized to input_size x input_size
    width: int = 16  # channels of the first conv block
    threshold: float = 0.5  # probability above which a frame is a keyframe
    max_keyframes: int = 1  # per camera per window, the anchor frame included
    skip_threshold: float = 0.3  # frames scored below it are not encoded (0: every frame is)
    anchor: str = "newest"  # each camera's frame that is always a keyframe: "first" or "newest"

    def check(self) -> None:
        if self.input_size < 1 or self.width < 1:
            raise InputError(
                f"keyframe.input_size and keyframe.width must be at least 1, got {self.input_size}, {self.width}"
            )
        if self.anchor not in ANCHORS:
            raise InputError(f"keyframe.anchor {self.anchor!r} is not one of {', '.join(ANCHORS)}")
        if self.max_keyframes < 1:
            raise InputError(
                f"keyframe.max_keyframes must be at least 1 (the anchor frame), got {self.max_keyframes}"
            )
        if self.skip_threshold < 0.0:
            raise InputError(
                f"keyframe.skip_threshold must be at least 0 (above 1: only keyframes are encoded), "
                f"got {self.skip_threshold}"
            )

    @property
    def anchor_index(self) -> int:
        """Index of the anchor frame within a window's frames."""
        return 0 if self.anchor == "first" else -1


@dataclass
class VtsConfig:
    """Video token sparsification (tokens/vts.py)."""

    budget: float = 0.4  # fraction of the dense visual token count that enters the LLM
    radius: int = 1  # neighbourhood (in token grid cells) searched for a matching keyframe token
    redundancy_threshold: float = 0.9  # cosine similarity at or above which a token repeats a keyframe


@dataclass
class PruMergeConfig:
    """PruMerge and PruMerge+ (tokens/prumerge.py); the mode says which."""

    plus_fraction: float = 0.25  # PruMerge+ keeps about this share of each frame's tokens
    merge_neighbours: int = 32  # k: pruned tokens merged into each kept one


@dataclass
class ModConfig:
    """Mixture-of-depths routing (mod/routing.py), saved with the routers' weights."""

    keep_ratio: float = 0.15  # share of each frame's visual tokens a routed layer computes
    layers: list[int] = field(default_factory=list)  # routed layer indices; empty: every other layer from 1
    gate: bool = True  # scale computed visual tokens' block output by sigmoid(router logit)
    routing: str = "learned"  # learned | random | uniform (the last two: the routing ablation)

    def check(self) -> None:
        if not 0.0 < self.keep_ratio <= 1.0:
            raise InputError(f"mod.keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.routing not in ROUTINGS:
            raise InputError(f"mod.routing {self.routing!r} is not one of {', '.join(ROUTINGS)}")
        if any(layer < 0 for layer in self.layers):
            raise InputError(f"mod.layers must be layer indices (0 or more), got {self.layers}")

    def routed_layers(self, num_layers: int) -> list[int]:
        return sorted(self.layers) if self.layers else list(range(1, num_layers, 2))


@dataclass
class PipelineConfig:
    """Everything that decides a pipeline's answers. Sections keyframe and mod are what a model
    folder's settings file holds; the rest belongs to the run."""

    mode: str = "dense"  # see MODES; "newest" is dense on each camera's newest frame
    backend: str = "torch"  # torch | onnxruntime | tensorrt
    device: str = "cpu"  # cpu | cuda[:N]
    dtype: str = "auto"  # auto (fp32 on CPU, bf16/fp16 on CUDA) | fp32 | fp16 | bf16
    engines: str = ""  # the folder `vts-drive export` wrote, run by backends onnxruntime and tensorrt
    questions: list[str] = field(default_factory=lambda: ["What should the ego car do?"])
    max_new_tokens: int = 48
    box_grammar: bool = True  # keep the risk answer's box four ordered numbers in [0, 1] while decoding
    frame_cache: bool = True  # reuse each frame's results across overlapping windows of a stream
    draft: bool = True  # earlier answers (first the stream's previous window's) draft decoding (lossless)
    seed: int = 0  # seeds every random choice a pipeline makes (random routing)
    keyframe_scorer: str = ""  # folder with keyframe_scorer.safetensors; "": the model's folder
    routers: str = ""  # folder with mod_router.safetensors; "": the model's folder
    keyframe: KeyframeConfig = field(default_factory=KeyframeConfig)
    vts: VtsConfig = field(default_factory=VtsConfig)
    prumerge: PruMergeConfig = field(default_factory=PruMergeConfig)
    mod: ModConfig = field(default_factory=ModConfig)
    # how frames and text reach the LLM, a setting of the checkpoint (docs/methods.md, checkpoint
    # families): vts_drive, chat_template, or auto (chat_template where a processor saved the folder)
    prompt_layout: str = "auto"

    @property
    def token_reduction(self) -> str:
        """How visual tokens are reduced before the LLM: none | vts | prumerge | prumerge+."""
        return {"vts": "vts", "vts+mod": "vts", "prumerge": "prumerge", "prumerge+": "prumerge+"}.get(
            self.mode, "none"
        )

    @property
    def layer_skipping(self) -> bool:
        """Whether the LLM's routed layers compute only part of the visual tokens."""
        return self.mode in ("mod", "vts+mod")

    def check_values(self) -> None:
        """InputError naming the first setting no pipeline can run with, whatever the others."""
        if self.mode not in MODES:
            raise InputError(f"mode {self.mode!r} is not available; choose from {', '.join(MODES)}")
        if self.backend not in BACKENDS:
            raise InputError(f"backend {self.backend!r} is not available; choose from {', '.join(BACKENDS)}")
        if self.prompt_layout not in PROMPT_LAYOUTS:
            raise InputError(
                f"prompt_layout {self.prompt_layout!r} is not one of {', '.join(PROMPT_LAYOUTS)}"
            )
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        self.keyframe.check()
        self.mod.check()

    def check(self) -> None:
        """InputError naming the first setting a pipeline cannot run with, alone or with the others."""
        self.check_values()
        if self.backend != "torch" and not self.engines:
            raise InputError(
                f"backend {self.backend} runs exported graphs: give the folder `vts-drive export` "
                "wrote (--engines DIR, or engines=DIR)"
            )
        if self.backend == "tensorrt" and not self.device.startswith("cuda"):
            raise InputError("backend tensorrt runs on a CUDA GPU: add --device cuda")


def setting_keys(cls: type = PipelineConfig, prefix: str = "") -> dict[str, object]:
    """Every dotted key of a configuration class -> its type."""
    keys: dict[str, object] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys |= setting_keys(typing.cast(type, hint), f"{prefix}{name}.")
        else:
            keys[f"{prefix}{name}"] = hint
    return keys


def flatten(nested: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """{"vts": {"budget": 0.3}} -> {"vts.budget": 0.3}; dotted keys pass through."""
    flat: dict[str, object] = {}
    for name, value in nested.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{name}.")
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def parse_assignment(text: str, source: str) -> tuple[str, str]:
    """'KEY=VALUE' -> (KEY, VALUE as text)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"{source} {text!r}: expected KEY=VALUE, e.g. vts.budget=0.3")
    return key.strip(), value.strip()


def set_value(config: PipelineConfig, key: str, value: object, source: str) -> None:
    """Set one dotted key; `source` names where the value came from in an error."""
    hint = setting_keys().get(key)
    if hint is None:
        raise InputError(f"{source}: unknown setting {key!r}{_suggestion(key)}")
    *sections, name = key.split(".")
    target: object = config
    for section in sections:
        target = getattr(target, section)
    setattr(target, name, convert(value, hint, f"{source}: {key}"))


def check_setting(key: str, value: object, source: str) -> None:
    """InputError naming `source` when one setting is unknown or no pipeline can run with its value."""
    config = PipelineConfig()
    set_value(config, key, value, source)
    try:
        config.check_values()
    except InputError as error:
        raise InputError(f"{source}: {error}") from None


def apply(config: PipelineConfig, overrides: Overrides, source: str) -> None:
    for key, value in flatten(overrides).items():
        set_value(config, key, value, source)


BOOL_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def convert(value: object, hint: object, name: str) -> object:
    """A value as the setting's type where nothing is lost (an int for a float, '0.3' for a
    float, 'true' or 0/1 for a bool); else InputError naming the setting."""
    text = value.strip() if isinstance(value, str) else None
    if hint is str:
        if text is not None:
            return text
    elif hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if text is not None and text.lower() in BOOL_WORDS:
            return BOOL_WORDS[text.lower()]
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None and text.lstrip("+-").isdigit():
            return int(text)
    elif hint is float:
        number = _float(value)
        if number is not None and math.isfinite(number):
            return number
        if number is not None:
            raise InputError(f"{name} must be a finite number, got {value!r}")
    elif hint in (list[str], list[int]):
        kind = typing.get_args(hint)[0]
        items = _items(value, kind)
        if items is not None:
            return [convert(item, kind, name) for item in items]
    expected = {str: "text", bool: "true or false", int: "a whole number", float: "a number"}.get(
        typing.cast(type, hint), "a list like [a, b]"
    )
    raise InputError(f"{name} must be {expected}, got {value!r}")


def _float(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _items(value: object, kind: type) -> list | None:
    """A list from a list, or from text: a JSON or YAML list ('["Why?", "How?"]', '[0, 1]'),
    else whole numbers separated by commas ('0,1') or one text item."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("["):
        import yaml

        try:
            parsed = yaml.safe_load(text)  # YAML reads JSON too
        except yaml.YAMLError:
            return None
        return parsed if isinstance(parsed, list) else None
    if kind is int:
        return [item.strip() for item in text.split(",") if item.strip()]
    return [text] if text else []


def _suggestion(key: str) -> str:
    keys = list(setting_keys())
    if key in ALIASES:
        return f" (did you mean {ALIASES[key]}?)"
    close = [name for name in keys if name.startswith(key)] or difflib.get_close_matches(key, keys, n=1)
    return f" (did you mean {close[0]}?)" if close else f"; settings: {', '.join(keys)}"


def read_settings(folder: Path | str) -> dict[str, object]:
    """A folder's settings file as dotted keys ({} when it has none)."""
    folder = Path(folder)
    path = folder / SETTINGS_FILE
    old = [name for name in OLD_SETTINGS_FILES if (folder / name).is_file()]
    if old:  # beside a settings file too: files of another model were copied over this one's
        raise InputError(
            f"{folder} keeps settings in {' and '.join(old)}, an older layout: convert it with "
            f"`python scripts/convert_model_settings.py {folder}` (writes them into {SETTINGS_FILE})"
        )
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(settings, dict):
        raise InputError(
            f'{path} must hold a JSON object of settings, e.g. {{"mod": {{"keep_ratio": 0.15}}}}'
        )
    return flatten(settings)


def write_settings(folder: Path | str, overrides: Overrides) -> None:
    """Set keys in a folder's settings file, keeping its other settings (checked before writing)."""
    folder = Path(folder)
    settings = read_settings(folder) | flatten(overrides)
    check_layers([(str(folder / SETTINGS_FILE), settings)])
    nested: dict[str, object] = {}
    for key, value in sorted(settings.items()):
        *sections, name = key.split(".")
        target = nested
        for section in sections:
            target = typing.cast(dict, target.setdefault(section, {}))
        target[name] = value
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SETTINGS_FILE).write_text(json.dumps(nested, indent=2) + "\n")


def section(config: object) -> dict[str, object]:
    """A configuration section as the dotted keys a settings file stores, e.g. {'mod.keep_ratio': 0.15}."""
    name = {KeyframeConfig: "keyframe", ModConfig: "mod", VtsConfig: "vts", PruMergeConfig: "prumerge"}[
        type(config)
    ]
    return {
        f"{name}.{key}": value for key, value in dataclasses.asdict(typing.cast(typing.Any, config)).items()
    }


def check_layers(layers: list[tuple[str, Overrides]]) -> PipelineConfig:
    """The defaults with each (source, overrides) layer applied in turn; an error names the layer."""
    config = PipelineConfig()
    for source, overrides in layers:
        apply(config, overrides, source)
        try:
            config.check()
        except InputError as error:
            raise InputError(f"{source}: {error}") from None
    return config


def resolve_config(
    folder: Path | str | None, overrides: Overrides | None = None, source: str = "settings"
) -> PipelineConfig:
    """A run's configuration (see the module docstring); `folder` is the model's (None: defaults only)."""
    overrides = flatten(overrides or {})
    run = check_layers([(source, overrides)])  # names the keyframe scorer's and routers' folders, if any
    layers: list[tuple[str, Overrides]] = []
    if folder is not None:
        layers.append((str(Path(folder) / SETTINGS_FILE), read_settings(folder)))
    for side, name in ((run.keyframe_scorer, "keyframe"), (run.routers, "mod")):
        if side:
            own = {key: value for key, value in read_settings(side).items() if key.startswith(f"{name}.")}
            layers.append((str(Path(side) / SETTINGS_FILE), own))
    return check_layers([*layers, (source, overrides)])
