#!/usr/bin/env bash
# The prepared GPU check: one call on one GPU machine, at most 8 minutes, results in a folder.
#
#   benchmarks/gpu_check.sh [--out DIR] [--dry-run]        (default DIR: gpu_check_results)
#
# 1. env.json      python, torch, torchvision, CUDA/cuDNN versions, GPU, bf16 support, TF32 flags
# 2. cuda_tests.*  the CUDA-marked tests (pytest -m cuda): AMP fp16 and bf16 training steps, `oanet train`
#                  with amp_fp16 on one GPU, single-GPU inference (no process group, no NCCL) vs the CPU
# 3. results.json, summary.md   benchmarks/gpu_check.py: training images/s of configs/coco_r50.yaml at
#                  800x1333 under AMP against torchvision's Mask R-CNN R50-FPN (same data, same run),
#                  inference s/image at 800x1333, peak GPU memory
#
# --dry-run runs the same three steps on the CPU at tiny sizes (the CUDA tests are then skipped); the
# test suite runs it (tests/test_gpu_check.py).
#
# Nothing is installed and nothing is downloaded (the GPU machine reaches no network; the models are
# random-init). It assumes, already installed for $PYTHON (default python3): Python >= 3.10, torch built
# with CUDA, torchvision, numpy, PyYAML, Pillow and pytest; and this working tree (used through
# PYTHONPATH, not pip). The C extension in oanet/_ext is optional (a pure fallback is used without it).
# Time limits: CUDA tests 180 s (TESTS_TIMEOUT), measurements 330 s (BENCH_TIMEOUT; the measurements
# also stop starting phases after 270 s).
set -u
cd "$(dirname "$0")/.."

OUT=gpu_check_results
DRY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY="--dry-run" ;;
        --out) OUT="$2"; shift ;;
        *) echo "usage: benchmarks/gpu_check.sh [--out DIR] [--dry-run]" >&2; exit 2 ;;
    esac
    shift
done
PYTHON="${PYTHON:-python3}"
CUDA_TESTS="${CUDA_TESTS:-tests}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
start=$(date +%s)

echo "== environment"
if ! "$PYTHON" benchmarks/gpu_check.py --out "$OUT" --env-only $DRY > "$OUT/env.log" 2>&1; then
    cat "$OUT/env.log"
    echo "gpu_check: the environment check failed (see $OUT/env.log); nothing else was run" >&2
    exit 1
fi
cat "$OUT/env.json"

echo "== CUDA tests ($CUDA_TESTS)"
timeout "${TESTS_TIMEOUT:-180}" "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider -rs \
    --junitxml "$OUT/cuda_tests.xml" $CUDA_TESTS > "$OUT/cuda_tests.txt" 2>&1
tests_rc=$?
echo "$tests_rc" > "$OUT/cuda_tests.rc"
tail -n 15 "$OUT/cuda_tests.txt"

echo "== measurements"
timeout "${BENCH_TIMEOUT:-330}" "$PYTHON" benchmarks/gpu_check.py --out "$OUT" --budget-s 270 $DRY \
    > "$OUT/measurements.log" 2>&1
bench_rc=$?
tail -n 40 "$OUT/measurements.log"

wall=$(( $(date +%s) - start ))
{
    echo
    echo "CUDA tests: exit code $tests_rc (0 = all passed or skipped; details in cuda_tests.txt)."
    echo "Measurements: exit code $bench_rc. Wall time of gpu_check.sh: ${wall} s."
} >> "$OUT/summary.md"
echo "== done in ${wall} s: $OUT/summary.md"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
