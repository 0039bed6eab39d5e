"""ROS 2 without rclpy: message types, image conversion, rosbag2 I/O, the DDS transport and the node core."""

from typing import Any

# A message of any of the three bindings the code meets: rclpy's, the Cyclone DDS classes
# (msgs.py) and rosbags' (typestore.py). They share field names, not a type.
RosMessage = Any
