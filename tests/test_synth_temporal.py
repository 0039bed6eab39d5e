"""synthdrive's temporal questions: their truth on hand-built scene graphs, where the answer is
known from the motion alone."""

import pytest

from vts_drive.synth.render import LIGHT_INSTANCE
from vts_drive.synth.scene import Scene, SceneObject, TrafficLight
from vts_drive.synth.truth import TEMPORAL_QUESTIONS, question_kind, window_qa

FRAMES = 8


def road(ego_speed: float = 6.0, ego_accel: float = 0.0) -> Scene:
    """Two lanes, the ego car in the left one (y = 0); the right lane's centre is y = -3.5 and
    the road spans y = -5.25 .. 1.75. 4 fps: a 4-frame window lasts 0.75 s."""
    return Scene(
        "hand_built",
        FRAMES,
        4.0,
        lanes=2,
        ego_lane=0,
        ego_speed=ego_speed,
        time_of_day="day",
        weather="clear",
        hazard="none",
        hazard_frame=None,
        ego_accel=ego_accel,
    )


def vehicle(id: int, x: float, y: float, speed: float, **move) -> SceneObject:
    return SceneObject(id, "vehicle", x, y, speed, 0.0, 4.4, 1.8, 1.5, "red", **move)


def walker(id: int, kind: str, y: float, **move) -> SceneObject:
    return SceneObject(id, kind, 10.0, y, 0.0, 0.0, 0.5, 0.9, 1.75, "0", **move)


def seen_throughout(scene: Scene, front: list[int] | None = None) -> list[dict[str, list[int]]]:
    """Every object (and the light) in the front camera in every frame."""
    ids = (
        front
        if front is not None
        else [o.id + 1 for o in scene.objects] + ([LIGHT_INSTANCE] if scene.light else [])
    )
    return [{"front": list(ids), "front_left": [], "front_right": []} for _ in range(FRAMES)]


def answer(scene: Scene, key: str, start: int = 3, end: int = 6, visible=None) -> str:
    qa = window_qa(scene, visible if visible is not None else seen_throughout(scene), start, end)
    return dict((question, reply) for question, reply, _ in qa)[TEMPORAL_QUESTIONS[key]]


@pytest.mark.parametrize(
    "lead_speed, expected", [(2.0, "approaching"), (10.0, "pulling away"), (6.1, "keeping its distance")]
)
def test_lead_vehicle_gap(lead_speed, expected):
    scene = road(ego_speed=6.0)
    scene.objects = [
        vehicle(0, 15.0, 0.2, lead_speed),
        vehicle(1, 8.0, -3.5, 0.0),
    ]  # the other lane's car is not the lead
    assert answer(scene, "lead_vehicle") == expected


def test_lead_vehicle_is_in_the_ego_lane_and_in_view():
    scene = road()
    scene.objects = [vehicle(0, 15.0, -3.5, 2.0)]
    assert answer(scene, "lead_vehicle") == "none"
    scene.objects = [vehicle(0, 15.0, 0.0, 2.0)]
    assert answer(scene, "lead_vehicle", visible=seen_throughout(scene, front=[])) == "none"


def test_a_stopped_ego_car_behind_a_stopped_vehicle_keeps_its_distance():
    scene = road(ego_speed=0.0)
    scene.objects = [vehicle(0, 12.0, 0.0, 0.0)]
    assert answer(scene, "lead_vehicle") == "keeping its distance"
    assert answer(scene, "ego_motion") == "stopped"


def test_light_change_says_from_what():
    scene = road()
    scene.light = TrafficLight(30.0, -6.0, ["red"] * 5 + ["green"] * 3)
    assert answer(scene, "light_change", 2, 5) == "red to green"
    assert answer(scene, "light_change", 5, 7) == "no change"
    assert answer(scene, "light_change", 0, 3) == "no change"
    scene.light = TrafficLight(30.0, -6.0, ["green", "green", "yellow", "yellow", "red", "red", "red", "red"])
    assert answer(scene, "light_change", 0, 3) == "green to yellow"
    assert answer(scene, "light_change", 1, 4) == "green to red"
    assert answer(scene, "light_change", 3, 6) == "yellow to red"
    assert answer(scene, "light_change", 3, 6, visible=seen_throughout(scene, front=[])) == "none"


def test_road_users_entering_and_leaving_the_road():
    scene = road()
    # from the left kerb (y = 2.35) across to beyond the right one, at 3 m/s from t = 0
    crossing = walker(0, "pedestrian", 2.35, hazard_start=0.0, hazard_vy=-3.0, hazard_y_end=-6.25)
    scene.objects = [crossing]
    assert (
        answer(scene, "road_user", 0, 3) == "a pedestrian is entering the road"
    )  # y 2.35 -> 0.1, the middle is -1.75
    assert answer(scene, "road_user", 4, 7) == "a pedestrian is leaving the road"  # y -0.65 -> -2.9
    stepping_off = walker(0, "cyclist", -4.55, hazard_start=0.0, hazard_vy=-1.5, hazard_y_end=-6.25)
    scene.objects = [stepping_off]
    assert answer(scene, "road_user", 0, 3) == "a cyclist is leaving the road"
    scene.objects = [walker(0, "pedestrian", 2.95)]  # standing on the sidewalk
    assert answer(scene, "road_user") == "no"
    crossing_done = walker(0, "pedestrian", 2.35, hazard_start=-5.0, hazard_vy=-3.0, hazard_y_end=-6.25)
    scene.objects = [crossing_done]
    assert answer(scene, "road_user") == "no"


def test_lane_change_in_progress_into_or_out_of_the_ego_lane():
    scene = road()
    cut_in = vehicle(0, 12.0, -3.5, 6.0, hazard_start=0.5, hazard_vx=6.0, hazard_vy=2.4, hazard_y_end=0.0)
    scene.objects = [cut_in]
    assert answer(scene, "lane_change", 2, 5) == "into our lane"
    assert answer(scene, "lane_change", 0, 1) == "no"  # before it starts to move
    cut_in.hazard_start = -5.0  # long finished: the car is simply in the ego lane
    assert answer(scene, "lane_change") == "no"
    cut_out = vehicle(0, 12.0, 0.0, 6.0, hazard_start=0.5, hazard_vx=6.0, hazard_vy=-2.4, hazard_y_end=-3.5)
    scene.objects = [cut_out]
    assert answer(scene, "lane_change", 2, 5) == "out of our lane"


@pytest.mark.parametrize(
    "speed, accel, start, end, expected",
    [
        (6.0, 0.0, 3, 6, "keeping its speed"),
        (1.0, 3.0, 3, 6, "speeding up"),
        (8.0, -3.0, 1, 4, "slowing down"),
        (3.0, -4.0, 5, 7, "stopped"),  # stopped at t = 0.75 s, before the window
        (3.0, -4.0, 2, 5, "slowing down"),  # stops during the window
        (0.0, 0.0, 3, 6, "stopped"),
    ],
)
def test_ego_motion(speed, accel, start, end, expected):
    assert answer(road(speed, accel), "ego_motion", start, end) == expected


def test_objects_that_come_into_view_or_leave_it():
    scene = road()
    scene.objects = [vehicle(0, 10.0, -3.5, 6.0), walker(1, "pedestrian", 3.0)]
    nothing = [{"front": [], "front_left": [], "front_right": []} for _ in range(FRAMES)]
    visible = [dict(frame) for frame in nothing]
    for t in range(4, FRAMES):
        visible[t] = {"front": [], "front_left": [1], "front_right": []}  # the car comes into the left camera
    assert answer(scene, "appeared", 2, 5, visible) == "a vehicle appeared"
    assert answer(scene, "appeared", 4, 7, visible) == "no"
    visible = [
        {"front": [2], "front_left": [], "front_right": []} if t < 3 else frame
        for t, frame in enumerate(nothing)
    ]
    assert answer(scene, "appeared", 1, 4, visible) == "a pedestrian disappeared"
    # moving from one camera into another is not appearing
    visible = [
        {"front": [1] if t < 4 else [], "front_left": [] if t < 4 else [1], "front_right": []}
        for t in range(FRAMES)
    ]
    assert answer(scene, "appeared", 2, 5, visible) == "no"


def test_one_frame_has_no_temporal_questions_and_each_kind_is_named():
    scene = road()
    assert window_qa(scene, seen_throughout(scene), 5, 5) == []
    qa = window_qa(scene, seen_throughout(scene), 2, 5)
    assert [question for question, _, _ in qa] == list(TEMPORAL_QUESTIONS.values())
    assert {question_kind(question) for question, _, _ in qa} == {"temporal"}
    assert question_kind("What colour is the traffic light?") == "present"
