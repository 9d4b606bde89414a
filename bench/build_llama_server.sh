#!/usr/bin/env bash
# Build llama.cpp's llama-server from the source llama-cpp-python 0.3.36 vendors (the benchmark's peer).
# Same CPU footing as sentiric's own build: the extra C flags scripts/install_llama.py uses on this CPU
# (e.g. no AMX where the CPU traps it; docs/cpu.md). Output: build/llama-server/bin/llama-server.
# Takes ~6 minutes on 2 cores; skipped when present and built with the same flags.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/llama-server
flags=$(.venv/bin/python scripts/install_llama.py --cflags)
if [ -x "$out/bin/llama-server" ] && [ "$(cat "$out/.cflags" 2>/dev/null)" = "$flags" ]; then exit 0; fi
rm -rf "$out"
src=$(mktemp -d)
.venv/bin/pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$src"
tar xzf "$src"/llama_cpp_python-0.3.36.tar.gz -C "$src"
CFLAGS="${CFLAGS:-} $flags" CXXFLAGS="${CXXFLAGS:-} $flags" \
cmake -S "$src"/llama_cpp_python-0.3.36/vendor/llama.cpp -B "$out" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON > /dev/null
cmake --build "$out" --target llama-server -j "$(nproc)" > /dev/null
echo "$flags" > "$out/.cflags"
