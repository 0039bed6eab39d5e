#!/usr/bin/env bash
# The figures of README.md and docs/results.md: mode comparison, sweeps and ablations on the held-out synthdrive
# split, evaluation with the blind baseline, and the stage breakdown at the real model's dimensions.
# Every table has `newest` (dense on each camera's newest frame), the baseline for questions about the
# past. Writes results/*.json, *.png and eval folders. About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the figures are of 1 CPU thread
MODEL=${MODEL:-synthdrive-tiny}
DATA=${DATA:-data/synth-heldout}
[ -d "$DATA" ] || vts-drive synth --out "$DATA" --scenes 200 --seed 1001
TRAIN=${TRAIN:-data/synth-train}
[ -d "$TRAIN" ] || vts-drive synth --out "$TRAIN" --scenes 600 --seed 1 --formats synth
STREAM=(--model "$MODEL" --data "$DATA" --windows 100 --frames 4 --stride 1)

vts-drive bench "${STREAM[@]}" --modes "naive,dense,newest,vts,prumerge,prumerge+,mod,vts+mod,vts+mod[draft=false]" \
    --json results/bench_modes.json --plot results/bench_modes.png
vts-drive bench "${STREAM[@]}" --modes "dense,newest,vts[budget=0.1],vts[budget=0.2],vts[budget=0.3],vts[budget=0.4],vts[budget=0.6],vts[budget=1.0]" \
    --json results/sweep_budget.json --plot results/sweep_budget.png
vts-drive bench "${STREAM[@]}" --modes "dense,newest,vts[max_keyframes=1],vts[max_keyframes=2],vts[max_keyframes=3]" \
    --json results/sweep_keyframes.json --plot results/sweep_keyframes.png
vts-drive bench "${STREAM[@]}" --modes "dense,newest,mod[r=0.1],mod[r=0.15],mod[r=0.2],mod[r=0.4],mod[r=0.6],mod[r=1.0]" \
    --json results/sweep_r.json --plot results/sweep_r.png
# the paper's ablation at r = 0.2, next to the shipped r; routers trained on their own top-k (the
# paper's auxiliary target) on the frozen model, same settings otherwise
SELF_ROUTERS=${SELF_ROUTERS:-data/routers/self-target}
[ -f "$SELF_ROUTERS/mod_router.json" ] || vts-drive train-router --model "$MODEL" --data "$TRAIN" \
    --out "$SELF_ROUTERS" --aux-target self --r 0.2 --layers 0,1,2,3 --steps 150 --scenes 600
vts-drive bench "${STREAM[@]}" --modes "dense,newest,mod,mod[r=0.2],mod[r=0.2,routing=random],mod[r=0.2,routing=uniform],mod[r=0.2,gate=0],mod[routers=$SELF_ROUTERS]" \
    --json results/ablation_routing.json --plot results/ablation_routing.png
vts-drive bench --model "$MODEL" --data "$DATA" --windows 60 --frames 4 --stride 1 \
    --modes "naive,dense,vts+mod,vts+mod[draft=false]" --json results/bench_draft.json
ENGINES=${ENGINES:-engines/ci-synthdrive-tiny}
vts-drive export --model "$MODEL" --mode vts+mod --out "$ENGINES" --force
vts-drive bench --model "$MODEL" --data "$DATA" --windows 60 --frames 4 --stride 1 \
    --modes "vts+mod,vts+mod[draft=false],vts+mod[backend=onnxruntime,engines=$ENGINES],vts+mod[backend=onnxruntime,engines=$ENGINES,draft=false]" \
    --json results/bench_draft_onnxruntime.json
vts-drive bench "${STREAM[@]}" --modes "dense,newest,vts+mod[skip=0],vts+mod[skip=0.1],vts+mod[skip=0.2],vts+mod[skip=0.3],vts+mod[skip=0.5]" \
    --json results/sweep_skip.json --plot results/sweep_skip.png

vts-drive eval synth --model "$MODEL" --data "$DATA" --modes "dense,newest,dense[box_grammar=0],vts,vts[max_keyframes=3],vts[anchor=first],mod,vts+mod,vts+mod[anchor=first]" --limit 200 \
    --out results/eval_synth
vts-drive eval synth --model "$MODEL" --data "$DATA" --modes dense --limit 200 --blind --out results/eval_synth_blind

vts-drive bench --arch llava-onevision-qwen2-0.5b --random-weights --modes "naive,dense,newest,vts+mod,vts+mod[draft=false]" \
    --windows 3 --frames 4 --stride 1 --cameras front --max-new-tokens 16 --keyframe-scorer vts_drive/models/synthdrive-tiny \
    --json results/real_dims_cpu.json
