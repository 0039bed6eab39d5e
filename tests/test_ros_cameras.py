"""Camera names from ROS camera topics: transport and image suffixes stripped, or named as given."""

import pytest

from vts_drive.errors import InputError
from vts_drive.ros.cameras import camera_name, camera_names


@pytest.mark.parametrize(
    "topic, name",
    [
        ("/camera/front/compressed", "front"),
        ("/camera/left/compressed", "left"),
        ("/cam_front/image_raw", "front"),
        ("/cam_front_left/image_raw/compressed", "front_left"),
        ("/car/cam_front/image_rect_color/compressed", "front"),
        ("/stereo/left/image_rect", "left"),
        ("/camera_rear/image", "rear"),
        ("/front_camera/image_raw/theora", "front_camera"),
        ("/zed/rgb", "rgb"),
        ("/image_raw", "image_raw"),
        ("/cam_/image_raw", "cam_"),
    ],
)
def test_camera_name_strips_transport_and_image_suffixes(topic, name):
    assert camera_name(topic) == name


def test_image_transport_topics_of_three_cameras_name_three_cameras():
    topics = ["/camera/front/compressed", "/camera/left/compressed", "/camera/right/compressed"]
    assert camera_names(topics, "--topics") == dict(zip(topics, ["front", "left", "right"]))


def test_explicit_names_win_and_mix_with_derived_ones():
    names = camera_names(["front=/a/b/compressed", "/cam_rear/image_raw", "side_2=/x/y"], "--topics")
    assert names == {"/a/b/compressed": "front", "/cam_rear/image_raw": "rear", "/x/y": "side_2"}


@pytest.mark.parametrize(
    "items, message",
    [
        (
            ["/cam_front/image_raw", "/cam_front/image_raw/compressed"],
            "/cam_front/image_raw, /cam_front/image_raw/compressed are all camera 'front'; name each camera explicitly",
        ),
        (["front=/a", "front=/b"], "/a, /b are all camera 'front'"),
        (["/a", "x=/a"], "topic /a is given twice"),
        (["=/a"], "'=/a': a camera name is letters, digits and _ before '='"),
        (["front left=/a"], "a camera name is letters"),
        (["front=a/b"], "'a/b' is not an absolute topic name"),
        (["/a/"], "is not an absolute topic name"),
    ],
)
def test_clashes_and_malformed_items_are_input_errors_naming_them(items, message):
    with pytest.raises(InputError, match="^--topics: .*" + message.replace("(", r"\(")):
        camera_names(items, "--topics")
