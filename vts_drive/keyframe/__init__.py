"""Keyframe CNN: which frames of a camera stream carry new, decision-relevant content."""
