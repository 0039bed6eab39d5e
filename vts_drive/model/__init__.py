"""Checkpoint loading, the vision encoder and the plain-tensor Qwen2 decoder."""
