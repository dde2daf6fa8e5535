#!/usr/bin/env bash
# The short check for a CUDA machine: the agreement checks on CPU and CUDA with
# TF32 off and on (one results file), the CUDA-marked tests, the CPU-vs-GPU
# benchmark, and one HTML report of it all, every file in one folder.
#
#   scripts/cuda_check.sh [OUT_DIR]          (default: $OUT, else reports/cuda-<UTC time>)
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3),
# CHECK_TIMEOUT / BENCH_TIMEOUT (seconds, default 1800 / 3600),
# BENCH_ARGS (extra arguments for `harness bench`, e.g. "--quick").
# Exit status: 0 when every step succeeded; otherwise the first failing step's
# status (the later steps still run, so the folder holds whatever could be made).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${1:-${OUT:-reports/cuda-$(date -u +%Y%m%dT%H%M%SZ)}}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
CHECK_TIMEOUT="${CHECK_TIMEOUT:-1800}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-3600}"
read -r -a BENCH_EXTRA <<< "${BENCH_ARGS:-}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/cuda_check.log"
status=0

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
step() {  # step NAME CMD...: run with its output in the log, remember the first failure
  local name="$1"; shift
  log "$name: $*"
  local rc=0
  "$@" 2>&1 | tee -a "$LOG" || rc=${PIPESTATUS[0]}
  if (( rc != 0 )); then
    log "$name: exit status $rc"
    if (( status == 0 )); then status=$rc; fi
  fi
}

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  log "no CUDA device visible to torch ($("$PYTHON" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1)); nothing to do"
  exit 3
fi
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])' | tee -a "$LOG"

# Agreement checks, CPU and every CUDA device, TF32 off and on, in one results file
# (exit 1 means some record is disagree/error; suspect is expected with TF32 on).
step check timeout "$CHECK_TIMEOUT" "$PYTHON" -m harness check --devices cpu,cuda --tf32 both -q \
  --results "$OUT_DIR/results.jsonl" --report none

# The CUDA-marked tests and a CUDA slice of the pytest sweep (records merged under xdist too).
step pytest-cuda timeout "$CHECK_TIMEOUT" "$PYTHON" -m pytest tests/test_devices.py -q -m cuda -rs
step pytest-sweep-cuda timeout "$CHECK_TIMEOUT" "$PYTHON" -m pytest tests/test_sweep.py -q -m cuda \
  --harness-devices cpu,cuda --harness-case 'gen-grid-*-n32-d8-k8-*' --harness-results "$OUT_DIR/sweep-cuda.jsonl"

# Benchmark: CPU and every CUDA device, TF32 off, N*D*K up to 3e8 (the default cap is 2^26 = 6.7e7).
step bench timeout "$BENCH_TIMEOUT" "$PYTHON" -m harness bench --devices all --max-work 3e8 \
  --json "$OUT_DIR/bench.json" --html "$OUT_DIR/bench.html" --note "scripts/cuda_check.sh on $(hostname)" "${BENCH_EXTRA[@]}"

# One report: the agreement records and the benchmark figures.
if [[ -f "$OUT_DIR/results.jsonl" ]]; then
  bench_arg=()
  if [[ -f "$OUT_DIR/bench.json" ]]; then bench_arg=(--bench "$OUT_DIR/bench.json"); fi
  step report timeout 600 "$PYTHON" -m harness report "$OUT_DIR/results.jsonl" "${bench_arg[@]}" -o "$OUT_DIR/agreement.html"
fi

log "done (status $status); files in $OUT_DIR:"
ls -l "$OUT_DIR" | tee -a "$LOG"
exit "$status"
