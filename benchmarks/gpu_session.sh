#!/usr/bin/env bash
# One call on a lent GPU machine: the CUDA tests, then the GPU benchmark; logs and BENCHMARKS.md come back under $OUT.
#
# Those machines have PyTorch (Python 3.12) and no network. Here, first: `make gpu-wheels` (POT and torchcfm wheels
# into the git-ignored .whl/). Then one device call:
#     run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=400)
# and copy the gradvar_gpu section of $OUT/BENCHMARKS.md into BENCHMARKS.md here. The device budget (15 min in all,
# 2-4 min of it the machine's start) must hold the whole call, so the inner limits add up to 330 s: the CUDA tests
# (exactness; ~1 min on an H100) first under TEST_LIMIT (90 s), then the benchmark under BENCH_LIMIT (240 s). Each
# step has its own limit so that a hang leaves the rest of the call's output; a benchmark cut off by its limit has
# printed every table row it measured to $OUT/gradvar_gpu.log.
#
# Every step's exit status goes to $OUT/steps.txt; the script exits non-zero when any step failed, after copying
# whatever it produced into $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
WHEELS=${WHEELS:-.whl}
mkdir -p "$OUT"
: >"$OUT/steps.txt"
failed=()

record() {  # record NAME STATUS: one line in steps.txt; a non-zero status marks the session failed
  local name=$1 status=$2 what="ok"
  if [ "$status" -eq 124 ]; then what="hit its time limit"; elif [ "$status" -ne 0 ]; then what="failed"; fi
  echo "$name: exit $status ($what)" | tee -a "$OUT/steps.txt"
  if [ "$status" -ne 0 ]; then failed+=("$name"); fi
}

if ! python3 -c "import ot, torchcfm" 2>/dev/null; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$WHEELS"/*.whl
    record "install the carried wheels" $?
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_session: POT (ot) or torchcfm is missing and no wheels were carried in $WHEELS/: run \`make gpu-wheels\`" \
         "here and pass carry=[\".whl\"]; the OT rows and the torchcfm comparison cannot run"
    record "POT and torchcfm present" 1
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
record "nvidia-smi" $?
python3 -c "import torch, ot; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'POT', ot.__version__)" \
  2>&1 | tee -a "$OUT/device.txt"
record "import torch and POT" $?
timeout "${TEST_LIMIT:-90}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
record "tests/test_cuda.py" $?
timeout "${BENCH_LIMIT:-240}" python3 benchmarks/gradvar_gpu.py 2>&1 | tee "$OUT/gradvar_gpu.log"
status=$?
record "benchmarks/gradvar_gpu.py" $status
if [ "$status" -eq 124 ]; then
  echo "gpu_session: the benchmark hit BENCH_LIMIT; the rows it measured (not written to BENCHMARKS.md):"
  grep '^|' "$OUT/gradvar_gpu.log"
fi
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
record "copy BENCHMARKS.md" $?

if [ "${#failed[@]}" -gt 0 ]; then
  joined=$(printf '%s; ' "${failed[@]}")
  echo "gpu_session: ${#failed[@]} step(s) failed: ${joined%; } (statuses in $OUT/steps.txt)"
  exit 1
fi
echo "gpu_session: every step succeeded"
