#!/usr/bin/env bash
# Issue-19 error tensors on the 100-class fractal bench (runs/bench100, made by bench/fractal_bench.sh's
# first steps): Li et al. on 200 test images (noise seeds 0 and 1, bench/racing.py's cache) and the
# dense development tensors (bench/replay.py fill: 200 development images and 1 support image per
# class x 100 classes x 40 pool members). Two single-thread processes, niced; resumable.
set -euo pipefail
OUT=${1:-runs/bench100}
N=${N:-200}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python}
( nice -n 10 $PY bench/racing.py --run "$OUT/run" --data "$OUT/split.json" --limit "$N" --seeds 0 --li \
    --cache "$OUT/cache" --out "$OUT/li_seed0.json" > "$OUT/li_seed0.log" 2>&1 ) &
( nice -n 10 $PY bench/replay.py fill --run "$OUT/run" --data "$OUT/dev.json" --limit 200 --members 40 \
    --cache "$OUT/cache_dev" > "$OUT/fill_dev.log" 2>&1
  nice -n 10 $PY bench/replay.py fill --run "$OUT/run" --support 1 --members 40 \
    --cache "$OUT/cache_support" > "$OUT/fill_support.log" 2>&1
  nice -n 10 $PY bench/racing.py --run "$OUT/run" --data "$OUT/split.json" --limit "$N" --seeds 1 --li \
    --cache "$OUT/cache" --out "$OUT/li_seed1.json" > "$OUT/li_seed1.log" 2>&1 ) &
wait
