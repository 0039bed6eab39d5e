"""Ground truth of a synthdrive window, derived from the scene graph and what each camera shows.

Present-tense truth belongs to the frame a window ends on ("now"); temporal
truth (`window_qa`) to the window's first and last frames together, so no single
frame answers it: whether the lead vehicle's gap shrinks, whether a light
changed and from what, whether someone steps onto the road or off it, whether a
vehicle is moving into or out of the ego lane, how the ego car's speed changes,
and whether something came into view or left it.

The important object is, in this order:
a pedestrian on the road, a red or yellow light, a car cutting into the ego
lane, a car close ahead in the ego lane; otherwise nothing is a risk. Only
objects visible in the front camera qualify, since DRAMA boxes live there.
Answers are short canonical strings; each also has a sentence paraphrase (the
second LingoQA reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vts_drive.report import format_risk
from vts_drive.synth.render import LIGHT_INSTANCE
from vts_drive.synth.scene import LANE_WIDTH, Scene, SceneObject

NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six"]
QUESTIONS = {
    "pedestrian_ahead": "Is there a pedestrian in front of the car?",
    "vehicles_ahead": "How many vehicles are in the front camera?",
    "light": "What colour is the traffic light?",
    "nearest_lane": "Which lane is the nearest vehicle ahead in?",
    "vehicle_left": "Is there a vehicle in the left camera?",
    "vehicle_right": "Is there a vehicle in the right camera?",
    "cyclist": "Is there a cyclist?",
    "action": "What should the ego car do?",
    "reason": "Why should the ego car do that?",
}
TEMPORAL_QUESTIONS = {
    "lead_vehicle": "Is the vehicle ahead in our lane approaching or pulling away?",
    "light_change": "Did the traffic light change, and from what?",
    "road_user": "Is a pedestrian or cyclist entering or leaving the road?",
    "lane_change": "Is a vehicle changing lanes into or out of our lane?",
    "ego_motion": "Is the ego car speeding up, slowing down or stopped?",
    "appeared": "Did a vehicle, pedestrian or cyclist appear or disappear?",
}
QUESTION_KEYS = {text: key for key, text in (QUESTIONS | TEMPORAL_QUESTIONS).items()}
# a window's rates of change (per second) below these count as no change
STILL_GAP_RATE = 1.0  # m/s of the lead vehicle's gap
STILL_ACCELERATION = 1.0  # m/s^2 of the ego car's speed
STILL_SPEED = 0.2  # m/s: the ego car is stopped
MIN_SIDEWAYS_SPEED = 0.5  # m/s: a road user or vehicle is moving sideways


@dataclass
class Visible:
    """An object as one camera sees it in one frame."""

    instance: int
    pixels: int
    box: tuple[int, int, int, int]  # visible pixels' bounding box, x1 y1 x2 y2 (exclusive)


@dataclass
class FrameTruth:
    description: str
    risk_object: str | None  # None: nothing is a risk
    risk_box: list[float] | None  # normalised to the front image
    risk_caption: str
    risk_answer: str  # what the model is trained to answer to the risk prompt
    action: str
    reason: str
    qa: list[tuple[str, str, str]] = field(default_factory=list)  # (question, answer, paraphrase)


def visible_objects(instances: np.ndarray, min_pixels: int) -> dict[int, Visible]:
    found = {}
    ids, counts = np.unique(instances, return_counts=True)
    for instance, count in zip(ids.tolist(), counts.tolist()):
        if instance == 0 or count < min_pixels:
            continue
        rows, cols = np.nonzero(instances == instance)
        found[instance] = Visible(
            instance, count, (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        )
    return found


def question_kind(question: str) -> str:
    """ "temporal" for the questions whose answer needs the window's past, else "present"."""
    return "temporal" if question in TEMPORAL_QUESTIONS.values() else "present"


def visible_ids(views: dict[str, dict[int, Visible]]) -> dict[str, list[int]]:
    """The instances each camera shows, as stored with the scene."""
    return {camera: sorted(seen) for camera, seen in views.items()}


def _side(y: float) -> str:
    return "left" if y > 0 else "right"


def frame_truth(
    scene: Scene, frame: int, views: dict[str, dict[int, Visible]], image_size: tuple[int, int]
) -> FrameTruth:
    time = scene.time(frame)
    travel = scene.ego_travel(time)
    width, height = image_size
    by_instance = {obj.id + 1: obj for obj in scene.objects}
    front = views.get("front", {})
    front_objects = [by_instance[i] for i in front if i in by_instance]

    def lateral(obj: SceneObject) -> float:
        return obj.position(time, travel)[1]

    def ahead(obj: SceneObject) -> float:
        return obj.position(time, travel)[0]

    light = scene.light.states[frame] if scene.light is not None and LIGHT_INSTANCE in front else "none"
    road_half = (scene.road_left, scene.road_right)
    vehicles_ahead = sorted((o for o in front_objects if o.kind == "vehicle" and ahead(o) > 0), key=ahead)
    pedestrians_on_road = [
        o for o in front_objects if o.kind == "pedestrian" and road_half[1] < lateral(o) < road_half[0]
    ]
    cutting_in = [
        o
        for o in vehicles_ahead
        if _cuts_in(o) and time > o.hazard_start and abs(lateral(o)) < 0.75 * LANE_WIDTH
    ]
    close_ahead = [o for o in vehicles_ahead if abs(lateral(o)) < LANE_WIDTH / 2 and ahead(o) < 11.0]

    risk_instance, risk_object, caption, action, reason = None, None, "", "keep going", "the road is clear"
    if pedestrians_on_road:
        pedestrian = pedestrians_on_road[0]
        side = _side(pedestrian.y)
        risk_instance, risk_object = pedestrian.id + 1, "pedestrian"
        caption = f"a pedestrian is crossing the road from the {side}, the ego car must stop"
        action, reason = "stop", "a pedestrian is crossing"
    elif light == "red":
        risk_instance, risk_object = LIGHT_INSTANCE, "traffic light"
        caption, action, reason = (
            "the traffic light ahead is red, the ego car must stop",
            "stop",
            "the light is red",
        )
    elif light == "yellow":
        risk_instance, risk_object = LIGHT_INSTANCE, "traffic light"
        caption, action, reason = (
            "the traffic light ahead is turning red, the ego car should slow down",
            "slow down",
            "the light is turning red",
        )
    elif cutting_in:
        car = cutting_in[0]
        risk_instance, risk_object = car.id + 1, "car"
        caption = f"the {car.colour} car is cutting into the ego lane from the {_side(car.y)}, the ego car should slow down"
        action, reason = "slow down", "a car is cutting in"
    elif close_ahead:
        car = close_ahead[0]
        risk_instance, risk_object = car.id + 1, "car"
        caption = f"the {car.colour} car ahead is close in the ego lane, the ego car should keep its distance"
        action, reason = "slow down", "the car ahead is close"

    risk_box = None
    if risk_instance is not None:
        x1, y1, x2, y2 = front[risk_instance].box
        risk_box = [round(x1 / width, 2), round(y1 / height, 2), round(x2 / width, 2), round(y2 / height, 2)]
        risk_box = [min(1.0, max(0.0, v)) for v in risk_box]
    risk_answer = format_risk(risk_object, "front", risk_box, caption) if risk_box else "none"

    def kinds_in(camera: str, kind: str) -> list[SceneObject]:
        return [
            by_instance[i] for i in views.get(camera, {}) if i in by_instance and by_instance[i].kind == kind
        ]

    everywhere = {i for seen in views.values() for i in seen}
    counts = {
        kind: sum(1 for i in everywhere if i in by_instance and by_instance[i].kind == kind)
        for kind in ("vehicle", "pedestrian", "cyclist")
    }
    nearest = vehicles_ahead[0] if vehicles_ahead else None
    if nearest is None:
        lane = "none"
    elif abs(lateral(nearest)) < LANE_WIDTH / 2:
        lane = "ego"
    else:
        lane = _side(lateral(nearest))
    pedestrian_ahead = "yes" if kinds_in("front", "pedestrian") else "no"
    vehicle_count = len(kinds_in("front", "vehicle"))
    left = "yes" if kinds_in("front_left", "vehicle") else "no"
    right = "yes" if kinds_in("front_right", "vehicle") else "no"
    cyclist = "yes" if counts["cyclist"] else "no"

    qa = [
        (
            QUESTIONS["pedestrian_ahead"],
            pedestrian_ahead,
            "Yes, there is a pedestrian ahead."
            if pedestrian_ahead == "yes"
            else "No, there is no pedestrian ahead.",
        ),
        (
            QUESTIONS["vehicles_ahead"],
            str(vehicle_count),
            f"There are {NUMBER_WORDS[min(vehicle_count, 6)]} vehicles in the front camera.",
        ),
        (
            QUESTIONS["light"],
            light,
            "There is no traffic light." if light == "none" else f"The traffic light is {light}.",
        ),
        (
            QUESTIONS["nearest_lane"],
            lane,
            "There is no vehicle ahead." if lane == "none" else f"It is in the {lane} lane.",
        ),
        (
            QUESTIONS["vehicle_left"],
            left,
            f"{left.capitalize()}, {'there is' if left == 'yes' else 'there is no'} vehicle on the left.",
        ),
        (
            QUESTIONS["vehicle_right"],
            right,
            f"{right.capitalize()}, {'there is' if right == 'yes' else 'there is no'} vehicle on the right.",
        ),
        (
            QUESTIONS["cyclist"],
            cyclist,
            "Yes, there is a cyclist." if cyclist == "yes" else "No, there is no cyclist.",
        ),
        (QUESTIONS["action"], action, f"The ego car should {action}."),
        (QUESTIONS["reason"], reason, f"Because {reason}."),
    ]
    return FrameTruth(
        description=describe(scene, counts, light),
        risk_object=risk_object,
        risk_box=risk_box,
        risk_caption=caption,
        risk_answer=risk_answer,
        action=action,
        reason=reason,
        qa=qa,
    )


def _cuts_in(obj: SceneObject) -> bool:
    """A vehicle whose sideways move ends nearer the ego lane's centre than it started."""
    return (
        obj.hazard_start is not None
        and obj.hazard_y_end is not None
        and abs(obj.hazard_y_end) < abs(obj.world_position(obj.hazard_start)[1])
    )


def window_qa(
    scene: Scene, visible: list[dict[str, list[int]]], start: int, end: int
) -> list[tuple[str, str, str]]:
    """The temporal (question, answer, paraphrase) triples of the window from frame `start` to
    frame `end` (`visible`: per frame, the instances each camera shows); none for one frame."""
    if end <= start:
        return []
    t0, t1 = scene.time(start), scene.time(end)
    duration = t1 - t0
    travel0, travel1 = scene.ego_travel(t0), scene.ego_travel(t1)
    by_instance = {obj.id + 1: obj for obj in scene.objects}
    shown_at_end = {i for ids in visible[end].values() for i in ids}
    front_at_end = [by_instance[i] for i in visible[end].get("front", []) if i in by_instance]

    def moved_sideways(obj: SceneObject) -> float:
        return obj.world_position(t1)[1] - obj.world_position(t0)[1]

    # the nearest vehicle ahead in the ego lane, and how fast its gap changes
    in_lane = [
        o
        for o in front_at_end
        if o.kind == "vehicle"
        and o.position(t1, travel1)[0] > 0
        and abs(o.position(t1, travel1)[1]) < LANE_WIDTH / 2
    ]
    lead = "none"
    if in_lane:
        car = min(in_lane, key=lambda o: o.position(t1, travel1)[0])
        gap_rate = (car.position(t1, travel1)[0] - car.position(t0, travel0)[0]) / duration
        lead = (
            "keeping its distance"
            if abs(gap_rate) < STILL_GAP_RATE
            else "approaching"
            if gap_rate < 0
            else "pulling away"
        )

    light = "none"
    if scene.light is not None and LIGHT_INSTANCE in visible[end].get("front", []):
        before, now = scene.light.states[start], scene.light.states[end]
        light = "no change" if before == now else f"{before} to {now}"

    # a pedestrian or cyclist moving sideways on or beside the road: towards its middle is entering
    middle = (scene.road_left + scene.road_right) / 2
    road_user = "no"
    movers = [
        by_instance[i]
        for i in shown_at_end
        if i in by_instance
        and by_instance[i].kind in ("pedestrian", "cyclist")
        and abs(moved_sideways(by_instance[i])) >= MIN_SIDEWAYS_SPEED * duration
    ]
    movers = [
        o
        for o in movers
        if any(scene.road_right - 1.5 < o.world_position(t)[1] < scene.road_left + 1.5 for t in (t0, t1))
    ]
    if movers:
        mover = min(movers, key=lambda o: abs(o.position(t1, travel1)[0]))
        towards = abs(mover.world_position(t1)[1] - middle) < abs(mover.world_position(t0)[1] - middle)
        road_user = f"a {mover.kind} is {'entering' if towards else 'leaving'} the road"

    changers = [
        o
        for o in front_at_end
        if o.kind == "vehicle" and abs(moved_sideways(o)) >= MIN_SIDEWAYS_SPEED * duration
    ]
    lane_change = "no"
    if changers:
        car = min(changers, key=lambda o: o.position(t1, travel1)[0])
        lane_change = (
            "into our lane"
            if abs(car.world_position(t1)[1]) < abs(car.world_position(t0)[1])
            else "out of our lane"
        )

    speed0, speed1 = scene.ego_speed_at(t0), scene.ego_speed_at(t1)
    acceleration = (speed1 - speed0) / duration
    if max(speed0, speed1) < STILL_SPEED:
        ego = "stopped"
    elif abs(acceleration) < STILL_ACCELERATION:
        ego = "keeping its speed"
    else:
        ego = "speeding up" if acceleration > 0 else "slowing down"

    shown_at_start = {i for ids in visible[start].values() for i in ids}
    appeared = "no"
    for change, ids in (
        ("appeared", shown_at_end - shown_at_start),
        ("disappeared", shown_at_start - shown_at_end),
    ):
        kinds = {by_instance[i].kind for i in ids if i in by_instance}
        kind = next((k for k in ("vehicle", "pedestrian", "cyclist") if k in kinds), None)
        if kind is not None:
            appeared = f"a {kind} {change}"
            break

    return [
        (
            TEMPORAL_QUESTIONS["lead_vehicle"],
            lead,
            "There is no vehicle ahead in our lane." if lead == "none" else f"The vehicle ahead is {lead}.",
        ),
        (
            TEMPORAL_QUESTIONS["light_change"],
            light,
            "There is no traffic light."
            if light == "none"
            else "The light did not change."
            if light == "no change"
            else f"It changed from {light}.",
        ),
        (
            TEMPORAL_QUESTIONS["road_user"],
            road_user,
            "No one is entering or leaving the road." if road_user == "no" else f"Yes, {road_user}.",
        ),
        (
            TEMPORAL_QUESTIONS["lane_change"],
            lane_change,
            "No vehicle is changing lanes."
            if lane_change == "no"
            else f"Yes, a vehicle is moving {lane_change}.",
        ),
        (TEMPORAL_QUESTIONS["ego_motion"], ego, f"The ego car is {ego}."),
        (
            TEMPORAL_QUESTIONS["appeared"],
            appeared,
            "Nothing appeared or disappeared." if appeared == "no" else f"Yes, {appeared}.",
        ),
    ]


def describe(scene: Scene, counts: dict[str, int], light: str) -> str:
    when = {"day": "daytime", "dusk": "dusk", "night": "night"}[scene.time_of_day]
    weather = {"clear": "clear weather", "rain": "rain", "fog": "fog"}[scene.weather]
    lanes = NUMBER_WORDS[scene.lanes]

    def many(count: int, noun: str) -> str:
        return f"{NUMBER_WORDS[min(count, 6)]} {noun}{'' if count == 1 else 's'}"

    light_text = "there is no traffic light" if light == "none" else f"the traffic light is {light}"
    return (
        f"a {lanes} lane road at {when} in {weather}. "
        f"{many(counts['vehicle'], 'vehicle')}, {many(counts['pedestrian'], 'pedestrian')} and "
        f"{many(counts['cyclist'], 'cyclist')} in view, {light_text}."
    )


def keyframe_labels(
    views: list[dict[str, dict[int, Visible]]], truths: list[FrameTruth], camera: str, scene: Scene
) -> list[bool]:
    """A camera's frame is a keyframe when it is the first, when the set of objects it shows
    changes, when the light it shows changes state, or when the risk assessment changes."""
    labels = []
    for frame, view in enumerate(views):
        if frame == 0:
            labels.append(True)
            continue
        shown, before = set(view.get(camera, {})), set(views[frame - 1].get(camera, {}))
        light_changed = (
            scene.light is not None
            and LIGHT_INSTANCE in shown
            and scene.light.states[frame] != scene.light.states[frame - 1]
        )
        risk_changed = (
            camera == "front"
            and truths[frame].risk_answer.split(";")[0] != truths[frame - 1].risk_answer.split(";")[0]
        )
        labels.append(shown != before or light_changed or risk_changed)
    return labels
