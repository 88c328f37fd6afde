#!/usr/bin/env bash
# The GPU path in one prepared run (issue #13; budget ≤ 8 min on one GPU):
#   1. the tests that have a CUDA variant (skipped on CPU-only machines, run here);
#   2. the smoke pipeline with runtime.device=cuda, in fp32 and in bf16;
#   3. on a machine with 2+ GPUs: the smoke pipeline data-parallel over 2 GPUs (NCCL);
#   4. one full default `make run` on the GPU (fp32);
# each run prints its summary: stage wall times and teacher/student accuracies.
#
# Needs: a Python with a CUDA build of torch and this project installed (PYTHON=…, default
# .venv/bin/python, else python3), and MNIST in data/mnist (a GPU machine without registry
# access: bring the folder along). The log goes to $OUT/gpu-check.log when $OUT is set (the
# device runner's output folder), else bench/results/gpu-check.log — commit it from there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
LOG_DIR=${OUT:-bench/results}
mkdir -p "$LOG_DIR"
exec > >(tee "$LOG_DIR/gpu-check.log") 2>&1

GPUS=$("$PY" - <<'PYEOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu-check: torch {torch.__version__} sees no CUDA device; run this on a GPU machine "
             "with a CUDA build of torch (PYTHON=...)")
name = torch.cuda.get_device_name(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()}× {name}, "
      f"bf16 {torch.cuda.is_bf16_supported()}", file=sys.stderr)
print(torch.cuda.device_count())
PYEOF
) || exit 2
git rev-parse HEAD 2>/dev/null | sed 's/^/commit /' || true
[ -f data/mnist/train-images-idx3-ubyte ] || { echo "gpu-check: data/mnist missing (make data)"; exit 2; }

WORK=$(mktemp -d)
export MPLBACKEND=Agg DVC_NO_ANALYTICS=1 GANDISTILL_CHECKPOINT_ROOT="$WORK/checkpoints" \
       MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
STARTED=$SECONDS
step() {
    local name=$1 t0=$SECONDS
    shift
    echo; echo "== $name"
    "$@"
    echo "== $name: $((SECONDS - t0)) s wall"
}
run() {  # run NAME ARGS…: one pipeline run on the GPU, its summary printed by the CLI
    local name=$1
    shift
    "$PY" -m gandistill run --local --runs-dir "$WORK/runs" --run-name "$name" --set runtime.device=cuda "$@"
}

step "tests with a CUDA variant" "$PY" -m pytest -q -m "slow or not slow" tests/test_device.py -k cuda
step "smoke, fp32" run smoke-fp32 --profile smoke
step "smoke, bf16" run smoke-bf16 --profile smoke --set runtime.precision=bf16
if [ "$GPUS" -ge 2 ]; then
    step "smoke, 2 GPUs data-parallel (torchrun, NCCL)" run smoke-2gpu --profile smoke --nproc 2
fi
step "default make run, fp32" run default-fp32
echo; echo "gpu-check: all steps passed in $((SECONDS - STARTED)) s"
