"""ROS image messages <-> RGB arrays: every supported encoding, and bad messages rejected with InputError."""

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from vts_drive.errors import InputError
from vts_drive.ros.images import (
    compressed_to_rgb,
    image_to_rgb,
    message_to_rgb,
    rgb_to_image_fields,
    rgb_to_jpeg,
)

RGB = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)


def image(pixels: np.ndarray, encoding: str, step: int | None = None, data=None) -> SimpleNamespace:
    """A sensor_msgs/Image as any binding presents it (fields by name)."""
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1)
    step = row.shape[1] if step is None else step
    padded = np.zeros((height, step), np.uint8)
    padded[:, : row.shape[1]] = row
    return SimpleNamespace(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=padded.tobytes() if data is None else data,
    )


@pytest.mark.parametrize(
    "encoding, pixels",
    [
        ("rgb8", RGB),
        ("bgr8", RGB[:, :, ::-1]),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])),
        ("bgra8", np.dstack([RGB[:, :, ::-1], np.zeros(RGB.shape[:2], np.uint8)])),
    ],
)
def test_color_encodings_come_back_as_rgb(encoding, pixels):
    assert np.array_equal(image_to_rgb(image(pixels, encoding)), RGB)


def test_mono8_is_grey_in_all_channels():
    grey = RGB[:, :, 0]
    rgb = image_to_rgb(image(grey, "mono8"))
    assert rgb.shape == (6, 10, 3) and all(np.array_equal(rgb[:, :, c], grey) for c in range(3))


@pytest.mark.parametrize(
    "encoding, pattern",
    [
        ("bayer_rggb8", ("R", "G", "G", "B")),
        ("bayer_bggr8", ("B", "G", "G", "R")),
        ("bayer_gbrg8", ("G", "B", "R", "G")),
        ("bayer_grbg8", ("G", "R", "B", "G")),
    ],
)
def test_bayer_patterns_demosaic_to_the_right_colour(encoding, pattern):
    """A pure orange scene mosaicked by the named pattern must come back orange, not blue."""
    color = {"R": 250, "G": 120, "B": 10}
    mosaic = np.zeros((8, 8), np.uint8)
    for (dy, dx), channel in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern):
        mosaic[dy::2, dx::2] = color[channel]
    rgb = image_to_rgb(image(mosaic, encoding))
    center = rgb[2:6, 2:6].reshape(-1, 3).mean(axis=0)
    assert center[0] > 200 and 90 < center[1] < 150 and center[2] < 50


def test_row_padding_is_skipped():
    assert np.array_equal(image_to_rgb(image(RGB, "rgb8", step=RGB.shape[1] * 3 + 2)), RGB)


@pytest.mark.parametrize(
    "wrap", [bytes, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8), list]
)
def test_data_from_any_binding(wrap):
    msg = image(RGB, "rgb8")
    msg.data = wrap(msg.data)
    assert np.array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"data": RGB.tobytes()[:-1]}, "expected 180 bytes, got 179"),
        ({"step": 20}, "step 20 is below"),
        ({"height": 7}, "expected 210 bytes"),
        ({"encoding": "16UC1"}, "unsupported"),
        ({"encoding": "mono8", "step": 10}, "expected 60 bytes, got 180"),
        ({"width": 0}, "must be positive"),
    ],
)
def test_fields_that_do_not_describe_the_data_raise(change, problem):
    msg = image(RGB, "rgb8")
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(InputError, match=problem):
        image_to_rgb(msg)


def test_jpeg_round_trip_keeps_colours_and_corrupt_jpeg_raises():
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[:, :, 0] = 220
    smooth[:, :, 1] = np.linspace(0, 120, 48, dtype=np.uint8)
    jpeg = rgb_to_jpeg(smooth, quality=95)
    decoded = compressed_to_rgb(SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=jpeg))
    assert decoded.shape == smooth.shape and np.abs(decoded.astype(int) - smooth).mean() < 4
    with pytest.raises(InputError, match="does not decode"):
        message_to_rgb(SimpleNamespace(format="jpeg", data=jpeg[:20]))
    with pytest.raises(InputError, match="depth"):
        message_to_rgb(SimpleNamespace(format="16UC1; compressedDepth", data=jpeg))


def test_png_compressed_image_is_lossless():
    ok, png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert np.array_equal(message_to_rgb(SimpleNamespace(format="png", data=png.tobytes())), RGB)


def test_image_fields_round_trip_and_reject_non_rgb():
    fields = rgb_to_image_fields(RGB)
    assert (fields["encoding"], fields["step"], fields["data"].size) == ("rgb8", 30, RGB.size)
    assert np.array_equal(image_to_rgb(SimpleNamespace(**fields)), RGB)
    with pytest.raises(InputError, match="RGB uint8"):
        rgb_to_image_fields(RGB[:, :, 0])
