"""`plan --measure`: llama.cpp's own dry run, beside the formulas.

llama.cpp can load a model with `no_alloc` (llama_model_params): it reads the metadata, places the
tensors, builds the KV cache and reserves the worst-case graph, logging every size, but allocates
nothing and reads no tensor data. So it works on a sparse shadow of the header: the header bytes,
then a hole as long as the tensor data (no disk used). The figures are for the backend this
llama.cpp was built for (a CPU build here; a CUDA build on a GPU machine) and for any architecture
it supports, which makes it the fallback for the ones sentiric does not model.

The dry run happens in a child process: a model llama.cpp cannot handle must not take the CLI down.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.header import GGUFHeader, read_header
from sentiric_cli.plan.memory import MiB, Shape
from sentiric_cli.plan.usage import Breakdown, strain, verdict

TIMEOUT_S = 120


@dataclass
class Measured:
    weights_bytes: int  # llama_model_size(): every tensor's bytes
    kv_bytes: int  # the KV caches' "size = ..." lines (2 decimals of MiB)
    kv_lines: list[str]
    compute: dict[str, int]  # buffer type ("CPU", "CUDA0", "CUDA_Host") -> bytes (2 decimals of MiB)
    gpu_build: bool = False  # this llama.cpp was built with a GPU backend
    shadow: bool = False  # measured on a sparse shadow of a header-only file


def measure(header: GGUFHeader, shape: Shape, main_gpu: int = 0) -> Measured:
    with tempfile.TemporaryDirectory(prefix="sentiric-measure-") as tmp:
        path, shadow = _runnable(header, Path(tmp))
        settings = {"gpu_layers": shape.gpu_layers, "main_gpu": main_gpu, "tensor_split": list(shape.tensor_split),
                    "context_size": shape.context, "threads": shape.threads, "batch_size": max(shape.batch, shape.ubatch),
                    "ubatch_size": shape.ubatch, "flash_attn": shape.flash_attn, "swa_full": shape.swa_full,
                    "kv_offload": shape.kv_offload, "op_offload": shape.op_offload,
                    "tensor_overrides": list(shape.overrides), "cache_type_k": shape.cache_type_k,
                    "cache_type_v": shape.cache_type_v}
        job = {"path": str(path), "settings": settings, "kv_unified": shape.kv_unified}
        try:
            done = subprocess.run([sys.executable, "-m", "sentiric_cli.plan.measure", json.dumps(job)],
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise SentiricError(f"--measure: llama.cpp's dry run took over {TIMEOUT_S} s") from None
    out = done.stdout.strip().splitlines()
    if done.returncode != 0 or not out:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise SentiricError(f"--measure: llama.cpp's dry run failed: {why}", "the plan's formulas still stand")
    got = json.loads(out[-1])
    if "error" in got:
        raise SentiricError(f"--measure: {got['error']}", "the plan's formulas still stand")
    return _parse(got, shadow)


def _parse(got: dict, shadow: bool) -> Measured:
    log = got["log"]
    kv_lines = re.findall(r"(?:llama_kv_cache|llama_memory_recurrent): size = .*", log)
    kv = sum(float(x) for x in re.findall(r"(?:llama_kv_cache|llama_memory_recurrent): size =\s+([\d.]+) MiB", log))
    compute: dict[str, int] = {}
    for name, mib in re.findall(r"(\S+) compute buffer size =\s+([\d.]+) MiB", log):
        compute[name] = compute.get(name, 0) + round(float(mib) * MiB)
    return Measured(got["model_size"], round(kv * MiB), kv_lines, compute, got["gpu"], shadow)


@dataclass(frozen=True)
class Comparison:
    what: str
    planned: int
    measured: int


def compare(plan, header: GGUFHeader, m: Measured) -> tuple[list[Comparison], list[str]]:
    """The plan's figures beside llama.cpp's, and what the plan adopts: where they differ by more than
    the log's rounding, llama.cpp's own figure wins (plan.memory is replaced, its verdicts recomputed)."""
    bd = plan.memory
    weights = sum(t.n_bytes for t in header.tensors)
    rows = [Comparison("weights (all tensors)", weights, m.weights_bytes),
            Comparison("KV cache", bd.kv_bytes, m.kv_bytes)]
    notes: list[str] = []
    same_backend = m.gpu_build == (bd.backend == "cuda")
    if same_backend and bd.backend == "cpu":
        rows.append(Comparison("compute buffer (CPU)", bd.compute_bytes, m.compute.get("CPU", 0)))
    elif same_backend:
        for i, u in enumerate(bd.devices):
            rows.append(Comparison(f"compute buffer (CUDA{i})", u.compute_bytes, m.compute.get(f"CUDA{i}", 0)))
        rows.append(Comparison("compute buffer (CUDA_Host)", bd.host_compute_bytes, m.compute.get("CUDA_Host", 0)))
    else:
        notes.append("this llama.cpp is a " + ("GPU" if m.gpu_build else "CPU-only") + " build: its compute buffers "
                     f"are not the {bd.backend.upper()} plan's; run --measure where the planned backend is built")
    off = [r for r in rows if abs(r.planned - r.measured) > 0.01 * MiB * 4]  # the log prints 2 decimals of MiB
    if not off:
        notes.append("llama.cpp's dry run agrees with the plan")
        return rows, notes
    notes.append("llama.cpp's dry run differs from the formulas: its figures are used for the verdict ("
                 + ", ".join(f"{r.what} {r.planned / MiB:,.2f} -> {r.measured / MiB:,.2f} MiB" for r in off) + ")")
    plan.memory = _adopt(bd, m)
    return rows, notes


def _adopt(bd: Breakdown, m: Measured) -> Breakdown:
    """The breakdown with llama.cpp's KV and (same backend) compute figures in place of the formulas'."""
    kv_delta = m.kv_bytes - bd.kv_bytes
    uses = []
    for i, u in enumerate(bd.devices):
        if bd.backend == "cpu":
            comp = m.compute.get("CPU", u.compute_bytes) if not m.gpu_build else u.compute_bytes
            kv = u.kv_bytes + kv_delta
        else:
            comp = m.compute.get(f"CUDA{i}", u.compute_bytes) if m.gpu_build else u.compute_bytes
            kv = u.kv_bytes + (kv_delta * u.kv_bytes // bd.kv_device_bytes if bd.kv_device_bytes else 0)
        total = u.total_bytes + (comp - u.compute_bytes) + (kv - u.kv_bytes)
        need = total + u.margin_bytes
        uses.append(replace(u, compute_bytes=comp, kv_bytes=kv, total_bytes=total, need_bytes=need,
                            verdict=verdict(need, u.free_bytes)))
    worst = max((*uses, bd.host) if bd.host is not None and bd.backend != "cpu" else uses, key=strain)
    return replace(bd, devices=tuple(uses), kv_bytes=m.kv_bytes, total_device_bytes=sum(u.total_bytes for u in uses),
                   compute_bytes=sum(u.compute_bytes for u in uses), need_bytes=sum(u.need_bytes for u in uses),
                   verdict=worst.verdict)


def _runnable(header: GGUFHeader, tmp: Path) -> tuple[Path, bool]:
    """The model itself when its files hold their tensor data, else sparse shadows of its headers."""
    paths = header.shards or [header.path]
    headers = [read_header(p) for p in paths]
    if all(h.file_size >= h.data_offset + h.data_bytes_needed for h in headers):
        return paths[0], False
    for p, h in zip(paths, headers, strict=True):
        with open(p, "rb") as src, open(tmp / p.name, "wb") as dst:
            dst.write(src.read(h.data_offset))
            dst.truncate(h.data_offset + h.data_bytes_needed)  # a hole: no disk, no data
    return tmp / paths[0].name, True


def _child(job: dict) -> dict:
    """In the child: load with no_alloc, make the context (the engine's own parameter builders), return the log."""
    from llama_cpp import llama_cpp as C

    from sentiric_cli.engine.llamalog import tap_log
    from sentiric_cli.engine.params import context_params, model_params
    from sentiric_cli.settings import Settings

    log: list[str] = []
    tap_log(log)
    settings = Settings.model_construct(**{**Settings().model_dump(), **job["settings"]})  # the plan's shape as is
    try:
        # the CPU repack buffers are a CPU-path choice, not the model's need: left out
        mp, keep = model_params(settings, extra_bufts=False, no_alloc=True)
    except SentiricError as e:
        return {"error": str(e)}
    model = C.llama_model_load_from_file(job["path"].encode(), mp)
    del keep
    if not model:
        return {"error": "llama.cpp could not load the model: " + _last(log)}
    ctx = C.llama_init_from_model(model, context_params(settings, kv_unified=job["kv_unified"]))
    if not ctx:
        C.llama_model_free(model)
        return {"error": "llama.cpp refused the context: " + _last(log)}
    size = C.llama_model_size(model)
    C.llama_free(ctx)
    C.llama_model_free(model)
    return {"model_size": size, "log": "".join(log), "gpu": bool(C.llama_supports_gpu_offload())}


def _last(log: list[str]) -> str:
    lines = [x.strip() for x in "".join(log).splitlines() if x.strip()]
    return lines[-1] if lines else "no message"


if __name__ == "__main__":
    os.environ.setdefault("GGML_LOG_LEVEL", "info")
    print(json.dumps(_child(json.loads(sys.argv[1]))))
