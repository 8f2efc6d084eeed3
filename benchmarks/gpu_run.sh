#!/usr/bin/env bash
# The one command to run on the GPU box (it gets a copy of this repo and the wheels in .whl/):
#   bash benchmarks/gpu_run.sh            # ~6-7 minutes on an H200; figures in $OUT/gpu_generate.json, log in
#                                         # $OUT/gpu_run.log
# Extra arguments go to gpu_generate.py (e.g. --steps 6, --scenarios plain,compile, --budget 300).
#
# The box has torch, transformers and accelerate (Python 3.12), but not diffusers, nor platformdirs and
# orjson, which vidtray's worker imports (the decode-oom row runs the worker's own decode recovery). Put their
# wheels in .whl/ first (ignored by git; about 7 MiB), from the repo's root on a machine with PyPI:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl diffusers==0.42.1 platformdirs==4.14.9 orjson==3.13.0
# and name .whl in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG="${OUT:-/tmp}/gpu_run.log"
exec > >(tee "$LOG") 2>&1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader || true
python3 - <<'PY'
import importlib
for name in ("torch", "diffusers", "transformers", "accelerate"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError as exc:  # accelerate missing only costs the offload rows (they report the error)
        print(name, "MISSING:", exc)
import torch
print("CUDA", torch.version.cuda)
assert torch.cuda.is_available(), "no CUDA device visible to torch"
try:  # the decode-oom row's imports: a missing wheel is said here, in a second, not after minutes
    import vidtray.services.worker.render  # noqa: F401
except ImportError as exc:
    print(f"decode-oom row will fail: vidtray's worker needs {exc.name}: carry its wheel in .whl/ (see the header)")
PY
python3 benchmarks/gpu_generate.py --self-check
# Seconds on the tiny model first: a broken environment fails here, not after minutes of building.
python3 benchmarks/gpu_generate.py --tiny --device cuda --scenarios plain,decode-oom,fused_qkv --budget 60 \
    --json /tmp/gpu_tiny.json
python3 benchmarks/gpu_generate.py --device cuda "$@"
