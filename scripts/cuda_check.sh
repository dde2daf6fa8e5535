#!/usr/bin/env bash
# Run the CUDA agreement checks (TF32 off, then on), merge them, and run the
# CPU-vs-GPU benchmark, leaving every JSON and HTML file in one folder.
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

# Agreement checks: exit 1 means some record is disagree/error (suspect is expected with TF32 on).
step check-tf32-off timeout "$CHECK_TIMEOUT" "$PYTHON" -m harness check --devices cpu,cuda --tf32 off -q \
  --results "$OUT_DIR/results-tf32-off.jsonl" --report "$OUT_DIR/agreement-tf32-off.html"
step check-tf32-on timeout "$CHECK_TIMEOUT" "$PYTHON" -m harness check --devices cpu,cuda --tf32 on -q \
  --results "$OUT_DIR/results-tf32-on.jsonl" --report "$OUT_DIR/agreement-tf32-on.html"

# Merge: a results file is an environment line then records, so concatenation is a merge
# (each part keeps its own environment line); render one report from both when the report module exists.
if [[ -f "$OUT_DIR/results-tf32-off.jsonl" && -f "$OUT_DIR/results-tf32-on.jsonl" ]]; then
  cat "$OUT_DIR/results-tf32-off.jsonl" "$OUT_DIR/results-tf32-on.jsonl" > "$OUT_DIR/results-merged.jsonl"
  step merge-report timeout 600 "$PYTHON" - "$OUT_DIR" <<'PY'
import sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    from harness.report import render_report
except ImportError:
    print("harness.report is not available: kept results-merged.jsonl only")
    sys.exit(0)
render_report([out / "results-tf32-off.jsonl", out / "results-tf32-on.jsonl"], out / "agreement.html")
print(f"merged report: {out / 'agreement.html'}")
PY
fi

# Benchmark: CPU and every CUDA device, TF32 off, N*D*K up to 3e8 (the default cap is 2^26 = 6.7e7).
step bench timeout "$BENCH_TIMEOUT" "$PYTHON" -m harness bench --devices all --max-work 3e8 \
  --json "$OUT_DIR/bench.json" --html "$OUT_DIR/bench.html" --note "scripts/cuda_check.sh on $(hostname)" "${BENCH_EXTRA[@]}"

log "done (status $status); files in $OUT_DIR:"
ls -l "$OUT_DIR" | tee -a "$LOG"
exit "$status"
