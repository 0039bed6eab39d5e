#!/usr/bin/env bash
# Rebuilds the shipped synthdrive-tiny model from scratch with the stages of synthdrive_tiny_stages.yaml
# (timings there), then copies the result into the package. WORK: the data folder (default: data);
# DEVICE: the 128-pixel and temporal stages' device (default: cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-data}
DEVICE=${DEVICE:-cuda}

vts-drive train-synth --stages scripts/synthdrive_tiny_stages.yaml --var work="$WORK" --var device="$DEVICE"

rm -rf vts_drive/models/synthdrive-tiny && mkdir -p vts_drive/models/synthdrive-tiny
find "$WORK/models/synthdrive-tiny-temporal" -maxdepth 1 -type f -exec cp {} vts_drive/models/synthdrive-tiny/ \;
du -sh vts_drive/models/synthdrive-tiny
