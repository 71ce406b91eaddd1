#!/usr/bin/env bash
# The GPU check: run it first on a machine with a CUDA GPU (CI has none).
#   bash scripts/gpu_check.sh
# 1. the GPU tests (tests/test_gpu.py: CUDA training, bf16 autocast, channels_last),
# 2. scripts/bench_gpu.py: images/s of one trial vs a plain PyTorch loop at CIFAR scale
#    (target >= 0.9), four trials sharing the GPU, utilisation and peak memory
#    -> results/benchmarks/gpu.json.
# Without CUDA it says so in one line and exits with 2, having run nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False, with $python): nothing run" >&2
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$python" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")'
echo "+ GPU tests"
"$python" -m pytest -q -m "" tests/test_gpu.py -p no:cacheprovider
echo "+ throughput benchmark"
"$python" scripts/bench_gpu.py "$@"
