#!/usr/bin/env bash
# One short check of the GPU code paths, for a machine with a CUDA device:
# the CPU and CUDA records of the same cases, with TF32 off and on, in one
# results file, then the CUDA-marked tests and a CUDA slice of the pytest sweep.
# Usage: scripts/gpu_check.sh [OUTDIR]   (default: reports/)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-reports}}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])'

# 1. CLI: seed + a slice of the generated cases (all regimes at a few shapes), every dtype,
#    CPU and every CUDA device, TF32 off on all of them and on again for CUDA.
"$PY" -m harness check --cases cases/seed.toml --cases cases/generated.toml \
    --case seed --case 'gen-grid-*-n1-d8-k8-*' --case 'gen-grid-*-n32-d8-k8-*' --case 'gen-grid-*-n256-d32-k2-*' \
    --case 'gen-wide-*' --case 'gen-steps-*-n64-d8-k8-*' \
    --devices cpu,cuda --dtypes all --implementations torch-seed,numpy-hand --tf32 both \
    --results "$OUT/gpu-results.jsonl" --report none -q
echo "check exit code: $?"

# 2. pytest: the CUDA-marked tests and the sweep on cuda for the same slice, merged results.
"$PY" -m pytest tests/test_devices.py -q -m cuda -rs
echo "pytest -m cuda exit code: $?"
"$PY" -m pytest tests/test_sweep.py -q -m cuda --harness-devices cpu,cuda --harness-case 'gen-grid-*-n32-d8-k8-*' \
    --harness-results "$OUT/gpu-sweep.jsonl"
echo "pytest sweep exit code: $?"
