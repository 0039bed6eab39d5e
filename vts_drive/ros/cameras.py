"""Camera names from camera topics, as ROS names them, or as the user names them.

Reports, windows and diagnostics speak of cameras by name (front, front_left).
A camera topic ends in what image_transport and image_proc add to the camera's
namespace: a transport (`/compressed`) after an image stage (`/image_raw`,
`/image_rect_color`). So the name is the topic's last part once those are
stripped, less a `cam_`/`camera_` prefix: /cam_front/image_raw, /camera/front/
compressed and /car/cam_front/image_rect_color/compressed are all `front`.
Where that is not what the user wants, or two topics would share a name, a
camera is named explicitly: `front=/a/b/compressed`.
"""

from __future__ import annotations

from vts_drive.errors import InputError

# image_transport's plugins (compressed, compressedDepth, theora; zstd, ffmpeg, foxglove's h264 in newer stacks)
TRANSPORT_SUFFIXES = ("compressed", "compressedDepth", "theora", "zstd", "ffmpeg", "h264")
# image_proc / camera driver stages, and the plain `image` many drivers publish
IMAGE_SUFFIXES = (
    "image_raw",
    "image_rect",
    "image_rect_color",
    "image_rect_raw",
    "image_color",
    "image_mono",
    "image_rect_mono",
    "image",
)
NAME_PREFIXES = ("cam_", "camera_")


def camera_name(topic: str) -> str:
    """The camera a topic belongs to: its last part once transport and image suffixes are stripped,
    less a cam_/camera_ prefix (/camera/front/compressed -> front, /cam_front_left/image_raw -> front_left)."""
    parts = [part for part in topic.split("/") if part]
    if parts and parts[-1] in TRANSPORT_SUFFIXES:
        parts.pop()
    if parts and parts[-1] in IMAGE_SUFFIXES:
        parts.pop()
    if not parts:  # a topic that is nothing but suffixes (/image_raw) is its own name
        return topic.strip("/").replace("/", "_")
    name = parts[-1]
    for prefix in NAME_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    return name


def parse_camera_topic(item: str, source: str) -> tuple[str, str | None]:
    """`TOPIC` or `NAME=TOPIC` -> (topic, explicit name or None). ROS names cannot hold '=', so
    the first one separates the name. source names the flag or parameter in errors."""
    name: str | None
    name, sep, topic = item.partition("=")
    if not sep:
        name, topic = None, item
    elif not name or not all(c.isalnum() or c == "_" for c in name):
        raise InputError(
            f"{source}: {item!r}: a camera name is letters, digits and _ before '=', as in front=/camera/front/compressed"
        )
    if not topic.startswith("/") or topic.endswith("/") or "//" in topic:
        raise InputError(
            f"{source}: {item!r}: {topic!r} is not an absolute topic name like /camera/front/image_raw"
        )
    return topic, name


def camera_names(items: list[str], source: str) -> dict[str, str]:
    """topic -> camera name for `TOPIC` / `NAME=TOPIC` items, in their order; two items of one
    topic, or two topics of one name, are an InputError saying how to name them apart."""
    names: dict[str, str] = {}
    for item in items:
        topic, name = parse_camera_topic(item, source)
        if topic in names:
            raise InputError(f"{source}: topic {topic} is given twice")
        names[topic] = name or camera_name(topic)
    by_name: dict[str, list[str]] = {}
    for topic, name in names.items():
        by_name.setdefault(name, []).append(topic)
    shared = {name: topics for name, topics in by_name.items() if len(topics) > 1}
    if shared:
        clashes = "; ".join(f"{', '.join(topics)} are all camera {name!r}" for name, topics in shared.items())
        raise InputError(
            f"{source}: {clashes}; name each camera explicitly as NAME=TOPIC (front=/camera/front/compressed)"
        )
    return names
