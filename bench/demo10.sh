#!/usr/bin/env bash
# Issue-10 check at 10 classes on the demo benchmark: the demo's GCPL tokens for each seed (trained
# by `gcpl demo --methods gcpl`, reused when present), then, on the demo's 120 test images, the racing
# classifier (`--spacing race`, support-learned timestep evidence) against the demo's own
# schedule (nested stages 8,32,96 keep 4,2,1: 304 UNet calls per image), both with classifier noise
# seed = demo seed (the demo itself scores with noise seed 0 for every seed; for seed 0 the stages
# row reproduces the demo's GCPL top-1 exactly).
#   bash bench/demo10.sh [OUT] ["SEEDS"]        # default: runs/demo10 "0 1 2"
# Cost on one CPU core of this project's 2-core machine: ~3 min training + ~10 min scoring per seed.
set -euo pipefail
OUT=${1:-runs/demo10}
SEEDS=${2:-"0 1 2"}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python}
for S in $SEEDS; do
  [ -f "$OUT/seed$S/gcpl/train/tokens.json" ] || gcpl demo --methods gcpl --no-samples --workers 1 \
      --out "$OUT/seed$S" --seed "$S"
  $PY bench/racing.py --run "$OUT/seed$S/gcpl/train" --data "$OUT/seed$S/split.json" --seeds "$S" \
      --race default --stages 8,32,96:4,2,1 --cache "$OUT/seed$S/cache" --out "$OUT/racing_seed$S.json"
done
