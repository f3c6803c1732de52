#!/usr/bin/env bash
# Issue-19 confirmation on TEST images (run once, after the choice made on development images with
# bench/replay.py): gcpl's ranked stages vs the nested default (and Li et al. at 100 classes) on
#   - the 100-class fractal bench (runs/bench100, 200 test images, noise seeds 0 and 1),
#   - the 30-class fractal bench (runs/bench30, 120 test images, noise seeds 0 and 1),
#   - the demo's 10-class benchmarks (runs/demo10/seedS, its 120 test images, noise seed = S),
# every row of one seed on the same (t, noise) pairs, errors cached (bench/error_cache.py).
# Prerequisites: bench/fractal_bench.sh's first steps for runs/bench100 and (CLASSES=30) runs/bench30,
# bench/issue19_compute.sh (Li et al.'s caches), the demo's GCPL tokens (bench/demo10.sh's first step).
set -euo pipefail
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python}
STEP=${1:-all}
if [ "$STEP" = all ] || [ "$STEP" = 100 ]; then
  for S in ${SEEDS:-0 1}; do
    $PY bench/racing.py --run runs/bench100/run --data runs/bench100/split.json --limit 200 --seeds $S \
        --gcpl-default --ranked --cache runs/bench100/cache --out runs/bench100/confirm_seed$S.json > runs/bench100/confirm_seed$S.log 2>&1
  done
fi
if [ "$STEP" = all ] || [ "$STEP" = 30 ]; then
  $PY bench/racing.py --run runs/bench30/run --data runs/bench30/split.json --limit 120 --seeds 0,1 \
      --gcpl-default --ranked --cache runs/bench30/cache --out runs/bench30/confirm.json > runs/bench30/confirm.log 2>&1
fi
if [ "$STEP" = all ] || [ "$STEP" = demo ]; then
  for S in 0 1 2; do
    $PY bench/racing.py --run runs/demo10/seed$S/gcpl/train --data runs/demo10/seed$S/split.json --seeds $S \
        --gcpl-default --ranked --stages 8,32,96:4,2,1 --cache runs/demo10/seed$S/cache \
        --out runs/demo10/confirm_seed$S.json > runs/demo10/confirm_seed$S.log 2>&1
  done
fi
if [ "$STEP" = all ] || [ "$STEP" = table ]; then  # replay only: every row of both seeds, Li et al. included
  $PY bench/racing.py --run runs/bench100/run --data runs/bench100/split.json --limit 200 --seeds 0,1 --li \
      --gcpl-default --ranked --cache runs/bench100/cache --no-compute --out runs/bench100/confirm.json
fi
