#!/usr/bin/env bash
# One call on a lent GPU machine: the CUDA tests, then the GPU benchmark; logs and BENCHMARKS.md come back under $OUT.
#
# Those machines have PyTorch (Python 3.12) and no network. Here, first: `make gpu-wheels` (POT and torchcfm wheels
# into the git-ignored .whl/). Then one device call:
#     run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=580)
# and copy the gradvar_gpu section of $OUT/BENCHMARKS.md into BENCHMARKS.md here. ~1 min of tests and 3-5 min of
# benchmark on an H100; each step has its own time limit so that a hang leaves the rest of the call's output.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
if ! python3 -c "import ot, torchcfm" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_session: installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
python3 -c "import torch, ot; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'POT', ot.__version__)" \
  2>&1 | tee -a "$OUT/device.txt"
timeout "${TEST_LIMIT:-180}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
timeout "${BENCH_LIMIT:-360}" python3 benchmarks/gradvar_gpu.py 2>&1 | tee "$OUT/gradvar_gpu.log"
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
