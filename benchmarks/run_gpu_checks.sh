#!/usr/bin/env bash
# The GPU fast path's checks in one go, on a CUDA machine (issue 11):
#   bash benchmarks/run_gpu_checks.sh [OUT_FOLDER]        (default gpu_checks/)
# 1. the CUDA-only test that counts host synchronisations per step of every loop, with the other
#    fast-path structure tests and the UNet call counts;
# 2. bench_stages on the SD 1.5 architecture (random weights, 512x512, the reference's 80 LoRA steps
#    of batch 4 and 80 drag steps): first edit, re-drag, the UNet-only floor and peak memory.
# Runs from a checkout without installing (src/ on PYTHONPATH); needs torch with CUDA, diffusers,
# peft, transformers, safetensors, pytest. About 3-5 minutes on an H100. Logs go to OUT_FOLDER.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, peft, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu_fast_path.py tests/test_unet_calls.py 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
python3 benchmarks/bench_stages.py --sd15 2>&1 | tee "$out/bench_stages.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench_stages exit $bench" | tee -a "$out/gpu.txt"
exit $(( tests || bench ))
