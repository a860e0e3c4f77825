#!/usr/bin/env bash
# The GPU checks of issue 14 in one run, sized for a lent device's 15 minutes (7 to 10 of them):
#   device.run(command="bash benchmarks/gpu_check.sh", timeout_s=600)
# The device tests (CUDA MGRIT against the CPU and the GPU loop, the chunked CUDA-graph chain against
# the eager one), then the whole solves the CPU figures of docs/performance.md stand beside: digits
# MLP, Adam, float32, compile=True, at N = 4096 and 16384 with 2 levels and cfactor 32 (the cost
# model's choice, fit's default), each beside the plain torch.optim loop on the same GPU, best of 2
# (the first solve holds the compiling and the CUDA graphs' capture); and the
# chain's unit cost.  Records go to $OUT (or benchmarks/results/device/ without one).
set -u
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor}"
out="${OUT:-benchmarks/results/device}"
mkdir -p "$out"
py=python3
command -v "$py" >/dev/null || py=python
"$py" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$out/gpu_check.log"
timeout 250 "$py" -m pytest -q -x -p no:cacheprovider --durations=10 -k cuda tests/test_device.py 2>&1 |
    tail -25 | tee -a "$out/gpu_check.log"
timeout 60 "$py" benchmarks/chain_cost.py --device cuda --out "$out/chain_cost_check.json" 2>&1 |
    tail -12 | tee -a "$out/gpu_check.log"
for n in 4096 16384; do
    t=120; [ "$n" = 16384 ] && t=160
    timeout "$t" "$py" benchmarks/device.py --device cuda --sizes "$n" --optimizers adam --dtypes float32 \
        --levels 2 --cfactor 32 --repeat 2 --max-iter 20 --compile --shares \
        --out "$out/adam_f32_${n}_L2c32_check.json" 2>&1 | tail -4 | tee -a "$out/gpu_check.log"
done
