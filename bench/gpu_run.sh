#!/usr/bin/env bash
# On the GPU machine (issue 13), after bench/gpu_prepare.sh here: builds llama.cpp with CUDA from the vendored source,
# points llama-cpp-python at it (LLAMA_CPP_LIB_PATH), writes a sparse shadow of a 7B header (bench/shadow_model.py:
# real shapes, zero weights, no download) and runs bench/overhead_bench.py on it against the llama-server of the same
# build, every layer on the GPU. Results: $OUT/gpu_overhead.md (for docs/benchmarks.md), $OUT/build.log.
#
#   device run: bash bench/gpu_run.sh [repeats] [clients]     carry: [".gpu"]     timeout_s: 600
#
# Not yet run on a GPU (no session drew one). Dry run on CPU, everything but the CUDA build (Python 3.12 with the
# GPU image's packages, the CPU llama-server and library):
#   LLAMA_SERVER=build/llama-server/bin/llama-server LLAMA_CPP_LIB_PATH=<llama_cpp/lib> \
#   SHAPE=qwen3-0.6b bash bench/gpu_run.sh 1 1
# The CUDA build is the long part: flash-attention kernels are left out (GGML_CUDA_FA=OFF, the same build for both
# servers) and only sm_90 (H100/H200) is built. A rerun on the same warm machine skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
clients=${2:-1,4,8,16}
shape=${SHAPE:-mistral-7b}  # bench/shadow_model.py --shape
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
mkdir -p /tmp/py /tmp/src
cp -r .gpu/llama_cpp /tmp/py/
export PYTHONPATH="/tmp/site:/tmp/py:$PWD" PYTHONUNBUFFERED=1
# LLAMA_SERVER and LLAMA_CPP_LIB_PATH given: no build (a dry run on CPU). A build left by an earlier call on the same
# warm machine is used again.
if [ -z "${LLAMA_SERVER:-}" ]; then
    if [ ! -x /tmp/lb/bin/llama-server ]; then
        tar xzf .gpu/llama-src.tgz -C /tmp/src
        cmake -S /tmp/src/llama.cpp -B /tmp/lb -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
              -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=ON \
              -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
              > "$OUT/build.log" 2>&1
        cmake --build /tmp/lb --target llama-server -j "$(nproc)" >> "$OUT/build.log" 2>&1
        echo "built in $(( $(date +%s) - t0 )) s"
    fi
    export LLAMA_CPP_LIB_PATH=/tmp/lb/bin LLAMA_SERVER=/tmp/lb/bin/llama-server
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
model=/tmp/shadow-$shape.gguf
python3 bench/shadow_model.py "$model" --shape "$shape"
python3 -m sentiric_cli plan "$model" --threads 8 --context 512 2>&1 | tail -4
python3 bench/overhead_bench.py --model "$model" --clients "$clients" --repeats "$repeats" \
    --server-args "-ngl 999" --append "$OUT/gpu_overhead.md"
echo "done in $(( $(date +%s) - t0 )) s"
