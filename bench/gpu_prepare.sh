#!/usr/bin/env bash
# Here, where the package registries answer: gather into .gpu/ (git-ignored) what bench/gpu_run.sh needs on the GPU
# machine, which can download nothing: the llama.cpp source llama-cpp-python 0.3.36 vendors (without its models,
# docs, tests and examples: ~11 MB), llama-cpp-python's Python bindings (the library comes from that build), and
# wheels for Python 3.12 of the packages sentiric needs that the GPU image lacks (/work/.library/device/KINDS.md).
# Then, with the device tool: run(command="bash bench/gpu_run.sh", carry=[".gpu"], timeout_s=600).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu
mkdir -p .gpu/whl
src=$(mktemp -d)
.venv/bin/pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$src"
tar xzf "$src"/llama_cpp_python-0.3.36.tar.gz -C "$src"
tar czf .gpu/llama-src.tgz -C "$src"/llama_cpp_python-0.3.36/vendor \
    --exclude=llama.cpp/models --exclude=llama.cpp/docs --exclude=llama.cpp/tests --exclude=llama.cpp/examples \
    --exclude=llama.cpp/benches --exclude=llama.cpp/media llama.cpp
cp -r "$src"/llama_cpp_python-0.3.36/llama_cpp .gpu/llama_cpp
# the versions this tree is tested with; pydantic-core must match pydantic exactly
for pkg in fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection typing-extensions anyio \
           opentelemetry-api importlib-metadata zipp httptools gguf diskcache; do
    v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$pkg'))")
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/whl "$pkg==$v"
done
rm -rf "$src"
du -sh .gpu
