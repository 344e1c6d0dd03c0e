#!/usr/bin/env bash
# The GPU check, prepared to run in one call on a machine with an NVIDIA GPU:
#   bash bench/gpu.sh            (results in $OUT or bench/results)
# Needs onnxruntime-gpu (1.31 is built for CUDA 13 and cuDNN 9): either installed, or
# wheels in .whl/ (the runtime's own wheels, plus onnxruntime-gpu) installed here without
# a network. The CUDA libraries of pip's nvidia-* wheels (onnxruntime-gpu[cuda,cudnn], or
# torch's) are put on LD_LIBRARY_PATH; the system's are found as usual.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
libs=$(python3 -c "import glob, os, site
print(':'.join(sorted({os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/**/lib*/*.so*', recursive=True)})))")
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())"
out="${OUT:-bench/results}"
mkdir -p "$out"
# the inference stage, CPU against CUDA (fp32 and fp16), then the engine's drains on both
timeout 400 python3 -m bench.gpu --seconds 1.5 --engine 20000 --out "$out/gpu.json" || echo "bench.gpu failed or timed out"
# latency at fixed rates, the worker on each provider (its feed: 15,000 x 10 transactions,
# 19,000 x 10 clicks, from ../shared/data)
for provider in cpu cuda; do
    STREAMER_MODELS_PROVIDER=$provider timeout 150 python3 -m bench.load clicks 8000 11000 --seconds 10 \
        --out "$out/gpu-load-clicks-$provider.json"
    STREAMER_MODELS_PROVIDER=$provider timeout 100 python3 -m bench.load transactions 15000 --seconds 10 \
        --out "$out/gpu-load-transactions-$provider.json"
done
exit 0
