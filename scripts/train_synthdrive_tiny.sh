#!/usr/bin/env bash
# Rebuilds the shipped synthdrive-tiny model from scratch: data, the model, its keyframe scorer and its
# MoD routers, then copies the result into the package. Everything before the 128-pixel stage takes about
# six and a half hours on 2 CPU cores; that stage about 6 minutes on one H200 GPU (DEVICE=cuda, the
# default) or about 7 hours on 2 CPU cores (DEVICE=cpu); the temporal stage about 3 hours on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-data}
MODEL=$WORK/models/synthdrive-tiny
DEVICE=${DEVICE:-cuda}

# set_setting FILE KEY VALUE: one setting of a JSON config file, VALUE written as JSON
set_setting() {
    python -c "import json, sys; p, k, v = sys.argv[1:]; c = json.load(open(p)); c[k] = json.loads(v); open(p, 'w').write(json.dumps(c, indent=2) + '\n')" "$@"
}

vts-drive synth --out "$WORK/synth-train" --scenes 3000 --seed 1 --formats synth --overwrite --workers "$(nproc)"
vts-drive synth --out "$WORK/synth-heldout" --scenes 200 --seed 1001 --overwrite --workers "$(nproc)"
# 700 steps, then resumed to 1300: the second run restarts the learning-rate schedule over 1300 steps
vts-drive train-synth --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$MODEL" --steps 700
vts-drive train-synth --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$MODEL" --steps 1300
vts-drive train-keyframe --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$MODEL" --steps 800 --skip-threshold 0.3
vts-drive train-router --model "$MODEL" --data "$WORK/synth-train" --out "$MODEL" --r 0.2 --layers 0,1,2,3 --steps 150 --scenes 600
# then the model and those routers train together: half of each batch also runs with routing on,
# and at the end token-dropout windows also leave whole frames empty, as VTS does
vts-drive train-synth --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$MODEL" --steps 1900 --routed-share 0.5
vts-drive train-synth --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$MODEL" --steps 2200 --routed-share 0.5 \
    --token-dropout-share 0.5 --empty-frame-share 0.7
# trained computing 20 % of each frame's tokens, shipped computing 15 % (README: r sweep)
set_setting "$MODEL/mod_router.json" keep_ratio 0.15
# last, half of the windows keep exactly the tokens mode vts gives the LLM (the keyframe CNN picks and
# gates frames as it does in the pipeline), and the routed passes compute 15 % as shipped
vts-drive train-synth --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$MODEL" --steps 2500 --routed-share 0.5 \
    --token-dropout-share 0.5 --empty-frame-share 0.7 --vts-share 0.5
# shipped with the newest frame of each camera as the anchor keyframe (README: VTS)
set_setting "$MODEL/keyframe_scorer.json" anchor '"newest"'
# four box stages, each a fresh schedule from the model before it: the visual tokens on the risk object
# regress its box, coordinate tokens get soft targets, and each step adds 32 front-camera windows of
# 1 to 5 frames asked only for the risk. The first two (400 steps) keep up to 3 keyframes per camera;
# the last two (250 steps) keep 1, the anchor, as shipped (README: VTS, keyframe sweep)
START=$MODEL
for STAGE in 1 2 3 4; do
    BOXED=$WORK/models/synthdrive-tiny-box$STAGE
    STEPS=400
    if [ "$STAGE" -ge 3 ]; then
        STEPS=250
        set_setting "$START/keyframe_scorer.json" max_keyframes 1
    fi
    vts-drive train-synth --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$BOXED" --init "$START" \
        --steps "$STEPS" --single-frame-steps 0 --lr 3e-4 --routed-share 0.5 --token-dropout-share 0.5 --empty-frame-share 0.7 \
        --vts-share 0.5 --box-weight 1 --coordinate-sigma 1.0 --risk-windows 32
    START=$BOXED
done
# last, the input grows from 64 to 128 pixels: with the same 8-pixel patches the vision tower sees a
# 16 x 16 patch grid (its position embeddings interpolated) and each frame gives 64 visual tokens instead
# of 16; everything of the box stages stays on (README: Measured figures)
FINAL=$WORK/models/synthdrive-tiny-128
vts-drive train-synth --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$FINAL" --init "$START" --image-size 128 \
    --steps 950 --single-frame-steps 0 --lr 5e-4 --routed-share 0.5 --token-dropout-share 0.5 --empty-frame-share 0.7 \
    --vts-share 0.5 --box-weight 1 --coordinate-sigma 1.0 --risk-windows 32 --device "$DEVICE"

# synthdrive v2's questions about the window's past (README: synthdrive): a keyframe CNN trained on the
# v2 streams, then 500 steps that ask every temporal question in every window of 2 frames or more; the
# token-dropout windows keep the oldest frame, which the pipeline always lets in
TEMPORAL=$WORK/models/synthdrive-tiny-temporal
rm -rf "$TEMPORAL-start" && cp -r "$FINAL" "$TEMPORAL-start" && rm -f "$TEMPORAL-start"/keyframe_scorer.*
vts-drive train-keyframe --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --out "$TEMPORAL-start" --steps 800 \
    --skip-threshold 0.3 --anchor newest --max-keyframes 1
vts-drive train-synth --data "$WORK/synth-train" --val-data "$WORK/synth-heldout" --val-scenes 48 --out "$TEMPORAL" \
    --init "$TEMPORAL-start" --steps 500 --single-frame-steps 0 --lr 5e-4 --routed-share 0.5 --token-dropout-share 0.5 \
    --empty-frame-share 0.7 --vts-share 0.5 --box-weight 1 --coordinate-sigma 1.0 --risk-windows 16 --device "$DEVICE"

rm -rf vts_drive/models/synthdrive-tiny && mkdir -p vts_drive/models/synthdrive-tiny
find "$TEMPORAL" -maxdepth 1 -type f -exec cp {} vts_drive/models/synthdrive-tiny/ \;
du -sh vts_drive/models/synthdrive-tiny
