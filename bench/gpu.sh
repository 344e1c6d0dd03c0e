#!/usr/bin/env bash
# The GPU check, prepared to run in one call on a machine with an NVIDIA GPU:
#   bash bench/gpu.sh            (results in $OUT or bench/results/gpu.json)
# Needs onnxruntime-gpu: either installed, or wheels in .whl/ (see docs/benchmarks.md:
# the runtime's own wheels, plus onnxruntime-gpu) installed here without a network.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())"
out="${OUT:-bench/results}"
mkdir -p "$out"
# the inference stage, CPU against CUDA (fp32 and fp16), then the engine on both
timeout 300 python3 -m bench.gpu --seconds 3 --out "$out/gpu.json"
timeout 240 python3 -m bench.gpu --seconds 1 --batches 512 --engine 20000 --out "$out/gpu-engine.json" || echo "engine run failed or timed out"
