"""The rclpy node: a thin shell around vts_drive.ros.node_core."""
