"""The risk camera's frame with the report drawn on it, for ~/overlay and the results bag.

A person watching rviz or Foxglove sees what the model said where it said it:
the box, the object's name on it, and the caption in a band at the bottom.
The image keeps the camera's size, so it lines up with the camera and with the
Detection2DArray boxes. cv2 draws ASCII only; other characters show as '?'.
"""

from __future__ import annotations

import cv2
import numpy as np

from vts_drive.ros.detections import RiskDetection

BOX_COLOUR = (255, 64, 32)  # RGB
TEXT_COLOUR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_overlay(rgb: np.ndarray, detection: RiskDetection) -> np.ndarray:
    """A copy of the frame [H, W, 3] (uint8 RGB) with the detection's box, object and caption."""
    image = np.ascontiguousarray(rgb).copy()
    height, width = image.shape[:2]
    scale = max(0.3, width / 1600)  # about 60 characters across at any width, never below legible
    thickness = max(1, round(width / 640))
    if detection.box is not None:
        x1, y1, x2, y2 = (round(v) for v in detection.box)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), BOX_COLOUR, thickness)
        _label(image, detection.object or "risk", (x1, y1), scale, thickness)
    if detection.present:
        text = (
            f"{detection.object or 'risk'}: {detection.caption}"
            if detection.caption
            else detection.object or "risk"
        )
    else:
        text = "no risk"
    _caption(image, text, scale, thickness)
    return image


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _label(image: np.ndarray, text: str, corner: tuple[int, int], scale: float, thickness: int) -> None:
    """The text on a filled tab above the box's top-left corner, moved inside the image where it would leave it."""
    (text_w, text_h), baseline = cv2.getTextSize(_ascii(text), FONT, scale, thickness)
    x = max(0, min(corner[0], image.shape[1] - text_w - 2))
    top = max(0, corner[1] - text_h - baseline - 2)
    cv2.rectangle(image, (x, top), (x + text_w + 2, top + text_h + baseline + 2), BOX_COLOUR, cv2.FILLED)
    cv2.putText(
        image, _ascii(text), (x + 1, top + text_h + 1), FONT, scale, TEXT_COLOUR, thickness, cv2.LINE_AA
    )


def _caption(image: np.ndarray, text: str, scale: float, thickness: int) -> None:
    """The text wrapped to the image width on a darkened band at the bottom, at most a third of
    the image high (a longer caption ends in '...')."""
    height, width = image.shape[:2]
    (_, line_h), baseline = cv2.getTextSize("Mg", FONT, scale, thickness)
    step = line_h + baseline + 2
    lines = _wrap(_ascii(text), width - 4, max(1, height // 3 // step), scale, thickness)
    band = min(height, len(lines) * step + 4)
    image[height - band :] = image[height - band :] // 3
    for i, line in enumerate(lines):
        cv2.putText(
            image,
            line,
            (2, height - band + 2 + i * step + line_h),
            FONT,
            scale,
            TEXT_COLOUR,
            thickness,
            cv2.LINE_AA,
        )


def _wrap(text: str, width: int, max_lines: int, scale: float, thickness: int) -> list[str]:
    """Words into lines no wider than `width` pixels as drawn (the font is proportional), at most
    max_lines; what does not fit is cut and marked with '...'."""

    def fits(line: str) -> bool:
        return cv2.getTextSize(line, FONT, scale, thickness)[0][0] <= width

    lines: list[str] = []
    for word in text.split():
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
        elif len(lines) == max_lines:
            while lines[-1] and not fits(lines[-1] + "..."):
                lines[-1] = lines[-1][:-1]
            lines[-1] += "..."
            break
        else:
            lines.append(word)
    return lines or [""]
