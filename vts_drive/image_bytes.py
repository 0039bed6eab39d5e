"""Encoded image bytes (jpeg, png, bmp, webp) -> RGB uint8 arrays, with the pixel count bounded
before decoding.

A few hundred kilobytes of PNG can declare 20000 x 20000 pixels, 1.2 GB once
decoded to RGB. The dimensions an image declares are read from its header first
(PIL reads only the header when it opens an image) and an image above
MAX_IMAGE_PIXELS is refused before a single pixel is decoded. Image files, video
frames and ROS CompressedImage payloads all pass through here.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from vts_drive.errors import InputError

# The most pixels a camera frame may have: 50 megapixels, far above any vehicle camera (8 MP is large).
MAX_IMAGE_PIXELS = 50_000_000


def _too_many_pixels(name: str, size: str) -> InputError:
    return InputError(
        f"{name} is {size}, above the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels a camera frame may have"
    )


def check_pixel_count(width: int, height: int, name: str) -> None:
    """InputError naming the image when it has more pixels than a camera frame may have."""
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_many_pixels(name, f"{width}x{height} ({width * height / 1e6:.0f} megapixels)")


def decode_image(data: np.ndarray, name: str) -> np.ndarray:
    """Encoded image bytes (flat uint8) -> RGB uint8 [H, W, 3], or InputError naming `name` when
    the bytes are not an image or declare more than MAX_IMAGE_PIXELS pixels."""
    undecodable = InputError(
        f"{name} cannot be decoded: its data does not decode as an image (corrupt, truncated or another format)"
    )
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError:  # PIL's own bound (twice its warning limit) is far above ours
        raise _too_many_pixels(name, f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels") from None
    except Exception:  # PIL's format plugins raise many kinds on bytes that are not what they claim
        raise undecodable from None
    check_pixel_count(width, height, name)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise undecodable
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
