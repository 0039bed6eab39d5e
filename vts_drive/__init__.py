"""vts_drive: multi-camera driving VLM perception made cheap by keyframes,
video token sparsification and mixture-of-depths layer skipping."""

__version__ = "0.1.0"
