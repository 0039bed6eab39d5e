"""ROS image messages <-> RGB uint8 arrays [H, W, 3], validated.

The functions read fields by name, so they take a message from any binding:
rosbags (data is a numpy array), the DDS types in msgs.py (bytes) or rclpy
(array.array). A message whose fields do not describe its data raises
InputError; callers drop that frame and count it.
"""
from __future__ import annotations

import array

import cv2
import numpy as np

from vts_drive.errors import InputError
from vts_drive.image_bytes import decode_image

# encoding -> (channels, cv2 conversion to RGB or None when already RGB)
ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, cv2.COLOR_GRAY2RGB),
    "8UC3": (3, None),
    # OpenCV names a Bayer pattern by its second row, ROS by its first.
    "bayer_rggb8": (1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, cv2.COLOR_BayerGB2RGB),
}


def _as_uint8(data: object) -> np.ndarray:
    """The message's data buffer as a flat uint8 array, without a copy where the binding allows."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, np.uint8)
    return np.asarray(data, np.uint8).reshape(-1)


def image_to_rgb(msg: object) -> np.ndarray:
    """A sensor_msgs/Image as RGB uint8 [H, W, 3]."""
    height, width, step, encoding = int(msg.height), int(msg.width), int(msg.step), str(msg.encoding)
    if encoding not in ENCODINGS:
        raise InputError(f"image encoding {encoding!r}: unsupported, expected one of {sorted(ENCODINGS)}")
    channels, conversion = ENCODINGS[encoding]
    data = _as_uint8(msg.data)
    if height <= 0 or width <= 0:
        raise InputError(f"image {width}x{height}: width and height must be positive")
    if step < width * channels:
        raise InputError(f"image {width}x{height} {encoding}: step {step} is below width x channels {width * channels}")
    if data.size != step * height:
        raise InputError(f"image {width}x{height} {encoding} step {step}: expected {step * height} bytes, got {data.size}")
    pixels = data.reshape(height, step)[:, : width * channels].reshape(height, width, channels)  # [H, W, ch]
    if conversion is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels[:, :, 0] if channels == 1 else pixels, conversion)


def compressed_to_rgb(msg: object) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg or png) as RGB uint8 [H, W, 3], its pixel count
    bounded before decoding (decode_image)."""
    if "compressedDepth" in msg.format:
        raise InputError(f"compressed image format {msg.format!r}: depth images are not camera frames")
    return decode_image(_as_uint8(msg.data), f"compressed image (format {msg.format!r})")


def message_to_rgb(msg: object) -> np.ndarray:
    """Image or CompressedImage (told apart by their fields) as RGB uint8 [H, W, 3]."""
    return compressed_to_rgb(msg) if hasattr(msg, "format") else image_to_rgb(msg)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"image to publish: expected RGB uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")


def rgb_to_image_fields(rgb: np.ndarray) -> dict:
    """The fields of an rgb8 sensor_msgs/Image, except header; data is a flat uint8 array."""
    _check_rgb(rgb)
    height, width, _ = rgb.shape
    return {
        "height": height,
        "width": width,
        "encoding": "rgb8",
        "is_bigendian": 0,
        "step": width * 3,
        "data": np.ascontiguousarray(rgb).reshape(-1),
    }


def rgb_to_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB image, as image_transport's compressed plugin sends them."""
    _check_rgb(rgb)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InputError(f"image {rgb.shape}: JPEG encoding failed")
    return encoded.tobytes()
