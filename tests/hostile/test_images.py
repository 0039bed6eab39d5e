"""Decompression bombs: a few kilobytes of PNG or MJPG that decode to 8000 x 8000 pixels (64
megapixels, 192 MB as RGB). Image files, video files and ROS CompressedImage payloads are all
refused from their declared dimensions, with an error naming the image."""

import struct
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from test_cli_describe import write_camera_folders
from vts_drive.cli import main
from vts_drive.errors import InputError
from vts_drive.inputs import read_image
from vts_drive.ros.images import message_to_rgb

SIDE = 8000  # 64 megapixels: above the bound on camera frames, below PIL's own bomb limit


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG of zeros: 64 MB of rows compress to about 60 KB."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + one byte per pixel
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def test_png_bomb_in_an_image_folder_is_refused(tiny_model_dir, tmp_path, capsys):
    images = write_camera_folders(tmp_path / "drive", frames=8)
    (images / "front" / "000005.jpg").unlink()
    bomb = images / "front" / "000005.png"
    bomb.write_bytes(png_bomb(SIDE, SIDE))

    code = main(
        [
            "describe",
            "--model",
            str(tiny_model_dir),
            "--images",
            str(images),
            "--frames",
            "4",
            "--max-new-tokens",
            "2",
        ]
    )
    stderr = capsys.readouterr().err

    assert code == 2
    assert "Traceback" not in stderr
    skipped = [line for line in stderr.splitlines() if "skipped:" in line]
    assert len(skipped) == 1 and str(bomb) in skipped[0] and f"{SIDE}x{SIDE}" in skipped[0], stderr
    assert "1 window(s) described, 1 skipped" in stderr


def test_png_bomb_as_a_compressed_image_message_is_refused():
    msg = SimpleNamespace(format="png", data=png_bomb(SIDE, SIDE))
    with pytest.raises(InputError, match=f"compressed image .*png.* is {SIDE}x{SIDE}"):
        message_to_rgb(msg)


def test_video_with_oversized_frames_is_refused(tiny_model_dir, tmp_path, capsys):
    video = tmp_path / "front.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (SIDE, SIDE))
    for _ in range(2):
        writer.write(np.zeros((SIDE, SIDE, 3), np.uint8))
    writer.release()

    code = main(["describe", "--model", str(tiny_model_dir), "--video", f"front={video}", "--frames", "2"])
    stderr = capsys.readouterr().err

    assert code == 2
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and str(video) in error_lines[0] and f"{SIDE}x{SIDE}" in error_lines[0], (
        stderr
    )


def test_camera_sized_images_still_decode(tmp_path):
    """A 12-megapixel frame, the size of a large vehicle camera, is read as before."""
    frame = np.zeros((3000, 4000, 3), np.uint8)
    frame[:, :, 0] = 200
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), frame)
    from_file = read_image(path)
    from_message = message_to_rgb(SimpleNamespace(format="png", data=path.read_bytes()))
    assert from_file.shape == from_message.shape == (3000, 4000, 3)
    assert from_file[0, 0, 2] == from_message[0, 0, 2] == 200  # blue, written as BGR
