"""`make bench`: the plan's accuracy against llama.cpp, and how long planning a 70B-class header takes.

Writes docs/benchmarks.md. Run: .venv/bin/python bench/plan_bench.py --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import gguf
import llama_cpp
import numpy as np
from accuracy import COMPUTE_TOL, DEFAULT_TOL, compare, shapes_for_synth
from report import record
from seed_model import write_gemma3_4b_header
from synth import ARCHS, write_model

from sentiric_cli.bundled import bundled_model
from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.memory import MiB
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.settings import Settings


def write_llama70b_header(path: Path) -> Path:
    """Llama-3-70B's shapes (80 blocks, 8192 wide, GQA 64/8, 128256 vocabulary), Q4_K, header only."""
    return write_llama_header(path, n_layer=80, n_embd=8192, n_head=64, n_head_kv=8, n_ff=28672, n_vocab=128256,
                              n_ctx=131072, qtype=gguf.GGMLQuantizationType.Q4_K)


def write_llama_header(path: Path, *, n_layer: int, n_embd: int, n_head: int, n_head_kv: int, n_ff: int, n_vocab: int,
                       n_ctx: int, qtype, output_qtype=None) -> Path:
    """A llama-architecture GGUF header (no tensor data) with every matrix in `qtype`."""
    f32 = gguf.GGMLQuantizationType.F32
    kv_width = n_embd // n_head * n_head_kv
    w = gguf.GGUFWriter(str(path), "llama")
    for add, v in ((w.add_context_length, n_ctx), (w.add_embedding_length, n_embd), (w.add_block_count, n_layer),
                   (w.add_feed_forward_length, n_ff), (w.add_head_count, n_head), (w.add_head_count_kv, n_head_kv),
                   (w.add_layer_norm_rms_eps, 1e-5), (w.add_rope_dimension_count, n_embd // n_head)):
        add(v)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(n_vocab)])

    def t(name, shape, qt):
        block, size = gguf.GGML_QUANT_SIZES[qt]
        w.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) // block * size, raw_dtype=qt)

    t("token_embd.weight", (n_vocab, n_embd), qtype)
    t("output.weight", (n_vocab, n_embd), output_qtype or qtype)
    t("output_norm.weight", (n_embd,), f32)
    for i in range(n_layer):
        p = f"blk.{i}."
        for name, shape in (("attn_q", (n_embd, n_embd)), ("attn_k", (kv_width, n_embd)),
                            ("attn_v", (kv_width, n_embd)), ("attn_output", (n_embd, n_embd)),
                            ("ffn_gate", (n_ff, n_embd)), ("ffn_up", (n_ff, n_embd)), ("ffn_down", (n_embd, n_ff))):
            t(p + name + ".weight", shape, qtype)
        t(p + "attn_norm.weight", (n_embd,), f32)
        t(p + "ffn_norm.weight", (n_embd,), f32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def plan_seconds(path: Path, repeats: int = 5) -> tuple[float, int]:
    device = Device("vram", "48 GiB GPU", 48 * 1024**3, 48 * 1024**3)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        header = read_header(path)
        plan = make_plan(header, model_info(header), device, Settings())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(plan.options)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sentiric-bench-"))
    sets = [("gemma-3-270m Q4_K_M (bundled)", compare(bundled_model(), "gemma-3-270m"))]
    for arch in ARCHS:
        path = write_model(tmp / f"{arch}.gguf", arch, n_vocab=8192, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)
        sets.append((f"synthetic {arch}", compare(path, arch, shapes_for_synth(model_info(read_header(path)).has_swa))))
    big = write_llama70b_header(tmp / "llama-70b-q4_k.gguf")
    seconds, n_options = plan_seconds(big)
    seed = write_gemma3_4b_header(tmp / "gemma-3-4b-it-Q4_K_M.gguf")
    seed_s, _ = plan_seconds(seed)

    lines = [f"{platform.machine()}, Python {platform.python_version()}, llama-cpp-python {llama_cpp.__version__} "
             "(CPU). Every row creates a real llama.cpp context with the planned settings and reads llama.cpp's own "
             "buffer reports (KV: the `KV buffer size` lines, 2 decimals in MiB; compute: the 4-decimal "
             "`compute buffer size is` line; weights: `llama_model_size()` and the mapped model buffer, repack "
             "buffer off). Synthetic models: 256 wide, 8 heads, 2 KV heads, 8192-token vocabulary.", "",
             "| model | rows | KV exact | weights exact | worst compute error | bound | worst row |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, rows in sets:
        worst = max(rows, key=lambda r: abs(r.compute_err))
        kv_ok = sum(r.kv_pred == r.kv_meas for r in rows)
        w_ok = sum(r.weights_pred == r.weights_size for r in rows)
        tol = DEFAULT_TOL if "bundled" in name else COMPUTE_TOL.get(rows[0].arch, DEFAULT_TOL)
        lines.append(f"| {name} | {len(rows)} | {kv_ok}/{len(rows)} | {w_ok}/{len(rows)} | "
                     f"{worst.compute_err:+.2%} | {tol:.0%} | {worst.label} |")
    lines += ["", "### Every row", "",
              "| model | settings | KV planned (MiB) | KV llama.cpp (MiB) | compute planned | compute llama.cpp | error |",
              "|---|---|---|---|---:|---:|---:|"]
    for name, rows in sets:
        for r in rows:
            lines.append(f"| {name} | {r.label} | {' + '.join(r.kv_pred)} | {' + '.join(r.kv_meas)} | "
                         f"{r.compute_pred:.3f} | {r.compute_meas:.3f} | {r.compute_err:+.2%} |")
    size_gib = sum(t.n_bytes for t in read_header(big).tensors) / 1024**3
    record("plan", "\n".join(lines), [{"model": name, "rows": [r.__dict__ for r in rows]} for name, rows in sets],
           title="Plan accuracy against llama.cpp")
    lines = ["Header read + model facts + the full options table and recommendation, median of 5 runs:", "",
              "| header | weights | options | time |", "|---|---:|---:|---:|",
              f"| llama-3-70B shapes, Q4_K, 128k vocabulary | {size_gib:.1f} GiB | {n_options} | {seconds * 1000:.0f} ms |",
              f"| gemma-3-4b-it Q4_K_M (seed scenario), 262k vocabulary | "
              f"{sum(t.n_bytes for t in read_header(seed).tensors) / MiB:,.0f} MiB | | {seed_s * 1000:.0f} ms |"]
    record("plan_time", "\n".join(lines), {"llama70b_s": seconds, "options": n_options, "gemma3_4b_s": seed_s},
           title="Time to plan")


if __name__ == "__main__":
    main()
