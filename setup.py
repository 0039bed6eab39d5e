"""vts_drive: a pip package and an ament_python ROS 2 package from one setup.py.

The folders beside vts_drive/ install as its subpackages: engines/ as
vts_drive.engines and ros_nodes/ as vts_drive.ros_nodes. Only ros_nodes imports
rclpy, and nothing in the library imports ros_nodes.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vts_drive"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Multi-camera driving VLM perception with keyframes, video token sparsification and mixture-of-depths",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
    + [f"{PACKAGE}.engines", f"{PACKAGE}.ros_nodes"],
    package_dir={f"{PACKAGE}.engines": "engines", f"{PACKAGE}.ros_nodes": "ros_nodes"},
    include_package_data=True,
    package_data={
        PACKAGE: ["models/*/*", "models/*/*/*", "schema/*.json"],
        f"{PACKAGE}.engines": ["*.json"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("launch/*.yaml")),
    ],
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "jsonschema>=4.0",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "rosbags>=0.10",
        "cyclonedds>=0.10",
        "onnx>=1.16",
        "onnxscript>=0.5",
        "onnxruntime>=1.18",
        "pyarrow>=14",
        "matplotlib>=3.7",
        "pycocoevalcap>=1.2",
        "pillow>=9",
    ],
    # mcap readers: tests read results bags back with a reader other than rosbags; pandas: tests read
    # LingoQA's predictions.csv as its official evaluator does; websocket-client: tests drive headless Chromium;
    # ruff and mypy: the lint, format and type checks of .ci/run
    extras_require={
        "dev": [
            "pytest>=8",
            "mcap>=1.1",
            "mcap-ros2-support>=0.5",
            "pandas>=2",
            "websocket-client>=1.6",
            "ruff>=0.6",
            "mypy>=1.10",
        ]
    },
    entry_points={
        "console_scripts": [
            "vts-drive = vts_drive.cli:main",
            "vts_drive_node = vts_drive.ros_nodes.vts_drive_node:main",
            "vts_drive_lifecycle_node = vts_drive.ros_nodes.vts_drive_node:main_lifecycle",
        ]
    },
    zip_safe=False,
)
