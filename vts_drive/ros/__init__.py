"""ROS 2 without rclpy: message types, image conversion, rosbag2 I/O, the DDS transport and the node core."""
