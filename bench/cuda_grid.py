"""The plan's formulas against llama.cpp's own dry run (`plan --measure`) over a grid, on whatever build
llama-cpp-python loads: the CPU one `make install` builds, or a CUDA build it is pointed at
(LLAMA_CPP_LIB_PATH=<dir with libllama.so built with -DGGML_CUDA=on>). Header-only GGUFs of real shapes
(tests/cuda_logs.py, the seed's gemma-3-4b) are measured on sparse shadows: no model download needed.

On a CUDA build it checks what this machine cannot: the CUDA_Host buffer, partial offload, op offload on
and off, and gpu_layers 0 (issue 12). Prints a markdown table and the worst errors; exit 1 past --tol.

Run: .venv/bin/python bench/cuda_grid.py [--vram 80GiB] [--tol 0.03]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cuda_logs import MISTRAL_7B_V02, QWEN25_3B, write_header
from seed_model import write_gemma3_4b_header

from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.plan.device import Device, parse_size
from sentiric_cli.plan.measure import compare, measure
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.settings import Settings


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vram", default="80GiB", help="the GPU's memory, for the plan (a CUDA build measures itself)")
    ap.add_argument("--tol", type=float, default=0.03)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sentiric-grid-"))
    models = {"mistral-7b": write_header(tmp / "mistral.gguf", MISTRAL_7B_V02),
              "qwen2.5-3b": write_header(tmp / "qwen.gguf", QWEN25_3B),
              "gemma-3-4b": write_gemma3_4b_header(tmp / "gemma.gguf")}
    size = parse_size(a.vram)
    gpu = (Device("vram", a.vram, size, size),)
    print("| model | settings | what | planned MiB | llama.cpp MiB | error |\n|---|---|---|---:|---:|---:|")
    worst = 0.0
    for name, path in models.items():
        header = read_model(path)
        info = model_info(header)
        full = info.n_layer + 1
        for ctx, fa, ngl, op in itertools.product((4096, 32768), (True, False), (full, full // 2, 0), (True, False)):
            if ngl == full and not op:
                continue  # op offload only matters with CPU layers
            settings = Settings(context_size=ctx, threads=1, flash_attn=fa, gpu_layers=ngl, op_offload=op)
            plan = make_plan(header, info, gpu, settings, {"context_size", "threads", "flash_attn", "gpu_layers",
                                                            "op_offload", "cache_type_k", "cache_type_v", "swa_full"})
            m = measure(header, plan.shape)
            rows, notes = compare(plan, header, m)
            label = f"c{ctx} fa {'on' if fa else 'off'} ngl {ngl}{'' if op else ' no-op-offload'}"
            for r in rows:
                err = r.planned / r.measured - 1 if r.measured else (0.0 if not r.planned else 1.0)
                worst = max(worst, abs(err)) if "compute" in r.what or "KV" in r.what else worst
                print(f"| {name} | {label} | {r.what} | {r.planned / 2**20:,.2f} | {r.measured / 2**20:,.2f} | "
                      f"{err:+.2%} |")
            if notes and "build" in notes[0]:
                print(f"| {name} | {label} | note | {notes[0]} | | |")
    print(f"\nworst KV/compute error: {worst:.2%} (bound {a.tol:.0%})")
    return 0 if worst <= a.tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
