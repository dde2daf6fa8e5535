#!/usr/bin/env bash
# scripts/cuda_check.sh on a lent GPU machine that has torch with CUDA but cannot reach a package index,
# sized for a short lease (about 9 minutes of commands). Written in issue 12's thirteenth round for the
# workplace's device tool; it has NOT run on a GPU yet (that session's loan was paused).
#
# Before the run, on the machine that prepares it (here: pip works), put the wheels the GPU image lacks
# into .whl/ (ignored by git; carry it):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl python-flint pebble
# then run, on the GPU machine, in the repository root, with OUT set to the folder whose files come back:
#   bash scripts/device_check.sh
# What comes back (8 files at most): steps.txt (timeline), install.txt (versions, devices), cuda_check.log,
# tests.txt (the CUDA-touching test files), results.jsonl.xz (the agreement records), cc.tgz (everything else:
# the sweep's records, bench.json/html, agreement.html).
set -u
: "${OUT:?set OUT to the folder whose files come back}"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
T0=$(date +%s)
el() { echo "[+$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/steps.txt"; }
el start
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl > "$OUT/install.txt" 2>&1 \
  || el "wheel install failed (see install.txt)"
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >> "$OUT/install.txt" 2>&1 \
  || { el "editable install failed; using PYTHONPATH"; export PYTHONPATH=$PWD; }
{ nvidia-smi -L; nproc; python3 -c 'import torch, numpy, sympy, numba, flint, pebble; print("torch", torch.__version__, torch.version.cuda, torch.cuda.is_available(), "numpy", numpy.__version__, "sympy", sympy.__version__, "numba", numba.__version__, "flint", flint.__version__)'; } >> "$OUT/install.txt" 2>&1
el installed
WORK=$(mktemp -d)
# every step of cuda_check.sh under its own limit, the whole under 420 s; a short benchmark sweep of the
# implementations that matter for CPU against GPU
CHECK_TIMEOUT=150 BENCH_TIMEOUT=170 PYTHON=python3 \
  BENCH_ARGS="--sweep quick --target-time 0.05 --implementations torch-seed,torch-add_,torch-optim-sgd,torch-optim-sgd-fused,torch-optim-adam-fused,numpy-hand" \
  timeout 420 bash scripts/cuda_check.sh "$WORK" > "$WORK/stdout.txt" 2>&1
el "cuda_check.sh exit $?"
timeout 110 python3 -m pytest -n 16 -q -rfEs -p no:cacheprovider --timeout 100 tests/test_devices.py tests/test_verdicts.py \
  tests/test_pytest_plugin.py tests/test_frameworks.py tests/test_bench.py > "$WORK/tests.txt" 2>&1
el "tests exit $?"
ls -la "$WORK" >> "$OUT/steps.txt"
for f in results.jsonl sweep-cuda.jsonl; do
  if [[ -f "$WORK/$f" ]]; then xz -T0 -6 "$WORK/$f" || gzip -9 "$WORK/$f"; fi
done
mv "$WORK"/results.jsonl.* "$OUT/" 2>/dev/null
cp "$WORK/cuda_check.log" "$WORK/tests.txt" "$OUT/" 2>/dev/null
tar czf "$OUT/cc.tgz" -C "$WORK" . 2>/dev/null
el done
