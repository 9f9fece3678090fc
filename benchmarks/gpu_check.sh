#!/usr/bin/env bash
# Check tamebias's GPU code paths on the first GPU machine at hand, in one call (< 10 min):
# GPU-marked tests, a bf16 DANN digits run with img/s, a 2-GPU DDP smoke run when two GPUs
# are visible, and ResNet-50 steps at 224 px of the Office-31 category-shift task on
# synthetic images. Run from anywhere: bash benchmarks/gpu_check.sh [--cpu-smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
exec timeout 600 python benchmarks/gpu_check.py "$@"
