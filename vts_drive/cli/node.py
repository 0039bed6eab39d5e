"""`vts-drive node`: the ROS 2 node, over plain DDS (no ROS 2 install needed) or rclpy."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run the ROS 2 node (over DDS without ROS 2, or over rclpy)",
        description="Subscribe to the camera topics, describe windows of synchronised frames and publish "
        "~/scene_description, ~/risk_qa, ~/answer (questions on ~/question) and /diagnostics. "
        "--transport dds speaks the ROS 2 wire format through Cyclone DDS, so ROS 2 nodes on the same "
        "domain interoperate with it; --transport ros2 runs the rclpy node.",
    )
    parser.add_argument("--transport", choices=["dds", "ros2"], default="dds", help="(default: %(default)s)")
    parser.add_argument(
        "--params", type=Path, default=None, help="ROS 2 params YAML (e.g. launch/params.yaml)"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set one parameter, value as YAML (repeat; overrides --params)",
    )
    parser.add_argument(
        "--domain-id",
        type=int,
        default=int(os.environ.get("ROS_DOMAIN_ID", 0)),
        help="DDS domain (default: $ROS_DOMAIN_ID or 0)",
    )
    parser.add_argument("--node-name", default="vts_drive", help="(default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.transport == "ros2":
        return run_rclpy(args)
    return run_dds(args)


def run_dds(args: argparse.Namespace) -> int:
    import logging
    import signal
    import sys
    import threading
    import time

    from vts_drive.pipeline import Pipeline
    from vts_drive.ros.dds_transport import DdsTransport
    from vts_drive.ros.node_core import NodeCore
    from vts_drive.ros.params import params_from_dict, parse_param_overrides, read_params_file

    logging.basicConfig(level=logging.INFO, format="vts-drive node: %(message)s")
    values = read_params_file(args.params, args.node_name) if args.params else {}
    values.update(parse_param_overrides(args.param))
    params = params_from_dict(values, source=str(args.params or "--param"))
    pipeline = Pipeline.load(params.model_name(), params.settings)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    transport = DdsTransport(params, args.domain_id, args.node_name)
    core = NodeCore(pipeline, params, transport.outputs(time.time_ns), args.node_name)
    core.start()
    print(
        f"vts-drive node: {args.node_name} on DDS domain {args.domain_id}, cameras "
        f"{', '.join(params.subscribed_topics)} (input_qos {params.input_qos}), output_qos "
        f"{params.output_qos}, model {pipeline.model_name}, mode {pipeline.config.mode}",
        file=sys.stderr,
        flush=True,
    )
    try:
        transport.spin(core, stop)
    finally:
        core.stop()
        transport.close()
    print(f"vts-drive node: stopped after {core.counts['windows_described']} windows", file=sys.stderr)
    return 0


def run_rclpy(args: argparse.Namespace) -> int:
    from vts_drive.errors import InputError

    try:
        from vts_drive.ros_nodes.vts_drive_node import main
    except ImportError as error:
        raise InputError(
            f"--transport ros2 needs rclpy ({error}); source ROS 2's setup.bash or use --transport dds"
        ) from None
    ros_args = ["--ros-args", "-r", f"__node:={args.node_name}"]
    if args.params:
        ros_args += ["--params-file", str(args.params)]
    for item in args.param:
        name, _, value = item.partition("=")
        ros_args += ["-p", f"{name}:={value}"]
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    return main(["vts_drive_node", *ros_args]) or 0
