"""package.xml as `rosdep install` / `rosdep check` read it: every Python library setup.py requires has
its rosdep key, or is one the nodes never import (checked by importing what they import), and the ROS
packages declared are exactly those the nodes and the launch file import.

rosdep needs its database from the network, so the keys were looked up by hand in rosdistro's
rosdep/python.yaml (commit 8468e88, 2026-08-22) and are listed here."""

import ast
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from vts_drive.ros.detections import DETECTION_MESSAGES

ROOT = Path(__file__).resolve().parents[1]

# setup.py requirement -> rosdep key (each defined in rosdistro's rosdep/python.yaml)
ROSDEP_KEY = {
    "torch": "python3-torch",
    "transformers": "python3-transformers-pip",
    "tokenizers": "python3-transformers-pip",  # no key of its own; transformers requires it
    "safetensors": "python3-transformers-pip",  # likewise
    "numpy": "python3-numpy",
    "opencv-python-headless": "python3-opencv",
    "jsonschema": "python3-jsonschema",
    "tqdm": "python3-tqdm",
    "pyyaml": "python3-yaml",
    "rosbags": "python3-rosbags-pip",
    "onnxruntime": "python3-onnxruntime-pip",
    "matplotlib": "python3-matplotlib",
    "pillow": "python3-pil",
}
# setup.py requirement -> (its import name, why the nodes do without it); none has a rosdep key
NOT_FOR_THE_NODES = {
    "cyclonedds": ("cyclonedds", "the DDS transport that stands in for rclpy where ROS 2 is not installed"),
    "onnx": ("onnx", "vts-drive export and check-onnx"),
    "onnxscript": ("onnxscript", "vts-drive export"),
    "pyarrow": ("pyarrow", "the LingoQA loader of vts-drive eval"),
    "pycocoevalcap": ("pycocoevalcap", "caption metrics of vts-drive eval and score"),
}
PYTHON_MODULES = {
    "vts_drive",
    "numpy",
    "yaml",
}  # imported by the nodes or launch file, keyed through setup.py


def exec_depends() -> list[str]:
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    return [element.text.strip() for element in root.iter("exec_depend")]


def install_requires() -> list[str]:
    """The distribution names in setup.py's install_requires (version specifiers dropped)."""
    call = next(
        node
        for node in ast.walk(ast.parse((ROOT / "setup.py").read_text()))
        if isinstance(node, ast.Call) and any(keyword.arg == "install_requires" for keyword in node.keywords)
    )
    requires = next(keyword.value for keyword in call.keywords if keyword.arg == "install_requires")
    return [
        element.value.split(">")[0].split("=")[0].split("<")[0].strip().lower() for element in requires.elts
    ]


def imported_packages(paths: list[Path]) -> set[str]:
    """Top-level packages the files import, ROS message packages looked up by name included."""
    packages = {name.split("/")[0] for name in DETECTION_MESSAGES}  # ros_nodes imports these by name
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                packages.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                packages.add(node.module.split(".")[0])
    return packages


def test_every_required_library_has_its_rosdep_key_declared():
    declared = exec_depends()
    assert len(declared) == len(set(declared)), "a key is declared twice"
    assert set(install_requires()) == set(ROSDEP_KEY) | set(NOT_FOR_THE_NODES), "classify each requirement"
    python_keys = {key for key in declared if key.startswith("python3-")}
    assert python_keys == set(ROSDEP_KEY.values())


def test_ros_packages_declared_are_those_the_nodes_and_launch_file_import():
    packages = imported_packages([*(ROOT / "ros_nodes").glob("*.py"), *(ROOT / "launch").glob("*.py")])
    ros_packages = packages - set(sys.stdlib_module_names) - PYTHON_MODULES
    declared = {key for key in exec_depends() if not key.startswith("python3-")}
    assert (
        declared == ros_packages
    )  # nothing missing (rcl_interfaces once was), nothing unused (message_filters)


def test_the_node_runs_without_the_libraries_that_have_no_rosdep_key(tmp_path):
    """Import what the rclpy node imports from vts_drive, then describe a window with the shipped model,
    in a fresh interpreter: none of the libraries rosdep cannot install may have been loaded."""
    modules = sorted(
        {
            node.module
            for node in ast.walk(ast.parse((ROOT / "ros_nodes" / "vts_drive_node.py").read_text()))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vts_drive")
        }
    )
    script = "\n".join(
        [
            "import sys, numpy as np",
            *(f"import {module}" for module in modules),
            "from vts_drive.pipeline import Pipeline",
            "from vts_drive.window import FrameWindow",
            "images = [[np.zeros((64, 96, 3), np.uint8)] * 2 for _ in range(3)]",
            "window = FrameWindow(['front', 'front_left', 'front_right'], images, [[0, 100_000_000]] * 3)",
            "Pipeline.load('synthdrive-tiny', {'max_new_tokens': 2}).describe(window)",
            f"print(sorted(name for name in {sorted(name for name, _ in NOT_FOR_THE_NODES.values())!r} if name in sys.modules))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
