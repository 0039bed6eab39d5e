"""A small CNN that scores a frame from the frame itself and its change since the previous frame.

Input: the frame and (frame - previous frame), both RGB at `input_size`, stacked
to 6 channels. Four stride-2 conv blocks, global average pooling, one linear
layer: about 60 k parameters, plain conv/pool/linear so it exports to ONNX and
runs before the vision tower (frames it scores low need not be encoded at all).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from vts_drive.config import KeyframeConfig, section, write_settings
from vts_drive.errors import InputError
from vts_drive.flops import conv_stack_flops
from vts_drive.model.weights import read_weights

WEIGHTS_FILE = "keyframe_scorer.safetensors"


class KeyframeScorer(nn.Module):
    def __init__(self, config: KeyframeConfig) -> None:
        super().__init__()
        self.config = config
        widths = [6, config.width, 2 * config.width, 4 * config.width, 4 * config.width]
        blocks = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            blocks += [
                nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], 1)

    def forward(self, frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """frames, previous [F, 3, S, S] in [0, 1] -> keyframe logits [F]."""
        x = torch.cat([frames, frames - previous], dim=1)  # [F, 6, S, S]
        x = self.pool(self.features(x)).flatten(1)  # [F, C]
        return self.head(x).squeeze(-1)

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames -> [F, 3, S, S] float in [0, 1], on the scorer's device."""
        return prepare_frames(images, self.config, self.head.weight.device)

    @torch.no_grad()
    def score_streams(self, streams: torch.Tensor) -> torch.Tensor:
        """streams [C, T, 3, S, S] (each camera's frames in time order) -> probabilities [C, T].
        A stream's first frame has nothing to compare with and is a keyframe (probability 1)."""
        previous = torch.cat([streams[:, :1], streams[:, :-1]], dim=1)
        probabilities = torch.sigmoid(self(streams.flatten(0, 1), previous.flatten(0, 1))).view(
            streams.shape[:2]
        )
        probabilities[:, 0] = 1.0
        return probabilities


def prepare_frames(
    images: list[np.ndarray], config: KeyframeConfig, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """RGB uint8 frames -> the scorer's input [F, 3, S, S], float in [0, 1] (from the settings
    alone: an exported scorer takes the same input)."""
    size = (config.input_size, config.input_size)
    small = np.stack([cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images])
    return torch.from_numpy(small).to(device).permute(0, 3, 1, 2).float() / 255.0


def scorer_flops(config: KeyframeConfig) -> float:
    """FLOPs of scoring one frame, from the settings alone (the layers are built without memory)."""
    with torch.device("meta"):
        return conv_stack_flops(KeyframeScorer(config), config.input_size)


def select_keyframes(probabilities: torch.Tensor, config: KeyframeConfig) -> torch.Tensor:
    """probabilities [C, T] -> keyframe flags [C, T]: each camera's anchor frame (its first or
    its newest), plus the highest-scoring frames above the threshold, at most max_keyframes per
    camera. The anchor keeps all its tokens and the other frames keep what differs from it: with
    "newest", a window shows the present in full and its past as changes."""
    scores = probabilities.clone()
    scores[:, config.anchor_index] = 2.0  # the anchor always wins a place
    scores = scores.masked_fill(scores <= config.threshold, -1.0)
    count = min(config.max_keyframes, scores.shape[1])
    top = scores.topk(count, dim=1)
    flags = torch.zeros_like(probabilities, dtype=torch.bool)
    flags.scatter_(1, top.indices, top.values > config.threshold)
    return flags


def save_scorer(scorer: KeyframeScorer, folder: Path) -> None:
    """The weights, and the settings as the `keyframe` section of the folder's settings file."""
    folder = Path(folder)
    write_settings(folder, section(scorer.config))
    save_file({k: v.contiguous() for k, v in scorer.state_dict().items()}, str(folder / WEIGHTS_FILE))


def load_scorer(
    folder: Path | str, config: KeyframeConfig, device: str | torch.device = "cpu"
) -> KeyframeScorer:
    """The scorer in `folder`, built as `config` says (the `keyframe` settings resolved for the run)."""
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(
            f"{folder} has no keyframe scorer ({WEIGHTS_FILE}); train one with `vts-drive train-keyframe`"
        )
    scorer = KeyframeScorer(config)
    try:
        scorer.load_state_dict(read_weights(weights))
    except RuntimeError as error:
        raise InputError(
            f"keyframe scorer in {folder} does not fit keyframe.input_size/width: {str(error).splitlines()[0]}"
        ) from None
    return scorer.to(device).eval()
