"""The scene graph of one synthdrive clip, sampled from a seeded generator.

Coordinates are the ego car's at time 0: x forward, y left, z up, metres. The
ego car drives along +x, speeding up, slowing down, steady or stopped
(`ego_motion`); everything is drawn relative to where it has got to.
Every scene draws its composition so that the benchmark's answers are balanced
(a model that ignores the images stays near chance), and so that what changes
during a window (the lead vehicle's gap, a light, someone stepping onto the
road, a lane change, the ego car's speed, objects coming into view) varies as
much as what is there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

LANE_WIDTH = 3.5
SIDEWALK_WIDTH = 3.0
POST_SPACING = 12.0  # metres between roadside posts, which show the ego car's own motion
HAZARDS = ("none", "pedestrian", "cut_in", "red_light")
EGO_MOTIONS = ("steady", "speeding_up", "slowing_down", "stopped")
EGO_MAX_SPEED = 12.0
TIMES_OF_DAY = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
VEHICLE_COLOURS = {
    "red": (200, 30, 30),
    "blue": (30, 60, 210),
    "white": (235, 235, 235),
    "black": (25, 25, 30),
    "silver": (150, 155, 165),
}
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
    hazard_y_end: float | None = None  # the sideways move stops here (a lane change ends in its lane)

    def world_position(self, time: float) -> tuple[float, float]:
        if self.hazard_start is None or time <= self.hazard_start:
            return self.x + self.vx * time, self.y + self.vy * time
        before, after = self.hazard_start, time - self.hazard_start
        x = self.x + self.vx * before + self.hazard_vx * after
        y = self.y + self.vy * before + self.hazard_vy * after
        if self.hazard_y_end is not None:
            start = self.y + self.vy * before
            low, high = sorted((start, self.hazard_y_end))
            y = min(max(y, low), high)
        return x, y

    def position(self, time: float, ego_travel: float) -> tuple[float, float]:
        """Centre relative to the ego car at `time`, when the ego car has driven `ego_travel` metres."""
        x, y = self.world_position(time)
        return x - ego_travel, y


@dataclass
class TrafficLight:
    x: float  # distance ahead at t = 0
    y: float  # lateral position of the pole
    states: list[str]  # per frame: red | yellow | green

    def position(self, time: float, ego_travel: float) -> tuple[float, float]:
        return self.x - ego_travel, self.y


@dataclass
class Scene:
    scene_id: str
    frames: int
    fps: float
    lanes: int
    ego_lane: int  # 0 = leftmost
    ego_speed: float  # at t = 0
    time_of_day: str
    weather: str
    hazard: str
    hazard_frame: int | None
    ego_accel: float = 0.0  # m/s^2; the speed stays within [0, EGO_MAX_SPEED]
    post_offset: float = 0.0  # where the first roadside post stands, metres ahead at t = 0
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

    def ego_speed_at(self, time: float) -> float:
        return float(min(max(self.ego_speed + self.ego_accel * time, 0.0), EGO_MAX_SPEED))

    def ego_travel(self, time: float) -> float:
        """Metres the ego car has driven by `time`: the speed changes at ego_accel until it
        reaches 0 or EGO_MAX_SPEED, then stays."""
        if self.ego_accel == 0.0:
            return self.ego_speed * time
        limit = 0.0 if self.ego_accel < 0 else EGO_MAX_SPEED
        ramp = min(time, (limit - self.ego_speed) / self.ego_accel)
        return self.ego_speed * ramp + 0.5 * self.ego_accel * ramp**2 + limit * (time - ramp)

    @property
    def travel(self) -> float:
        """Metres the ego car drives during the clip."""
        return self.ego_travel(self.time(self.frames - 1))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        data = dict(data)
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
        ego_speed=0.0,
        time_of_day=str(rng.choice(TIMES_OF_DAY, p=[0.5, 0.3, 0.2])),
        weather=str(rng.choice(WEATHERS, p=[0.6, 0.25, 0.15])),
        hazard=str(rng.choice(HAZARDS)),
        hazard_frame=int(rng.integers(2, max(3, frames - 2))),
        post_offset=float(rng.uniform(0.0, POST_SPACING)),
    )
    _sample_ego_motion(rng, scene)
    next_id = iter(range(1000))
    has_light = scene.hazard == "red_light" or rng.random() < 0.6
    if has_light:
        scene.light = TrafficLight(
            x=float(rng.uniform(8.0, 15.0)) + scene.travel,  # still ahead and in view at the end
            y=scene.road_right - 0.8,
            states=light_states(rng, scene),
        )
    # a lane change happens 8 to 13 m ahead: a lead vehicle then keeps clear of it
    lane_change = "into" if scene.hazard == "cut_in" else "out of" if rng.random() < 0.6 else None
    if lane_change is not None:
        _add_lane_change(rng, scene, next_id, into_ego_lane=lane_change == "into")
    _add_lead_vehicle(rng, scene, next_id, min_gap=18.0 if lane_change else 7.0)
    _add_vehicles_ahead(rng, scene, next_id)
    _add_side_vehicles(rng, scene, next_id)
    _add_pedestrians(rng, scene, next_id)
    if rng.random() < 0.7:
        _add_cyclist(rng, scene, next_id)
    if scene.hazard not in ("red_light", "cut_in", "pedestrian"):
        scene.hazard_frame = None
    return scene


def _sample_ego_motion(rng: np.random.Generator, scene: Scene) -> None:
    """Accelerations of 2.5 to 4 m/s^2 change the speed by 2 to 3 m/s over a 4-frame window
    at 4 fps, so the change shows between a window's first and last frames."""
    motion = str(rng.choice(EGO_MOTIONS))
    if motion == "steady":
        scene.ego_speed = float(rng.uniform(4.0, 9.0))
    elif motion == "speeding_up":
        scene.ego_speed, scene.ego_accel = float(rng.uniform(0.0, 3.0)), float(rng.uniform(2.5, 4.0))
    elif motion == "slowing_down":
        scene.ego_speed, scene.ego_accel = float(rng.uniform(6.0, 9.0)), -float(rng.uniform(2.5, 4.0))


def light_states(rng: np.random.Generator, scene: Scene) -> list[str]:
    """A light that turns red (the red-light hazard), one that turns green, or one that stays."""
    if scene.hazard == "red_light":
        turn = scene.hazard_frame
        return ["green" if t < turn - 2 else "yellow" if t < turn else "red" for t in range(scene.frames)]
    if rng.random() < 0.4:
        turn = int(rng.integers(2, max(3, scene.frames - 1)))
        return ["red" if t < turn else "green" for t in range(scene.frames)]
    return [str(rng.choice(["red", "yellow", "green"], p=[0.35, 0.2, 0.45]))] * scene.frames


def _vehicle(next_id, rng: np.random.Generator, x: float, y: float, speed: float, **move) -> SceneObject:
    colour = str(rng.choice(list(VEHICLE_COLOURS)))
    length, width, height = (
        float(rng.uniform(4.0, 4.8)),
        float(rng.uniform(1.7, 1.9)),
        float(rng.uniform(1.4, 1.6)),
    )
    return SceneObject(next(next_id), "vehicle", x, y, speed, 0.0, length, width, height, colour, **move)


def _add_lead_vehicle(rng: np.random.Generator, scene: Scene, next_id, min_gap: float) -> None:
    """The vehicle ahead in the ego lane: closing in, pulling away or keeping the gap, by 2.5 to
    6 m/s (a gap change of 2 to 4.5 m over a 4-frame window) or within 0.3 m/s."""
    if rng.random() < 0.25:
        return
    relative = float(rng.choice([-1.0, 1.0, 0.0])) * float(rng.uniform(2.5, 6.0))
    if relative == 0.0:
        relative = float(rng.uniform(-0.3, 0.3))
    closing = relative < 0
    gap = (
        float(rng.uniform(max(min_gap, 14.0), max(min_gap, 14.0) + 10.0))
        if closing
        else float(rng.uniform(min_gap, min_gap + 7.0))
    )
    speed = max(0.0, scene.ego_speed_at(scene.time(scene.frames - 1) / 2) + relative)
    scene.objects.append(_vehicle(next_id, rng, gap, 0.0, speed))


def _add_vehicles_ahead(rng: np.random.Generator, scene: Scene, next_id) -> None:
    """Vehicles ahead in the other lanes."""
    taken: list[tuple[int, float]] = []
    for _ in range(int(rng.integers(0, 3))):
        for _attempt in range(20):
            lane = int(rng.integers(0, scene.lanes))
            x = float(rng.uniform(7.0, 32.0))
            if lane != scene.ego_lane and all(lane != other or abs(x - ox) > 9.0 for other, ox in taken):
                break
        else:
            continue
        taken.append((lane, x))
        scene.objects.append(
            _vehicle(
                next_id, rng, x, scene.lane_centre(lane), scene.ego_speed + float(rng.uniform(-2.0, 2.0))
            )
        )


def _add_side_vehicles(rng: np.random.Generator, scene: Scene, next_id) -> None:
    """Vehicles beside the ego car, seen by the side cameras: level with it, overtaking it from
    behind (they come into view), or being overtaken (they leave it)."""
    for lane in (scene.ego_lane - 1, scene.ego_lane + 1):
        if 0 <= lane < scene.lanes and rng.random() < 0.7:
            kind = str(rng.choice(["level", "overtaking", "overtaken"], p=[0.2, 0.4, 0.4]))
            if kind == "level":
                x, speed = float(rng.uniform(-2.0, 4.0)), scene.ego_speed + float(rng.uniform(-0.5, 0.5))
            elif kind == "overtaking":
                x, speed = float(rng.uniform(-12.0, -6.0)), scene.ego_speed + float(rng.uniform(5.0, 9.0))
            else:
                x, speed = (
                    float(rng.uniform(1.0, 6.0)),
                    max(0.0, scene.ego_speed - float(rng.uniform(5.0, 9.0))),
                )
            scene.objects.append(_vehicle(next_id, rng, x, scene.lane_centre(lane), speed))


def _add_pedestrians(rng: np.random.Generator, scene: Scene, next_id) -> None:
    if rng.random() < 0.55:  # walking along a sidewalk, no hazard
        side = scene.road_left + 1.2 if rng.random() < 0.5 else scene.road_right - 1.2
        scene.objects.append(
            SceneObject(
                next(next_id),
                "pedestrian",
                float(rng.uniform(6.0, 20.0)) + 0.5 * scene.travel,
                side,
                float(rng.uniform(-1.5, 1.5)),
                0.0,
                0.5,
                0.9,
                1.75,
                str(int(rng.integers(len(CLOTHES)))),
            )
        )
    if scene.hazard == "pedestrian":
        # crossing from one kerb to the other; starting before the clip, the pedestrian is met
        # part-way across, so windows see people stepping onto the road and leaving it
        from_left = rng.random() < 0.5
        edge, far = (
            (scene.road_left + 0.6, scene.road_right - 1.0)
            if from_left
            else (scene.road_right - 0.6, scene.road_left + 1.0)
        )
        start = float(rng.uniform(-1.5, scene.time(scene.frames - 2)))
        scene.hazard_frame = max(0, int(np.ceil(start * scene.fps)))
        scene.objects.append(
            SceneObject(
                next(next_id),
                "pedestrian",
                float(rng.uniform(6.0, 10.0)) + scene.ego_travel(max(start, 0.0) + 0.5),
                edge,
                0.0,
                0.0,
                0.5,
                0.9,
                1.75,
                str(int(rng.integers(len(CLOTHES)))),
                hazard_start=start,
                hazard_vy=(-1.0 if from_left else 1.0) * float(rng.uniform(2.4, 3.2)),
                hazard_y_end=far,
            )
        )


def _add_cyclist(rng: np.random.Generator, scene: Scene, next_id) -> None:
    """A cyclist riding along the road's right edge; some swerve off the road onto the sidewalk,
    or off the sidewalk onto the road, during the clip."""
    on_road, kerb = scene.road_right + 0.7, scene.road_right - 1.0
    move = str(rng.choice(["ride", "enter", "leave"], p=[0.2, 0.4, 0.4]))
    speed = max(1.5, scene.ego_speed + float(rng.uniform(-3.5, -1.5)))
    start_y, swerve = on_road, {}
    if move != "ride":
        start_y, end_y = (kerb, on_road) if move == "enter" else (on_road, kerb)
        swerve = {
            "hazard_start": float(rng.uniform(-0.3, scene.time(scene.frames - 2))),
            "hazard_vx": speed,
            "hazard_vy": float(rng.uniform(1.2, 1.8)) * (1.0 if end_y > start_y else -1.0),
            "hazard_y_end": end_y,
        }
    scene.objects.append(
        SceneObject(
            next(next_id),
            "cyclist",
            float(rng.uniform(5.0, 18.0)),
            start_y,
            speed,
            0.0,
            1.8,
            0.6,
            1.7,
            str(int(rng.integers(len(CLOTHES)))),
            **swerve,
        )
    )


def _add_lane_change(rng: np.random.Generator, scene: Scene, next_id, into_ego_lane: bool) -> None:
    """A vehicle ahead changing lanes at 2 to 2.8 m/s sideways, into the ego lane from a
    neighbouring one (the cut-in hazard) or out of it; the move ends in the new lane."""
    neighbours = [lane for lane in (scene.ego_lane - 1, scene.ego_lane + 1) if 0 <= lane < scene.lanes]
    other = scene.lane_centre(int(rng.choice(neighbours)))
    start_y, end_y = (other, 0.0) if into_ego_lane else (0.0, other)
    speed = scene.ego_speed + float(rng.uniform(-1.0, 1.0))
    start = (
        scene.time(scene.hazard_frame)
        if into_ego_lane
        else float(rng.uniform(-0.5, scene.time(scene.frames - 2)))
    )
    vy = float(rng.uniform(2.0, 2.8)) * (1.0 if end_y > start_y else -1.0)
    scene.objects.append(
        _vehicle(
            next_id,
            rng,
            float(rng.uniform(8.0, 13.0)),
            start_y,
            speed,
            hazard_start=start,
            hazard_vx=speed,
            hazard_vy=vy,
            hazard_y_end=end_y,
        )
    )
