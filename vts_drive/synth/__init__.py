"""synthdrive: a procedural multi-camera driving benchmark with exact ground truth.

scene.py   the scene graph: road, ego motion, objects, traffic light, one hazard
camera.py  the three vehicle cameras and projection
render.py  OpenCV rendering of a camera frame and its class-id label map
truth.py   ground truth of a frame: risk object + box, captions, QA, keyframes
generate.py  writes a dataset (native form + DRAMA, LingoQA and rosbag2 exports)
dataset.py   reads the native form back
"""
