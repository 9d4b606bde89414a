"""The speed a plan gives: decode tokens/s from the bytes each token reads, prompt tokens/s as a compute bound.

Decoding one token reads every weight it uses once (MoE: the used experts' share) and the sequence's KV
cache, on the device each lives on; the devices run one after another. So a step takes
    sum over devices of (bytes read there) / (that device's memory bandwidth)
and each of `threads` busy sequences gets one token per step (weights read once per step, each KV its own).
This is the memory-bandwidth bound that decode speed sits under; docs/benchmarks.md gives the measured
ratio to llama.cpp's own speed. Bandwidths: NVML's memory clock x bus width for a GPU; for host RAM a short
multi-threaded copy measured once per machine and cached (machine.cache_dir()), or `--bandwidth`.
A prompt token costs 2 FLOPs per weight it uses plus its attention; against the device's peak that is
an upper bound on prompt speed, never an estimate of it.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.header import GGUFHeader
from sentiric_cli.gguf.modelinfo import ModelInfo
from sentiric_cli.machine import cache_dir, cpu_info, cpu_mhz
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.layout import CPU
from sentiric_cli.plan.memory import Shape, context_sizes, kv_cache, tensor_layer
from sentiric_cli.plan.usage import Breakdown

COPY_BYTES = 64 * 1024 * 1024  # per thread: past any CPU cache, short enough to measure in ~0.1 s
_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b)(?:/s|ps)?\s*", re.IGNORECASE)
_UNIT = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class Bandwidths:
    """Bytes per second by device index (CPU = -1), and where each figure came from."""

    by_device: dict[int, float]
    sources: dict[int, str]


@dataclass(frozen=True)
class Speed:
    decode_tps: float | None  # one request's tokens/s at a full context, every thread busy; None: a bandwidth unknown
    decode_tps_all: float | None  # all threads together
    step_bytes: dict[int, int]  # bytes a decode step reads per device (CPU = -1)
    prompt_flops: int  # FLOPs of one prompt token at half the context (its mean attention span)
    prompt_tps_bound: float | None  # peak FLOP/s / prompt_flops on the slowest-holding device; None: peak unknown
    sources: tuple[str, ...]


def parse_rate(text: str) -> float:
    """'60GB/s', '936 GB/s', '1.5TB/s', '50GiB/s' -> bytes per second."""
    hit = _RATE.fullmatch(text or "")
    if not hit or float(hit[1]) <= 0:
        raise SentiricError(f"cannot read bandwidth {text!r}", "write it like 60GB/s, 936GB/s or 1.5TB/s")
    return float(hit[1]) * _UNIT[hit[2].lower()]


def parse_bandwidth(spec: str | None) -> dict[str, float]:
    """--bandwidth: '60GB/s' (host RAM), or 'host=60GB/s,gpu=936GB/s' (every GPU), 'gpu1=...' (one GPU)."""
    out: dict[str, float] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.rpartition("=")
        key = key.strip().lower() or "host"
        if not re.fullmatch(r"host|gpu\d*", key):
            raise SentiricError(f"--bandwidth {spec}: {key!r} is not host, gpu or gpuN", "e.g. host=60GB/s,gpu=936GB/s")
        out[key] = parse_rate(value)
    if spec is not None and not out:
        raise SentiricError("--bandwidth is empty", "e.g. --bandwidth 60GB/s")
    return out


def bandwidths(devices: tuple[Device, ...], given: dict[str, float], measure_host: bool = True) -> Bandwidths:
    gpus = [d for d in devices if d.is_gpu]
    by: dict[int, float] = {}
    src: dict[int, str] = {}
    for i, d in enumerate(gpus):
        for key in (f"gpu{i}", "gpu"):
            if key in given:
                by[i], src[i] = given[key], f"--bandwidth {key}"
                break
        else:
            if d.bandwidth:
                by[i], src[i] = d.bandwidth, "NVML: max memory clock x bus width x 2 (double data rate)"
    if "host" in given:
        by[CPU], src[CPU] = given["host"], "--bandwidth host"
    elif measure_host:
        rate, how = host_bandwidth()
        by[CPU], src[CPU] = rate, how
    return Bandwidths(by, src)


def step_bytes(header: GGUFHeader, info: ModelInfo, shape: Shape, bd: Breakdown) -> dict[int, int]:
    """Bytes one decode step reads on each device: weights once (experts by their used share; the input
    embedding one row per token), and every busy sequence's KV cache at a full context."""
    where = list(bd.layer_devices)
    per_layer, inputs, tied = _weight_reads(header, info)
    out: dict[int, int] = {CPU: inputs}
    for il, n in enumerate(per_layer):
        out[where[il]] = out.get(where[il], 0) + n
    if tied:  # a tied output reads the whole embedding matrix, where the output layer lives
        out[where[info.n_layer]] = out.get(where[info.n_layer], 0) + tied
    # every busy sequence's cache, each read by its own token where it lives; a sliding-window layer's
    # attention reads only its window of cells, whatever the cache holds (swa_full)
    kv = kv_cache(info, shape, where)
    n_ctx_seq = context_sizes(shape)[1]
    for il, n in enumerate(kv.layers):
        if n and info.swa[il] and info.n_swa:
            cells = n_ctx_seq if shape.swa_full else next(g.cells for g in kv.groups if g.kind == "sliding")
            n = n * min(cells, info.n_swa) // cells
        dev = where[il] if shape.kv_offload else CPU
        if n:
            out[dev] = out.get(dev, 0) + n
    return out


def _expert_share(info: ModelInfo) -> float:
    """The part of an MoE layer's expert weights one token uses: n_expert_used of n_expert (1 without experts)."""
    return info.n_expert_used / info.n_expert if info.n_expert and info.n_expert_used else 1.0


def _weight_reads(header: GGUFHeader, info: ModelInfo) -> tuple[list[int], int, int]:
    """(bytes a decode step reads per layer, of the input tensors, of a tied output), once per header."""
    key = ("weight_reads", info.n_layer)
    if key in header.memo:
        return header.memo[key]
    share = _expert_share(info)
    per_layer = [0] * (info.n_layer + 1)
    inputs = tied = 0
    has_output = any(t.name == "output.weight" for t in header.tensors)
    for t in header.tensors:
        il = tensor_layer(t.name, info.n_layer)
        if il is None:
            inputs += t.n_bytes // max(t.shape[-1], 1)  # one row per token
            tied += t.n_bytes if t.name == "token_embd.weight" and not has_output else 0
        else:
            per_layer[il] += int(t.n_bytes * share) if "_exps" in t.name else t.n_bytes
    header.memo[key] = (per_layer, inputs, tied)
    return per_layer, inputs, tied


def _weight_flops(header: GGUFHeader, info: ModelInfo) -> int:
    key = ("weight_flops", info.n_layer)
    if key not in header.memo:
        share = _expert_share(info)
        weights = 0
        for t in header.tensors:
            if t.name.startswith("token_embd.") or len(t.shape) < 2:
                continue
            weights += int(t.n_elements * (share if "_exps" in t.name else 1.0))
        if not any(t.name == "output.weight" for t in header.tensors):
            weights += next((t.n_elements for t in header.tensors if t.name == "token_embd.weight"), 0)
        header.memo[key] = 2 * weights
    return header.memo[key]


def prompt_flops(header: GGUFHeader, info: ModelInfo, shape: Shape) -> int:
    """2 FLOPs per weight element a token uses (not the input embedding; experts by their used share), plus
    attention (QK and PV, 4 x head length x heads) over half the context, a prompt token's mean span."""
    span = shape.context / 2
    attn = 0.0
    for il in range(info.n_layer):
        if info.n_head_kv[il] == 0:
            continue
        layer_span = min(span, info.n_swa) if info.swa[il] and info.n_swa else span
        attn += 2 * layer_span * info.n_head[il] * (info.head_k + info.head_v)
    return int(_weight_flops(header, info) + attn)


def speed(header: GGUFHeader, info: ModelInfo, shape: Shape, bd: Breakdown, bw: Bandwidths,
          peaks: dict[int, float]) -> Speed:
    """`peaks`: FLOP/s by device where known (host: cpu_peak_flops)."""
    reads = step_bytes(header, info, shape, bd)
    missing = [d for d in reads if d not in bw.by_device]
    seconds = sum(n / bw.by_device[d] for d, n in reads.items() if d in bw.by_device)
    tps = None if missing or seconds <= 0 or info.no_cache else 1.0 / seconds  # an encoder does not decode
    flops = prompt_flops(header, info, shape)
    # a prompt is computed where its weights are; with op offload a GPU build computes CPU layers' big batches
    # on the first GPU, so its peak bounds them too
    gpu_peak = peaks.get(0)
    devices_used = {d for d in reads if reads[d] > 0}
    bound = None
    if devices_used and all(d in peaks or (shape.op_offload and gpu_peak) for d in devices_used):
        per = [peaks.get(d, gpu_peak) for d in devices_used]
        bound = min(p for p in per if p) / flops if flops else None
    return Speed(tps, None if tps is None else tps * shape.threads, reads, flops, bound,
                 tuple(f"{'host RAM' if d == CPU else f'GPU {d}'}: {bw.sources[d]}" for d in sorted(bw.sources)))


# ---------------------------------------------------------------- host RAM bandwidth and CPU peak, measured here


def host_bandwidth() -> tuple[float, str]:
    """Copy bandwidth of this machine's RAM (bytes read + written per second), cached per machine."""
    key = _machine_key()
    cache = cache_dir() / "bandwidth.json"
    try:
        got = json.loads(cache.read_text())
        if got.get("machine") == key and got.get("bytes_per_s", 0) > 0:
            return float(got["bytes_per_s"]), f"a copy measured on {time.strftime('%Y-%m-%d', time.localtime(got['at']))} (cached)"
    except (OSError, ValueError, TypeError, KeyError):
        pass
    rate = _measure_copy()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"machine": key, "bytes_per_s": rate, "at": time.time()}))
        os.replace(tmp, cache)
    except OSError:
        pass
    return rate, "a copy measured now (cached for the next plan)"


def _measure_copy() -> float:
    """Every core copies its own 64 MiB at once (ctypes.memmove lets go of the GIL); best of 3 rounds."""
    import ctypes  # here: only the first plan on a machine measures
    import threading

    n = max(1, min(os.cpu_count() or 1, 16))
    pairs = [(ctypes.create_string_buffer(COPY_BYTES), ctypes.create_string_buffer(COPY_BYTES)) for _ in range(n)]
    for src, dst in pairs:  # touch every page first: the first write faults them in
        ctypes.memmove(dst, src, COPY_BYTES)
    best = 0.0
    for _ in range(3):
        threads = [threading.Thread(target=ctypes.memmove, args=(dst, src, COPY_BYTES)) for src, dst in pairs]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, 2 * COPY_BYTES * n / (time.perf_counter() - t0))
    return best


def cpu_peak_flops(threads: int | None = None) -> tuple[float | None, str]:
    """FLOP/s of this CPU's cores from /proc/cpuinfo: cores x clock x FMA width (AVX-512: 64 fp32 FLOPs a cycle,
    AVX2+FMA: 32), x4 where int8 dot products (VNNI) run a quantized model's matrix products."""
    mhz = cpu_mhz()
    if not mhz:
        return None, "no clock in /proc/cpuinfo"
    flags = set(cpu_info()[1])
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    vnni = 4 if flags & {"avx512_vnni", "avx_vnni"} else 1
    cores = threads or os.cpu_count() or 1
    return (cores * mhz * 1e6 * per_cycle * vnni,
            f"{cores} cores x {mhz:.0f} MHz x {per_cycle} FLOPs a cycle" + (" x 4 (int8 VNNI)" if vnni > 1 else ""))


def _machine_key() -> str:
    try:
        total = Path("/proc/meminfo").read_text().split("\n", 1)[0]
    except OSError:
        total = "?"
    return f"{cpu_info()[0] or '?'} | {os.cpu_count()} cpus | {total}"
