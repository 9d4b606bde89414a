"""A sparse shadow of a real model's shape: its GGUF header (Q4_K_M-like tensor types, tests/cuda_logs.py) and a
hole where the weights would be. llama.cpp loads it and computes with zeros at the same cost as with the real
weights (every logit is 0, so greedy decoding repeats token 0, a byte and no end-of-generation token, to max_tokens).
The file takes no disk for its data: the GPU benchmark (bench/gpu_run.sh) needs no model download.

    .venv/bin/python bench/shadow_model.py OUT.gguf [--shape mistral-7b|qwen2.5-3b|qwen3-0.6b]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cuda_logs import MISTRAL_7B_V02, QWEN3_06B, QWEN25_3B, write_header

from sentiric_cli.gguf.header import read_header

SHAPES = {"mistral-7b": MISTRAL_7B_V02, "qwen2.5-3b": QWEN25_3B, "qwen3-0.6b": QWEN3_06B}


def shadow(out: Path, shape: str) -> Path:
    write_header(out, SHAPES[shape], byte_vocab=True)  # any prompt tokenizes
    h = read_header(out)
    with open(out, "r+b") as f:
        f.truncate(h.data_offset + h.data_bytes_needed)  # a hole: zeros on read, no disk
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mistral-7b")
    a = ap.parse_args()
    print(shadow(a.out, a.shape))


if __name__ == "__main__":
    main()
