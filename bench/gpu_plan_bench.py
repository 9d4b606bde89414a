"""`make bench`, issue 12: the GPU plan against published CUDA logs, llama.cpp's dry run against the
formulas over the architecture zoo, and planning time with several GPUs.

Run: .venv/bin/python bench/gpu_plan_bench.py --append docs/benchmarks.md
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import COMPUTE_TOL, DEFAULT_TOL
from cuda_logs import LOGS, plan_log, settings_text, write_header
from plan_bench import write_llama70b_header
from report import record
from synth import ARCHS, write_model

from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.measure import measure
from sentiric_cli.plan.memory import MiB, Shape, compute_buffer, kv_cache
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.settings import Settings

GPU = Device("vram", "24 GiB", 24 * 1024**3, 24 * 1024**3)


def cuda_rows(tmp: Path) -> list[str]:
    out = ["| log | settings | KV planned / logged | GPU compute planned / logged | CUDA_Host planned / logged |",
           "|---|---|---:|---:|---:|"]
    for log in LOGS:
        bd = plan_log(log, write_header(tmp / f"{log.name.split()[0]}.gguf", log.shape))
        host = f"{bd.host_compute_bytes / MiB:.2f} / {log.host_compute_mib:.2f}" if log.host_compute_mib else "-"
        compute = ", ".join(f"{d.compute_bytes / MiB:.2f} / {x:.2f}" for d, x in zip(bd.devices, log.device_compute_mib,
                                                                                   strict=True))
        link = f"[{log.name}]({log.source})" if log.source.startswith("http") else log.name
        out.append(f"| {link} ({log.date}) | `{settings_text(log)}` | {bd.kv_bytes / MiB:.2f} / {log.kv_mib:.2f} | "
                   f"{compute} | {host} |")
    return out


def dry_run_rows(tmp: Path) -> list[str]:
    out = ["| architecture | settings | KV formula / llama.cpp (MiB) | CPU compute formula / llama.cpp (MiB) | error | bound |",
           "|---|---|---:|---:|---:|---:|"]
    for arch in ARCHS:
        header = read_model(write_model(tmp / f"zoo-{arch}.gguf", arch, n_vocab=8192, n_embd=256, n_head=8,
                                        n_head_kv=2, n_ff=768))
        info = model_info(header)
        for shape in (Shape(context=2048, threads=2), Shape(context=4096, flash_attn=False)):
            m = measure(header, shape)
            kv = kv_cache(info, shape).bytes
            comp = compute_buffer(info, shape, kv_cache(info, shape)).bytes
            err = comp / m.compute["CPU"] - 1
            out.append(f"| {arch} | {shape.context} x{shape.threads} fa {'on' if shape.flash_attn else 'off'} | "
                       f"{kv / MiB:.2f} / {m.kv_bytes / MiB:.2f} | {comp / MiB:.3f} / {m.compute['CPU'] / MiB:.2f} | "
                       f"{err:+.2%} | {COMPUTE_TOL.get(info.arch, DEFAULT_TOL):.0%} |")
    return out


def timing(tmp: Path) -> list[str]:
    big = read_model(write_llama70b_header(tmp / "llama-70b.gguf"))
    info = model_info(big)
    out = ["| devices | chosen | per-GPU layers | time (median of 5) |", "|---|---|---|---:|"]
    for devs in ((Device("vram", "48 GiB", 48 << 30, 48 << 30),),
                 tuple(Device("vram", "24 GiB", 24 << 30, 24 << 30, str(i)) for i in range(2)),
                 (Device("vram", "16 GiB", 16 << 30, 16 << 30, "0"), Device("vram", "24 GiB", 24 << 30, 24 << 30, "1"))):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            plan = make_plan(big, info, devs, Settings())
            times.append(time.perf_counter() - t0)
        s = plan.shape
        out.append(f"| {' + '.join(d.name for d in devs)} | {s.context:,} x {s.threads}, {s.cache_type_k}, "
                   f"{s.gpu_layers} layers, {plan.memory.verdict} | "
                   f"{' / '.join(u.layers for u in plan.memory.devices)} | {statistics.median(times) * 1000:.0f} ms |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.parse_args()  # --help
    tmp = Path(tempfile.mkdtemp(prefix="sentiric-gpu-bench-"))
    lines = ["", "## GPU plans (issue 12)", "",
             f"`bench/gpu_plan_bench.py` on {platform.machine()}, Python {platform.python_version()}. No GPU was "
             "available: the CUDA figures are checked against published logs, and llama.cpp's own dry run "
             "(`plan --measure`) is the CPU build's.", "",
             "### Against published CUDA logs (header-only GGUFs of the logged models, `tests/cuda_logs.py`)", "",
             *cuda_rows(tmp), "",
             "### llama.cpp's dry run (`--measure`, no_alloc) against the formulas, CPU build", "",
             *dry_run_rows(tmp), "",
             "### Planning llama-3-70B shapes (Q4_K) on one and two GPUs", "",
             *timing(tmp), ""]
    record("gpu_plan", "\n".join(lines).strip())


if __name__ == "__main__":
    main()
