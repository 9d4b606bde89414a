"""The memory a plan can use: a GPU from NVML (MIG slices included), a `--vram` figure, or host RAM.

NVML is touched only in `_nvml_devices`; tests replace the `pynvml` module at that edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sentiric_cli.errors import SentiricError

MiB = 1024 * 1024
GPU_MARGIN = 1024 * MiB  # llama.cpp's own fitter (common/fit.cpp) keeps 1 GiB free per GPU for CUDA context and pools


@dataclass(frozen=True)
class Device:
    kind: str  # "gpu", "vram" (a device you are not on) or "host"
    name: str
    total_bytes: int
    free_bytes: int
    index: str = ""  # "0", or "0:1" for MIG slice 1 of GPU 0
    note: str = ""
    bandwidth: float = 0.0  # memory bytes per second (NVML), 0 when not known

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("gpu", "vram")

    @property
    def margin_bytes(self) -> int:
        return GPU_MARGIN if self.is_gpu else 0


_UNITS = {"": 1, "b": 1, "k": 1024, "m": MiB, "g": 1024**3, "t": 1024**4,
          "kib": 1024, "mib": MiB, "gib": 1024**3, "tib": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def parse_size(text: str) -> int:
    """'6GiB', '6G' (binary), '6GB' (decimal), '6144MiB' -> bytes."""
    hit = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text or "")
    unit = hit.group(2).lower() if hit else None
    if not hit or unit not in _UNITS:
        raise SentiricError(f"cannot read memory size {text!r}", "write it like 6GiB, 8GB or 6144MiB")
    value = int(float(hit.group(1)) * _UNITS[unit])
    if value <= 0:
        raise SentiricError(f"memory size {text!r} must be positive")
    return value


def host_memory() -> Device:
    total = avail = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                kib = int(rest.split()[0]) * 1024
                total, avail = (kib, avail) if key == "MemTotal" else (total, kib)
    except OSError:
        pass
    if not total:  # not Linux: fall back to what the OS reports through os.sysconf
        import os
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        avail = total
    return Device("host", "host RAM", total, avail, note="")


def host_device(ram: str | None = None) -> Device:
    """The host RAM a plan must fit: MemAvailable here, or `--ram SIZE` for a machine you are not on."""
    if ram is None:
        return host_memory()
    size = parse_size(ram)
    return Device("ram", f"{size / 1024**3:.1f} GiB RAM", size, size, note="--ram: host RAM of a machine you are not on")


def _nvml_devices() -> list[Device]:
    """Every GPU NVML reports, each MIG slice as its own device. Raises OSError-like on no driver."""
    import pynvml

    pynvml.nvmlInit()
    try:
        out: list[Device] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(pynvml.nvmlDeviceGetName(h))
            try:
                mig_on = pynvml.nvmlDeviceGetMigMode(h)[0] == 1
            except pynvml.NVMLError:
                mig_on = False
            if mig_on:
                for j in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        mh = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    except pynvml.NVMLError:
                        continue
                    mem = pynvml.nvmlDeviceGetMemoryInfo(mh)
                    out.append(Device("gpu", f"{name} MIG {j}", mem.total, mem.free, f"{i}:{j}",
                                      note="MIG slice: planned against the slice's own memory"))
                continue
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out.append(Device("gpu", name, mem.total, mem.free, str(i), bandwidth=_bandwidth(pynvml, h)))
        return out
    finally:
        pynvml.nvmlShutdown()


def _bandwidth(pynvml, h) -> float:
    """Peak memory bandwidth: the max memory clock (MHz) x bus width (bits) x 2 (double data rate) / 8."""
    try:
        mhz = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)
        bits = pynvml.nvmlDeviceGetMemoryBusWidth(h)
    except Exception:  # NVMLError (not supported), or an older pynvml without the call
        return 0.0
    return float(mhz) * 1e6 * 2 * bits / 8 if mhz and bits else 0.0


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def select_device(gpu: str | None = None, vram: str | None = None) -> Device:
    """The device to plan for. --vram wins; else the NVML GPU asked for (default the first); else host RAM."""
    if vram is not None:
        size = parse_size(vram)
        return Device("vram", f"a {size / 1024**3:.1f} GiB GPU", size, size, note="--vram: a device you are not on")
    try:
        gpus = _nvml_devices()
    except Exception as e:  # NVML raises its own error types (and ImportError without the package)
        if gpu is not None:
            raise SentiricError(f"--gpu {gpu}: no NVIDIA GPU is visible ({_reason(e)})",
                                "use --vram SIZE to plan for a GPU you are not on") from None
        host = host_memory()
        return Device(host.kind, host.name, host.total_bytes, host.free_bytes,
                      note=f"no NVIDIA driver ({_reason(e)}): planning for host RAM")
    if not gpus:
        host = host_memory()
        return Device(host.kind, host.name, host.total_bytes, host.free_bytes,
                      note="NVML reports no GPU: planning for host RAM")
    if gpu is None:
        return gpus[0]
    for d in gpus:
        if d.index == gpu or (":" not in gpu and d.index.split(":")[0] == gpu):
            return d
    raise SentiricError(f"--gpu {gpu}: no such device", f"devices: {', '.join(d.index for d in gpus)}")


def select_devices(gpu: str | None = None, vram: str | None = None) -> tuple[Device, ...]:
    """One device or several: `--gpu all`, `--gpu 0,1`, `--vram 24GiB,24GiB` (GPUs you are not on)."""
    if vram is not None and "," in vram:
        sizes = [parse_size(v) for v in vram.split(",")]
        return tuple(Device("vram", f"GPU {i}: {n / 1024**3:.1f} GiB", n, n, str(i), note="--vram: devices you are not on")
                     for i, n in enumerate(sizes))
    if gpu is None or ("," not in gpu and gpu != "all") or vram is not None:
        return (select_device(gpu, vram),)
    try:
        gpus = _nvml_devices()
    except Exception as e:
        raise SentiricError(f"--gpu {gpu}: no NVIDIA GPU is visible ({_reason(e)})",
                            "use --vram 24GiB,24GiB to plan for GPUs you are not on") from None
    if gpu == "all":
        if not gpus:
            raise SentiricError("--gpu all: NVML reports no GPU", "use --vram SIZE,SIZE to plan for GPUs you are not on")
        return tuple(gpus)
    picked = []
    for want in (g.strip() for g in gpu.split(",")):
        hit = next((d for d in gpus if d.index == want), None)
        if hit is None:
            raise SentiricError(f"--gpu {gpu}: no device {want!r}", f"devices: {', '.join(d.index for d in gpus)}")
        if hit in picked:
            raise SentiricError(f"--gpu {gpu}: device {want} is listed twice")
        picked.append(hit)
    return tuple(picked)


def _reason(e: Exception) -> str:
    return str(e).strip() or type(e).__name__
