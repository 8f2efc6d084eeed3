#!/usr/bin/env bash
# The one command to run on the GPU box (it gets a copy of this repo and the diffusers wheel in .whl/):
#   bash benchmarks/gpu_run.sh            # ~2-4 minutes on an H100; figures in $OUT/gpu_generate.json
# Extra arguments go to gpu_generate.py (e.g. --steps 6, --scenarios plain,vidtray-8gb).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader || true
python3 - <<'PY'
import torch, diffusers, transformers, accelerate
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers {diffusers.__version__}, "
      f"transformers {transformers.__version__}, accelerate {accelerate.__version__}")
assert torch.cuda.is_available(), "no CUDA device visible to torch"
PY
# A few seconds on the tiny model first: a broken environment fails here, not after minutes of building.
python3 benchmarks/gpu_generate.py --tiny --device cuda --scenarios plain,vidtray-8gb --json /tmp/gpu_tiny.json
python3 benchmarks/gpu_generate.py --device cuda "$@"
