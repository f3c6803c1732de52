#!/usr/bin/env bash
# Issue-5 classifier target on the bundled model: a 100-class fractal benchmark with learned
# GCPL tokens; gcpl's default schedule against Li et al.'s Flowers schedule (CPU, about 60 minutes:
# the baseline runs twice, with two noise draws, to show its own agreement with itself).
#   bash bench/fractal100.sh [OUT]
set -euo pipefail
OUT=${1:-runs/bench100}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
[ -d "$OUT/data" ] || gcpl fractals --out "$OUT/data" --classes 100 --per-class 20 --seed 0
gcpl prepare folder --root "$OUT/data" --out "$OUT/split.json" --test-fraction 0.2
[ -f "$OUT/run/tokens.json" ] || gcpl train "$OUT/split.json" --out "$OUT/run" --model tiny --shots 16 \
    --template "{} fractal." --init-word fractal --steps 300 --lr 5e-3 --resume
python bench/classifier.py --run "$OUT/run" --data "$OUT/split.json" --limit 100 --threads 1 \
    --baseline-reseed --out "$OUT/classifier.json"
