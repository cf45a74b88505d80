#!/usr/bin/env bash
# The whole GPU check in one call, on a machine with an NVIDIA GPU and a CUDA-enabled torch
# already installed (no network needed): build divaext against that torch, run the whole test
# suite with CUDA, then the GPU benchmarks. Logs (markdown tables inside) go to OUTDIR:
#
#   bash scripts/gpu_check.sh [OUTDIR]        # default ./gpu-check; ~15-20 min on an H100
#
# Without a usable GPU it stops at once with exit code 2 and runs nothing. Each step has a
# time limit (seconds, overridable: GPU_CHECK_TESTS_S, GPU_CHECK_BENCH_S) so one slow step
# cannot eat the others' time; a failed step is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
PY=${PYTHON:-python3}
TESTS_S=${GPU_CHECK_TESTS_S:-420}
BENCH_S=${GPU_CHECK_BENCH_S:-300}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device: torch (from $PY) has no CUDA build or sees no GPU; nothing was run" >&2
  exit 2
fi
mkdir -p "$OUT"
"$PY" - <<'PY' | tee "$OUT/device.txt"
import torch
p = torch.cuda.get_device_properties(0)
print(f"device: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB; "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

failed=()
step() {  # step NAME SECONDS CMD...: run, log to $OUT/NAME.log, print the last lines and the time
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s; tail of $OUT/$name.log:"
  tail -n 4 "$OUT/$name.log" | sed 's/^/   | /'
  [ "$rc" -eq 0 ] || failed+=("$name")
  return "$rc"
}

step build 600 "$PY" -m pip install --no-build-isolation --no-deps -e . || { echo "gpu_check: the build failed"; exit 1; }
step build_info 60 "$PY" -c "import divaext, json; i = divaext.build_info(); print(json.dumps(i)); \
assert i['cuda_available_at_runtime'], 'CUDA kernels not usable: ' + json.dumps(i)" || exit 1
cat "$OUT/build_info.log"

# The whole suite; the CUDA variants of the tests run here (they skip on CPU-only machines).
step tests "$TESTS_S" "$PY" -m pytest -q -p no:cacheprovider -rs
# Loss + gradient vs the pure-torch autograd baseline, d = 512, k = 100, float32, with the
# matmul-rate floor (issue targets at n = 10⁶: ≥ 5× faster, ≤ ⅓ extra memory, ≤ 1.5× floor).
step bench_n "$BENCH_S" "$PY" benchmarks/bench_derivative.py --device cuda --ns 10000 100000 1000000 10000000 \
  --skip-baseline-above 1000000 --accuracy 100000
# Scaling in d at n = 10⁶ (time and extra memory, ours and the baseline).
for d in 64 256 1024 2048; do
  step "bench_d$d" "$BENCH_S" "$PY" benchmarks/bench_derivative.py --device cuda --ns 1000000 --d "$d" --repeat 2
done
# Out of core: rows streamed from a file through pinned memory, against the plain read rate.
step bench_streaming "$BENCH_S" "$PY" benchmarks/bench_streaming.py --rows 20000000 --dim 512 \
  --compare-rows 1000000 --dir "$OUT/stream-data" --jobs read-memmap stream
rm -rf "$OUT/stream-data"

echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "gpu_check: every step passed; results in $OUT/"
else
  echo "gpu_check: failed steps: ${failed[*]} (see $OUT/<step>.log)"
  exit 1
fi
