#!/usr/bin/env bash
# Issue 23 on a lent GPU, in one command (from the repository root):
#
#   bash benchmarks/gpu_all.sh                  # results: $OUT/gpu_all.tar (OUT defaults to /tmp/robustsnn_gpu_all)
#   DEVICE=cpu QUICK=1 OUT=/tmp/g bash benchmarks/gpu_all.sh   # the same steps on CPU, tiny sizes
#
# Steps (each with its own time limit, all within BUDGET_S = 540 s unless set):
#   0. versions; triton / SpikingJelly / snnTorch / loguru installed with --no-deps if missing
#      (wheels from $WHEELS first, then the index; a missing peer is skipped by the benchmarks)
#   1. benchmarks/kernel_check.py: kernels vs reference on the device (spikes identical,
#      gradients within 1e-5) and one layer's time, reference vs kernels
#   2. benchmarks/bench_layers.py: vgg_small batch 32 and VGG11 batch 128, T = 8, forward and
#      forward+backward time and peak CUDA memory: ann, robustsnn (reference path),
#      robustsnn-triton, SpikingJelly (its automatic fastest CUDA backend), snnTorch
#   3. benchmarks/bench_ensemble.py: `reliable` per sample, kernels vs reference path, on the
#      CIFAR checkpoint ($CKPT, $DATA) if present, else on the built random-init vgg_small
# Every step's output is in $OUT/gpu_all/<step>.txt and .json; the tar holds the folder.
# `pip install -e .` fails on the GPU machine: the package runs from src/ via PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
OUT=${OUT:-${TMPDIR:-/tmp}/robustsnn_gpu_all}
BUDGET_S=${BUDGET_S:-540}
WHEELS=${WHEELS:-$ROOT/benchmarks/wheels}
CKPT=${CKPT:-$ROOT/shared/checkpoints/cifar10-strong-ft/snn.safetensors}
DATA=${DATA:-$ROOT/shared/data/cifar10-subset.npz}
PY=${PYTHON:-python3}
WORK=$OUT/gpu_all
mkdir -p "$WORK"
export PYTHONPATH=$ROOT/src:$ROOT/benchmarks${PYTHONPATH:+:$PYTHONPATH}
export PIP_DISABLE_PIP_VERSION_CHECK=1
LOG=$WORK/log.txt
START=$(date +%s)
: >"$LOG"

say() { echo "$*" | tee -a "$LOG"; }

# run NAME LIMIT CMD...: at most LIMIT seconds and never past the budget (minus a reserve)
run() {
    local name=$1 limit=$2 left
    shift 2
    left=$((BUDGET_S - ($(date +%s) - START) - 15))
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        say "== $name: skipped, budget spent"
        return
    fi
    say "== $name ($(date -u +%T), limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.txt" 2>&1
    say "   exit $? after $(($(date +%s) - START)) s in all"
    tail -n 40 "$WORK/$name.txt" >>"$LOG"
}

install_if_missing() {  # MODULE PACKAGE: --no-deps, so no other torch can come in
    "$PY" -c "import $1" 2>/dev/null && return
    "$PY" -m pip install -q --no-deps --no-index --find-links "$WHEELS" "$2" 2>/dev/null ||
        "$PY" -m pip install -q --no-deps "$2" ||
        say "   could not install $2 (no wheel in $WHEELS, no index): its part is skipped"
}

say "gpu_all.sh: DEVICE=$DEVICE QUICK=$QUICK BUDGET_S=$BUDGET_S OUT=$OUT"
TORCH_BEFORE=$("$PY" -c "import torch; print(torch.__version__)")
install_if_missing triton triton
install_if_missing loguru loguru
install_if_missing spikingjelly spikingjelly
install_if_missing snntorch snntorch
{
    "$PY" - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name())
for name in ("triton", "spikingjelly", "snntorch"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as exc:
        print(name, "missing:", type(exc).__name__, exc)
EOF
    nvidia-smi 2>/dev/null | head -15
    git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null
} >"$WORK/env.txt" 2>&1
cat "$WORK/env.txt" >>"$LOG"
TORCH_AFTER=$("$PY" -c "import torch; print(torch.__version__)")
[[ $TORCH_BEFORE == "$TORCH_AFTER" ]] || say "WARNING: torch changed from $TORCH_BEFORE to $TORCH_AFTER"

if [[ $QUICK == 1 ]]; then
    run kernel_check 120 "$PY" benchmarks/kernel_check.py --device "$DEVICE" --quick \
        --out "$WORK/kernel_check.json"
    SMALL=(--batch 2 --T 2 --rounds 1 --warmup 0)
    BIG=(--batch 1 --T 2 --rounds 1 --warmup 0 --no-memory)
    ENSEMBLE=(--ensemble fgsm-ensemble --n 2 --rounds 1 --calib 8)
else
    run kernel_check 150 "$PY" benchmarks/kernel_check.py --device "$DEVICE" \
        --out "$WORK/kernel_check.json"
    SMALL=(--batch 32 --T 8 --rounds 7)
    BIG=(--batch 128 --T 8 --rounds 5)
    ENSEMBLE=(--ensemble reliable --n 8 --rounds 1)
fi
VARIANTS=(ann robustsnn robustsnn-triton spikingjelly snntorch)
run layers-vgg_small 150 "$PY" benchmarks/bench_layers.py --device "$DEVICE" --threads 1 \
    --model vgg_small "${SMALL[@]}" --variants "${VARIANTS[@]}" --label "issue 23 gpu_all" \
    --out "$WORK/bench_layers-vgg_small.json"
run layers-vgg11 170 "$PY" benchmarks/bench_layers.py --device "$DEVICE" --threads 1 \
    --model vgg11 "${BIG[@]}" --variants "${VARIANTS[@]}" --label "issue 23 gpu_all" \
    --out "$WORK/bench_layers-vgg11.json"
SOURCE=()
if [[ $QUICK != 1 && -f $CKPT && -f $DATA ]]; then
    SOURCE=(--checkpoint "$CKPT" --data "npz:$DATA")
else
    say "   reliable on the built random-init vgg_small (no checkpoint/data, or QUICK)"
fi
run reliable 240 "$PY" benchmarks/bench_ensemble.py --device "$DEVICE" "${ENSEMBLE[@]}" \
    --variants triton reference "${SOURCE[@]}" --label "issue 23 gpu_all" \
    --out "$WORK/bench_ensemble-reliable.json"

say "done after $(($(date +%s) - START)) s"
tar -cf "$OUT/gpu_all.tar" -C "$OUT" gpu_all && say "wrote $OUT/gpu_all.tar"
