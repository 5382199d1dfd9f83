#!/usr/bin/env bash
# The GPU check of issue 20, as one prepared script for a lent H100 (well under 8 minutes):
# generation end to end to disk at SD-2-base shapes (random weights, 512 px, oodkit vs the
# released pipeline's loop on the same GPU) and the DiffGuard benchmark on the GPU. Prints
# each benchmark's JSON. Run from the repository root with .device-wheels carried:
#
#   ../shared/tools/device-wheels.sh        # here, once
#   device run: bash benchmarks/gpu_check.sh   (carry: [".device-wheels"])
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .device-wheels/*.whl
python3 -m pip install -q --no-deps -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "== bench_generate --full"
timeout 330 python3 benchmarks/bench_generate.py --full --images 64 --steps 20 --repeats 2
echo "== bench_diffguard --device cuda"
timeout 100 python3 benchmarks/bench_diffguard.py --device cuda --size 256 --det-size 224 \
  --images 64 --batch 32 --steps 50 --repeats 2
