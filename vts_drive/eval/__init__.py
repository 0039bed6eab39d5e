"""Evaluation on DRAMA, LingoQA and synthdrive: loaders for the on-disk formats, the metrics
with their official semantics, and the runner that compares modes (vts_drive/eval/runner.py)."""
