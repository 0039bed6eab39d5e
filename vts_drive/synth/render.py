"""Render one camera frame of a scene with OpenCV, plus its class-id and instance maps.

Everything is drawn as flat-shaded 3D boxes and ground polygons, far to near.
The class-id map (see CLASSES) feeds the trainer's auxiliary loss; the instance
map gives each object's visible pixels, so boxes and visibility account for
occlusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vts_drive.synth.camera import Camera, clip_polygon
from vts_drive.synth.scene import CLOTHES, LANE_WIDTH, POST_SPACING, SIDEWALK_WIDTH, VEHICLE_COLOURS, Scene

CLASSES = [
    "background",
    "road",
    "lane_marking",
    "sidewalk",
    "vehicle",
    "pedestrian",
    "cyclist",
    "traffic_light",
    "light_red",
    "light_yellow",
    "light_green",
    "post",
]
CLASS_ID = {name: index for index, name in enumerate(CLASSES)}
LIGHT_INSTANCE = 999  # instance id of the traffic light; objects use their id + 1
LAMP_COLOURS = {"red": (255, 40, 30), "yellow": (255, 200, 0), "green": (40, 255, 90)}
SKY = {
    "day": ((120, 175, 235), (200, 225, 245)),
    "dusk": ((70, 60, 110), (245, 150, 90)),
    "night": ((8, 10, 25), (25, 30, 55)),
}
BRIGHTNESS = {"day": 1.0, "dusk": 0.8, "night": 0.5}


@dataclass
class Frame:
    rgb: np.ndarray  # [H, W, 3] uint8
    labels: np.ndarray  # [H, W] uint8 class ids
    instances: np.ndarray  # [H, W] int32: 0 none, object id + 1, LIGHT_INSTANCE


@dataclass
class Solid:
    """One flat-coloured box to paint: ego-frame centre, half extents, colour, class, instance."""

    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    colour: tuple[int, int, int]
    label: str
    instance: int
    keep_colour: bool = False  # lamps glow at night


def box_faces(centre, half) -> list[np.ndarray]:
    cx, cy, cz = centre
    hx, hy, hz = half
    corners = np.array(
        [[cx + sx * hx, cy + sy * hy, cz + sz * hz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    )
    faces = [[0, 1, 3, 2], [4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]]
    return [corners[face] for face in faces]


def object_solids(scene: Scene, time: float) -> list[Solid]:
    travel = scene.ego_travel(time)
    solids: list[Solid] = []
    for obj in scene.objects:
        x, y = obj.position(time, travel)
        instance = obj.id + 1
        if obj.kind == "vehicle":
            body = VEHICLE_COLOURS[obj.colour]
            cabin = tuple(int(c * 0.45) for c in body)
            solids.append(
                Solid(
                    (x, y, 0.25 + 0.35 * obj.height),
                    (obj.length / 2, obj.width / 2, 0.35 * obj.height),
                    body,
                    "vehicle",
                    instance,
                )
            )
            solids.append(
                Solid(
                    (x - 0.1 * obj.length, y, 0.95 * obj.height),
                    (0.28 * obj.length, 0.45 * obj.width, 0.25 * obj.height),
                    cabin,
                    "vehicle",
                    instance,
                )
            )
        elif obj.kind == "pedestrian":
            clothes = CLOTHES[int(obj.colour)]
            solids.append(
                Solid(
                    (x, y, 0.42),
                    (obj.length / 2, obj.width / 2.4, 0.42),
                    (40, 40, 90),
                    "pedestrian",
                    instance,
                )
            )
            solids.append(
                Solid((x, y, 1.12), (obj.length / 2, obj.width / 2, 0.3), clothes, "pedestrian", instance)
            )
            solids.append(Solid((x, y, 1.6), (0.14, 0.14, 0.16), (225, 180, 140), "pedestrian", instance))
        else:  # cyclist
            clothes = CLOTHES[int(obj.colour)]
            solids.append(Solid((x, y, 0.5), (obj.length / 2, 0.1, 0.42), (60, 60, 60), "cyclist", instance))
            solids.append(Solid((x, y, 1.25), (0.25, obj.width / 2, 0.33), clothes, "cyclist", instance))
            solids.append(Solid((x, y, 1.72), (0.14, 0.14, 0.14), (240, 240, 240), "cyclist", instance))
    if scene.light is not None:
        x, y = scene.light.position(time, travel)
        state = scene.light.states[min(int(round(time * scene.fps)), len(scene.light.states) - 1)]
        # a stylised, oversized signal so it stays legible at the model's resolution; the pole is
        # not part of the light's instance (its box is the signal head)
        solids.append(Solid((x, y, 1.2), (0.1, 0.1, 1.2), (70, 70, 75), "traffic_light", 0))
        solids.append(Solid((x, y, 3.7), (0.25, 0.7, 1.3), (20, 20, 22), "traffic_light", LIGHT_INSTANCE))
        for lamp, height in (("red", 4.5), ("yellow", 3.7), ("green", 2.9)):
            on = lamp == state
            colour = LAMP_COLOURS[lamp] if on else tuple(c // 5 for c in LAMP_COLOURS[lamp])
            label = f"light_{lamp}" if on else "traffic_light"
            solids.append(
                Solid(
                    (x - 0.27, y, height), (0.03, 0.55, 0.35), colour, label, LIGHT_INSTANCE, keep_colour=on
                )
            )
    # roadside posts on both sidewalks: static, so they stream past as fast as the ego car drives
    first = scene.post_offset - travel
    first -= POST_SPACING * np.floor(
        (first + 15.0) / POST_SPACING
    )  # the nearest post at or beyond 15 m behind
    for x in np.arange(first, 90.0, POST_SPACING):
        for y in (scene.road_left + 2.2, scene.road_right - 2.2):
            solids.append(Solid((float(x), y, 1.5), (0.12, 0.12, 1.5), (105, 105, 112), "post", 0))
    return solids


def ground_polygons(scene: Scene, time: float) -> list[tuple[np.ndarray, tuple[int, int, int], str]]:
    """Sidewalks, road and lane markings as ego-frame polygons on z = 0, far extent 90 m."""
    near, far = -15.0, 90.0
    left, right = scene.road_left, scene.road_right

    def strip(y_low, y_high, x_low=near, x_high=far):
        return np.array(
            [[x_low, y_low, 0], [x_high, y_low, 0], [x_high, y_high, 0], [x_low, y_high, 0]], dtype=float
        )

    polygons = [
        (strip(left, left + SIDEWALK_WIDTH), (150, 150, 145), "sidewalk"),
        (strip(right - SIDEWALK_WIDTH, right), (150, 150, 145), "sidewalk"),
        (strip(right, left), (70, 70, 75), "road"),
        (strip(left - 0.25, left - 0.1), (230, 230, 230), "lane_marking"),
        (strip(right + 0.1, right + 0.25), (230, 230, 230), "lane_marking"),
    ]
    shift = scene.ego_travel(time) % 9.0
    for boundary in range(1, scene.lanes):
        y = left - boundary * LANE_WIDTH
        for start in np.arange(near - 9.0, far, 9.0):
            x0 = start - shift
            polygons.append((strip(y - 0.08, y + 0.08, x0, x0 + 3.0), (230, 230, 230), "lane_marking"))
    return polygons


def render(scene: Scene, camera: Camera, frame: int, rng: np.random.Generator) -> Frame:
    """`rng` only draws weather effects (rain streaks)."""
    time = scene.time(frame)
    height, width = camera.height, camera.width
    brightness = BRIGHTNESS[scene.time_of_day]
    top, horizon = SKY[scene.time_of_day]
    rows = np.linspace(0.0, 1.0, height // 2)[:, None]
    sky = (np.array(top)[None] * (1 - rows) + np.array(horizon)[None] * rows).astype(np.uint8)
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[: height // 2] = sky[:, None, :]
    rgb[height // 2 :] = (np.array((105, 125, 85)) * brightness).astype(np.uint8)
    labels = np.zeros((height, width), dtype=np.uint8)
    instances = np.zeros((height, width), dtype=np.int32)

    def paint(points: np.ndarray, colour, label: str, instance: int) -> None:
        clipped = clip_polygon(camera.to_camera(points))
        if len(clipped) < 3:
            return
        pixels = np.round(camera.project(clipped) * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        cv2.fillPoly(rgb, [pixels], tuple(int(c) for c in colour), lineType=cv2.LINE_8, shift=4)
        cv2.fillPoly(labels, [pixels], CLASS_ID[label], lineType=cv2.LINE_8, shift=4)
        cv2.fillPoly(instances, [pixels], instance, lineType=cv2.LINE_8, shift=4)

    for polygon, colour, label in ground_polygons(scene, time):
        paint(polygon, np.array(colour) * brightness, label, 0)
    solids = object_solids(scene, time)
    depth = [camera.to_camera(np.array([s.centre]))[0, 0] for s in solids]
    for index in np.argsort(depth, kind="stable")[::-1]:  # far to near
        solid = solids[index]
        colour = np.array(solid.colour) * (1.0 if solid.keep_colour else brightness)
        for face in box_faces(solid.centre, solid.half):
            paint(face, colour, solid.label, solid.instance)

    if scene.weather == "rain":
        for _ in range(60):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.line(rgb, (x, y), (x - 2, y + 7), (190, 190, 200), 1)
    elif scene.weather == "fog":
        rgb = cv2.addWeighted(rgb, 0.65, np.full_like(rgb, 185), 0.35, 0)
    return Frame(rgb, labels, instances)
