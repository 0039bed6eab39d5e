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
from vts_drive.ros import RosMessage

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
    # Packed 4:2:2, two bytes a pixel, each pair of pixels sharing its chroma: U Y V Y or Y U Y V.
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUYV),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUYV),
}
# Semi-planar 4:2:0: `height` rows of Y, then height / 2 rows of interleaved chroma (U V for nv12, V U for nv21).
YUV420_ENCODINGS: dict[str, int] = {"nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21}


def _as_uint8(data: object) -> np.ndarray:
    """The message's data buffer as a flat uint8 array, without a copy where the binding allows."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, np.uint8)
    return np.asarray(data, np.uint8).reshape(-1)


def image_to_rgb(msg: RosMessage) -> np.ndarray:
    """A sensor_msgs/Image as RGB uint8 [H, W, 3]."""
    height, width, step, encoding = int(msg.height), int(msg.width), int(msg.step), str(msg.encoding)
    name = f"image {width}x{height} {encoding}"
    if encoding not in ENCODINGS and encoding not in YUV420_ENCODINGS:
        supported = sorted([*ENCODINGS, *YUV420_ENCODINGS])
        raise InputError(f"image encoding {encoding!r}: unsupported, expected one of {supported}")
    if height <= 0 or width <= 0:
        raise InputError(f"image {width}x{height}: width and height must be positive")
    if encoding in YUV420_ENCODINGS:
        _check_even(name, width=width, height=height)
        rows = _rows(msg.data, name, step, height * 3 // 2, width)  # [H * 3/2, W]: Y plane, then chroma
        return cv2.cvtColor(rows, YUV420_ENCODINGS[encoding])
    channels, conversion = ENCODINGS[encoding]
    if channels == 2:
        _check_even(name, width=width)
    pixels = _rows(msg.data, name, step, height, width * channels).reshape(
        height, width, channels
    )  # [H, W, ch]
    if conversion is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels[:, :, 0] if channels == 1 else pixels, conversion)


def _rows(data: object, name: str, step: int, rows: int, row_bytes: int) -> np.ndarray:
    """The data buffer as [rows, row_bytes] uint8, the padding at the end of each step-byte row left out."""
    data = _as_uint8(data)
    if step < row_bytes:
        raise InputError(f"{name}: step {step} is below the {row_bytes} bytes of a row")
    if data.size != step * rows:
        raise InputError(f"{name} step {step}: expected {step * rows} bytes, got {data.size}")
    return data.reshape(rows, step)[:, :row_bytes]


def _check_even(name: str, **sizes: int) -> None:
    """Chroma shared by pixel pairs (4:2:2) or 2 x 2 blocks (4:2:0) needs even sizes."""
    for size, value in sizes.items():
        if value % 2:
            raise InputError(f"{name}: {size} {value} must be even (chroma is shared by pixel pairs)")


def compressed_to_rgb(msg: RosMessage) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg or png) as RGB uint8 [H, W, 3], its pixel count
    bounded before decoding (decode_image)."""
    if "compressedDepth" in msg.format:
        raise InputError(f"compressed image format {msg.format!r}: depth images are not camera frames")
    return decode_image(_as_uint8(msg.data), f"compressed image (format {msg.format!r})")


def message_to_rgb(msg: RosMessage) -> np.ndarray:
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
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise InputError(f"image {rgb.shape}: JPEG encoding failed")
    return encoded.tobytes()
