"""The scene graph of one synthdrive clip, sampled from a seeded generator.

Coordinates are the ego car's at time 0: x forward, y left, z up, metres. The
ego car drives along +x at `ego_speed`; everything is moved relative to it.
Every scene draws its composition so that the benchmark's answers are balanced
(a model that ignores the images stays near chance).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

LANE_WIDTH = 3.5
SIDEWALK_WIDTH = 3.0
HAZARDS = ("none", "pedestrian", "cut_in", "red_light")
TIMES_OF_DAY = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
VEHICLE_COLOURS = {"red": (200, 30, 30), "blue": (30, 60, 210), "white": (235, 235, 235), "black": (25, 25, 30), "silver": (150, 155, 165)}
CLOTHES = [(230, 40, 200), (255, 140, 0), (250, 230, 20), (40, 220, 220)]


@dataclass
class SceneObject:
    id: int
    kind: str  # vehicle | pedestrian | cyclist
    x: float  # position at t = 0 (ego frame at t = 0)
    y: float
    vx: float  # world velocity, m/s
    vy: float
    length: float
    width: float
    height: float
    colour: str  # a VEHICLE_COLOURS key for vehicles, else an index into CLOTHES
    hazard_start: float | None = None  # seconds; from then on the object moves by (hazard_vx, hazard_vy)
    hazard_vx: float = 0.0
    hazard_vy: float = 0.0

    def position(self, time: float, ego_speed: float) -> tuple[float, float]:
        """Centre relative to the ego car at `time`."""
        if self.hazard_start is None or time <= self.hazard_start:
            x, y = self.x + self.vx * time, self.y + self.vy * time
        else:
            before, after = self.hazard_start, time - self.hazard_start
            x = self.x + self.vx * before + self.hazard_vx * after
            y = self.y + self.vy * before + self.hazard_vy * after
        return x - ego_speed * time, y


@dataclass
class TrafficLight:
    x: float  # distance ahead at t = 0
    y: float  # lateral position of the pole
    states: list[str]  # per frame: red | yellow | green

    def position(self, time: float, ego_speed: float) -> tuple[float, float]:
        return self.x - ego_speed * time, self.y


@dataclass
class Scene:
    scene_id: str
    frames: int
    fps: float
    lanes: int
    ego_lane: int  # 0 = leftmost
    ego_speed: float
    time_of_day: str
    weather: str
    hazard: str
    hazard_frame: int | None
    objects: list[SceneObject] = field(default_factory=list)
    light: TrafficLight | None = None

    def lane_centre(self, lane: int) -> float:
        return (self.ego_lane - lane) * LANE_WIDTH

    @property
    def road_left(self) -> float:
        return (self.ego_lane + 0.5) * LANE_WIDTH

    @property
    def road_right(self) -> float:
        return (self.ego_lane - self.lanes + 0.5) * LANE_WIDTH

    def time(self, frame: int) -> float:
        return frame / self.fps

    @property
    def travel(self) -> float:
        """Metres the ego car drives during the clip."""
        return self.ego_speed * self.time(self.frames - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        objects = [SceneObject(**o) for o in data.pop("objects")]
        light = data.pop("light")
        return cls(**data, objects=objects, light=TrafficLight(**light) if light else None)


def sample_scene(rng: np.random.Generator, scene_id: str, frames: int, fps: float) -> Scene:
    lanes = int(rng.choice([2, 3]))
    scene = Scene(
        scene_id=scene_id,
        frames=frames,
        fps=fps,
        lanes=lanes,
        ego_lane=int(rng.integers(0, lanes)),
        ego_speed=float(rng.uniform(4.0, 9.0)),
        time_of_day=str(rng.choice(TIMES_OF_DAY, p=[0.5, 0.3, 0.2])),
        weather=str(rng.choice(WEATHERS, p=[0.6, 0.25, 0.15])),
        hazard=str(rng.choice(HAZARDS)),
        hazard_frame=int(rng.integers(2, max(3, frames - 2))),
    )
    next_id = iter(range(1000))
    has_light = scene.hazard == "red_light" or rng.random() < 0.45
    if has_light:
        scene.light = TrafficLight(
            x=float(rng.uniform(8.0, 15.0)) + scene.travel,  # still ahead and in view at the end
            y=scene.road_right - 0.8,
            states=light_states(rng, scene),
        )
    _add_vehicles_ahead(rng, scene, next_id)
    _add_side_vehicles(rng, scene, next_id)
    _add_pedestrians(rng, scene, next_id)
    if rng.random() < 0.5:
        scene.objects.append(
            SceneObject(next(next_id), "cyclist", float(rng.uniform(5.0, 18.0)), scene.road_right + 0.7,
                        scene.ego_speed + float(rng.uniform(-3.5, -1.5)), 0.0, 1.8, 0.6, 1.7, str(int(rng.integers(len(CLOTHES)))))
        )
    if scene.hazard == "cut_in":
        _add_cut_in(rng, scene, next_id)
    if scene.hazard not in ("red_light", "cut_in", "pedestrian"):
        scene.hazard_frame = None
    return scene


def light_states(rng: np.random.Generator, scene: Scene) -> list[str]:
    if scene.hazard == "red_light":
        turn = scene.hazard_frame
        return ["green" if t < turn - 2 else "yellow" if t < turn else "red" for t in range(scene.frames)]
    return [str(rng.choice(["red", "yellow", "green"], p=[0.35, 0.2, 0.45]))] * scene.frames


def _add_vehicles_ahead(rng: np.random.Generator, scene: Scene, next_id) -> None:
    count = int(rng.integers(0, 4))
    taken: list[tuple[int, float]] = []
    for _ in range(count):
        for _attempt in range(20):
            lane = int(rng.integers(0, scene.lanes))
            x = float(rng.uniform(7.0, 32.0))
            if all(lane != other or abs(x - ox) > 9.0 for other, ox in taken):
                break
        else:
            continue
        taken.append((lane, x))
        colour = str(rng.choice(list(VEHICLE_COLOURS)))
        scene.objects.append(
            SceneObject(next(next_id), "vehicle", x, scene.lane_centre(lane), scene.ego_speed + float(rng.uniform(-2.0, 2.0)),
                        0.0, float(rng.uniform(4.0, 4.8)), float(rng.uniform(1.7, 1.9)), float(rng.uniform(1.4, 1.6)), colour)
        )


def _add_side_vehicles(rng: np.random.Generator, scene: Scene, next_id) -> None:
    """Vehicles beside the ego car, seen by the side cameras."""
    for side, lane in (("left", scene.ego_lane - 1), ("right", scene.ego_lane + 1)):
        if 0 <= lane < scene.lanes and rng.random() < 0.6:
            colour = str(rng.choice(list(VEHICLE_COLOURS)))
            scene.objects.append(
                SceneObject(next(next_id), "vehicle", float(rng.uniform(-2.0, 4.0)), scene.lane_centre(lane),
                            scene.ego_speed + float(rng.uniform(-0.5, 0.5)), 0.0, 4.4, 1.8, 1.5, colour)
            )


def _add_pedestrians(rng: np.random.Generator, scene: Scene, next_id) -> None:
    if rng.random() < 0.55:  # walking along a sidewalk, no hazard
        side = scene.road_left + 1.2 if rng.random() < 0.5 else scene.road_right - 1.2
        scene.objects.append(
            SceneObject(next(next_id), "pedestrian", float(rng.uniform(6.0, 20.0)) + 0.5 * scene.travel, side, float(rng.uniform(-1.5, 1.5)), 0.0,
                        0.5, 0.9, 1.75, str(int(rng.integers(len(CLOTHES)))))
        )
    if scene.hazard == "pedestrian":
        from_left = rng.random() < 0.5
        edge = scene.road_left + 0.6 if from_left else scene.road_right - 0.6
        scene.objects.append(
            SceneObject(next(next_id), "pedestrian", float(rng.uniform(5.0, 9.0)) + scene.travel,
                        edge, 0.0, 0.0, 0.5, 0.9, 1.75, str(int(rng.integers(len(CLOTHES)))),
                        hazard_start=scene.time(scene.hazard_frame), hazard_vy=(-1.0 if from_left else 1.0) * float(rng.uniform(2.2, 3.0)))
        )


def _add_cut_in(rng: np.random.Generator, scene: Scene, next_id) -> None:
    neighbours = [lane for lane in (scene.ego_lane - 1, scene.ego_lane + 1) if 0 <= lane < scene.lanes]
    lane = int(rng.choice(neighbours))
    start_y = scene.lane_centre(lane)
    speed = scene.ego_speed + float(rng.uniform(-1.0, 1.0))
    colour = str(rng.choice(list(VEHICLE_COLOURS)))
    scene.objects.append(
        SceneObject(next(next_id), "vehicle", float(rng.uniform(8.0, 13.0)), start_y, speed, 0.0, 4.4, 1.8, 1.5, colour,
                    hazard_start=scene.time(scene.hazard_frame), hazard_vx=speed, hazard_vy=-np.sign(start_y) * float(rng.uniform(2.0, 2.8)))
    )
