"""The vehicle's cameras: pinhole, level, mounted together at the front of the car.

front looks ahead; front_left and front_right are turned 60 degrees to each
side. With a 75 degree horizontal field of view each side camera overlaps the
front one by 15 degrees, so objects cross from one view into the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vts_drive.errors import InputError

MOUNT_HEIGHT = 1.4
NEAR = 0.3  # metres in front of the camera below which geometry is clipped
YAWS = {"front": 0.0, "front_left": 60.0, "front_right": -60.0}
FIELD_OF_VIEW = 75.0


@dataclass(frozen=True)
class Camera:
    name: str
    yaw_deg: float
    width: int
    height: int

    @property
    def focal(self) -> float:
        return (self.width / 2) / math.tan(math.radians(FIELD_OF_VIEW / 2))

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """Ego-frame points [P, 3] (x fwd, y left, z up) -> camera frame [P, 3] (forward, left, up)."""
        yaw = math.radians(self.yaw_deg)
        cos, sin = math.cos(yaw), math.sin(yaw)
        forward = cos * points[:, 0] + sin * points[:, 1]
        left = -sin * points[:, 0] + cos * points[:, 1]
        return np.stack([forward, left, points[:, 2] - MOUNT_HEIGHT], axis=1)

    def project(self, camera_points: np.ndarray) -> np.ndarray:
        """Camera-frame points with forward > 0 -> pixel coordinates [P, 2] (u right, v down)."""
        u = self.width / 2 - self.focal * camera_points[:, 1] / camera_points[:, 0]
        v = self.height / 2 - self.focal * camera_points[:, 2] / camera_points[:, 0]
        return np.stack([u, v], axis=1)


def cameras(names: list[str], width: int, height: int) -> list[Camera]:
    unknown = [n for n in names if n not in YAWS]
    if unknown:
        raise InputError(f"unknown camera name(s) {', '.join(unknown)}; synthdrive has {', '.join(YAWS)}")
    return [Camera(name, YAWS[name], width, height) for name in names]


def clip_polygon(points: np.ndarray) -> np.ndarray:
    """Clip a camera-frame polygon [P, 3] to forward >= NEAR (Sutherland-Hodgman, one plane)."""
    kept = []
    for i in range(len(points)):
        current, following = points[i], points[(i + 1) % len(points)]
        current_in, following_in = current[0] >= NEAR, following[0] >= NEAR
        if current_in:
            kept.append(current)
        if current_in != following_in:
            share = (NEAR - current[0]) / (following[0] - current[0])
            kept.append(current + share * (following - current))
    return np.array(kept).reshape(-1, 3)
