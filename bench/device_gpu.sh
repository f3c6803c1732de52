#!/usr/bin/env bash
# The prepared H200 check, run from the repository root on the device machine (see
# docs/PERFORMANCE.md, "GPU: true size"). That machine has torch, transformers and accelerate but
# no diffusers: carry the wheels in .whl/ (ignored by git), made here with
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# Everything it prints also goes to $OUT/gpu_true_size.log; the JSON is rewritten after each phase.
# Extra arguments go to bench/gpu_true_size.py (e.g. --train-batch 16).
set -o pipefail
OUT=${OUT:-/tmp/gcpl-bench-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
timeout 300 python3 bench/gpu_true_size.py --size sd14 --compile --budget-s 270 --out "$OUT/gpu_true_size.json" "$@" \
  2>&1 | tee "$OUT/gpu_true_size.log"
