"""select_device and parse_size, with NVML faked at its edge (a fake `pynvml` module); everything else real."""

from __future__ import annotations

import json
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sentiric_cli.errors import SentiricError
from sentiric_cli.plan.device import GPU_MARGIN, host_memory, parse_size, select_device

GiB = 1024**3
MiB = 1024**2


class NVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


@dataclass
class FakeGPU:
    name: str | bytes
    total: int
    free: int
    mig: list | None = None  # None: MIG not supported; []: supported but off; [(total, free) or None, ...]: on
    mem_clock_mhz: int = 0  # 0: NVML says "Not Supported"
    bus_width: int = 0


@dataclass
class FakeNVML:
    gpus: list[FakeGPU]
    init_error: Exception | None = None
    fail_memory_query: bool = False
    calls: list[str] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        m = types.ModuleType("pynvml")
        m.NVMLError = NVMLError
        for name in ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
                     "nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMigMode",
                     "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex",
                     "nvmlDeviceGetMaxClockInfo", "nvmlDeviceGetMemoryBusWidth"):
            setattr(m, name, getattr(self, name))
        m.NVML_CLOCK_MEM = 2
        return m

    def nvmlDeviceGetMaxClockInfo(self, h, clock):
        assert clock == 2  # NVML_CLOCK_MEM
        if not self.gpus[h[1]].mem_clock_mhz:
            raise NVMLError("Not Supported")
        return self.gpus[h[1]].mem_clock_mhz

    def nvmlDeviceGetMemoryBusWidth(self, h):
        if not self.gpus[h[1]].bus_width:
            raise NVMLError("Not Supported")
        return self.gpus[h[1]].bus_width

    def nvmlInit(self):
        self.calls.append("init")
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        if not 0 <= i < len(self.gpus):
            raise NVMLError("Invalid Argument")
        return ("gpu", i)

    def nvmlDeviceGetName(self, h):
        return self.gpus[h[1]].name

    def nvmlDeviceGetMemoryInfo(self, h):
        if self.fail_memory_query:
            raise NVMLError("GPU is lost")
        if h[0] == "mig":
            total, free = self.gpus[h[1]].mig[h[2]]
        else:  # the whole GPU, as real NVML reports it even with MIG on
            total, free = self.gpus[h[1]].total, self.gpus[h[1]].free
        return types.SimpleNamespace(total=total, free=free, used=total - free)

    def nvmlDeviceGetMigMode(self, h):
        mig = self.gpus[h[1]].mig
        if mig is None:
            raise NVMLError("Not Supported")
        return (1, 1) if mig else (0, 0)

    def nvmlDeviceGetMaxMigDeviceCount(self, h):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, j):
        mig = self.gpus[h[1]].mig
        if j >= len(mig) or mig[j] is None:
            raise NVMLError("Not Found")
        return ("mig", h[1], j)


@pytest.fixture
def nvml(monkeypatch):
    """install(gpus, **kw) puts a fake pynvml into sys.modules and returns it (its .calls record the use)."""

    def install(gpus, **kw) -> FakeNVML:
        fake = FakeNVML(list(gpus), **kw)
        monkeypatch.setitem(sys.modules, "pynvml", fake.module())
        return fake

    return install


def balanced(fake: FakeNVML) -> bool:
    return fake.calls.count("init") == 1 and fake.calls.count("shutdown") == 1


# ---------------------------------------------------------------- NVML devices


def test_one_gpu(nvml):
    fake = nvml([FakeGPU("NVIDIA GeForce RTX 2060", 6 * GiB, 5 * GiB + 512 * MiB)])
    d = select_device()
    assert (d.kind, d.name, d.index) == ("gpu", "NVIDIA GeForce RTX 2060", "0")
    assert (d.total_bytes, d.free_bytes) == (6 * GiB, 5 * GiB + 512 * MiB)
    assert d.is_gpu and d.margin_bytes == GPU_MARGIN
    assert balanced(fake)


def test_byte_names_from_old_pynvml(nvml):
    nvml([FakeGPU(b"Tesla T4", 16 * GiB, 15 * GiB)])
    assert select_device().name == "Tesla T4"


def test_two_gpus_pick_by_index(nvml):
    fake = nvml([FakeGPU("GPU A", 8 * GiB, 7 * GiB), FakeGPU("GPU B", 24 * GiB, 20 * GiB)])
    second = select_device(gpu="1")
    assert (second.name, second.index, second.total_bytes, second.free_bytes) == ("GPU B", "1", 24 * GiB, 20 * GiB)
    first = select_device()
    assert (first.name, first.index) == ("GPU A", "0")
    assert fake.calls == ["init", "shutdown", "init", "shutdown"]


def test_mig_slices_are_devices_with_their_own_memory(nvml):
    fake = nvml([
        FakeGPU("NVIDIA A100-SXM4-80GB", 80 * GiB, 79 * GiB, mig=[(10 * GiB, 9 * GiB), (20 * GiB, 19 * GiB)]),
        FakeGPU("NVIDIA L4", 24 * GiB, 23 * GiB, mig=[]),
    ])
    s = select_device(gpu="0:1")
    assert (s.kind, s.index, s.total_bytes, s.free_bytes) == ("gpu", "0:1", 20 * GiB, 19 * GiB)
    assert s.name == "NVIDIA A100-SXM4-80GB MIG 1" and "MIG" in s.note
    assert select_device(gpu="0").index == "0:0"  # the whole GPU number picks its first slice
    assert select_device().free_bytes == 9 * GiB  # never the parent's 79 GiB
    plain = select_device(gpu="1")  # MIG capable but off: the whole GPU
    assert (plain.index, plain.free_bytes, plain.note) == ("1", 23 * GiB, "")
    assert fake.calls.count("init") == fake.calls.count("shutdown") == 4


def test_mig_gaps_are_skipped(nvml):
    nvml([FakeGPU("A100", 40 * GiB, 39 * GiB, mig=[(5 * GiB, 4 * GiB), None, (10 * GiB, 9 * GiB)])])
    assert select_device(gpu="0:2").free_bytes == 9 * GiB
    with pytest.raises(SentiricError) as err:
        select_device(gpu="0:1")
    assert "--gpu 0:1: no such device" in err.value.message and "0:0, 0:2" in err.value.hint


def test_absent_gpu_index(nvml):
    nvml([FakeGPU("GPU A", 8 * GiB, 7 * GiB), FakeGPU("GPU B", 8 * GiB, 7 * GiB)])
    with pytest.raises(SentiricError) as err:
        select_device(gpu="3")
    assert err.value.message == "--gpu 3: no such device"
    assert err.value.hint == "devices: 0, 1"


def test_no_driver_falls_back_to_host_ram(nvml):
    fake = nvml([FakeGPU("unused", GiB, GiB)], init_error=NVMLError("Driver Not Loaded"))
    d = select_device()
    host = host_memory()
    assert (d.kind, d.name, d.total_bytes) == ("host", "host RAM", host.total_bytes)
    assert 0 < d.free_bytes <= d.total_bytes
    assert "no NVIDIA driver" in d.note and "Driver Not Loaded" in d.note and "host RAM" in d.note
    assert not d.is_gpu and d.margin_bytes == 0
    assert fake.calls == ["init"]  # nothing to shut down after a failed init


def test_no_driver_with_gpu_asked_for_is_an_error(nvml):
    nvml([], init_error=NVMLError("Driver Not Loaded"))
    with pytest.raises(SentiricError) as err:
        select_device(gpu="0")
    assert "no NVIDIA GPU is visible" in err.value.message and "Driver Not Loaded" in err.value.message
    assert "--vram" in err.value.hint


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    d = select_device()
    assert d.kind == "host" and "no NVIDIA driver" in d.note


def test_nvml_with_no_gpus(nvml):
    fake = nvml([])
    d = select_device()
    assert d.kind == "host" and "NVML reports no GPU" in d.note
    assert balanced(fake)


def test_failing_query_still_shuts_nvml_down(nvml):
    fake = nvml([FakeGPU("GPU A", 8 * GiB, 7 * GiB)], fail_memory_query=True)
    d = select_device()
    assert d.kind == "host" and "GPU is lost" in d.note
    assert balanced(fake)


def test_vram_wins_over_nvml(nvml):
    fake = nvml([FakeGPU("GPU A", 24 * GiB, 20 * GiB)])
    d = select_device(gpu="0", vram="6GiB")
    assert (d.kind, d.total_bytes, d.free_bytes) == ("vram", 6 * GiB, 6 * GiB)
    assert d.is_gpu and d.margin_bytes == GPU_MARGIN and "6.0 GiB" in d.name
    assert fake.calls == []  # NVML is not even asked


def test_vram_without_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert select_device(vram="8GB").free_bytes == 8 * 10**9


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("text, expected", [
    ("6GiB", 6 * GiB), ("6G", 6 * GiB), ("6g", 6 * GiB), ("6gib", 6 * GiB), ("6GB", 6 * 10**9),
    ("6144MiB", 6 * GiB), ("6144M", 6 * GiB), ("6000MB", 6 * 10**9), ("1.5GiB", 3 * GiB // 2),
    (" 6 GiB ", 6 * GiB), ("512KiB", 512 * 1024), ("1T", 1024**4), ("1TB", 10**12), ("4096", 4096),
    ("100b", 100), (".5G", GiB // 2),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["banana", "", "GiB", "6 GiBs", "6XB", "-6GiB", "0", "0GiB", "1e3", "6,5G",
                                  "6GiB6", "0.1b"])
def test_parse_size_rejects(text):
    with pytest.raises(SentiricError) as err:
        parse_size(text)
    assert repr(text) in err.value.message


# ---------------------------------------------------------------- end to end through the CLI


def test_plan_cli_on_a_fake_8gib_gpu(nvml, monkeypatch, capsys, bundled: Path):
    for name in [k for k in os.environ if k.startswith("LLM_LLAMA_SERVICE_")]:
        monkeypatch.delenv(name)
    fake = nvml([FakeGPU("NVIDIA GeForce RTX 3070", 8 * GiB, 8 * GiB - 300 * MiB)])
    from sentiric_cli.cli import main

    with pytest.raises(SystemExit) as done:
        main(["plan", str(bundled), "--json"])
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    plan = json.loads(out)
    dev, mem, rec = plan["device"], plan["memory"], plan["recommendation"]
    assert (dev["kind"], dev["name"], dev["index"]) == ("gpu", "NVIDIA GeForce RTX 3070", "0")
    assert dev["free_bytes"] == 8 * GiB - 300 * MiB
    n_layer = plan["model"]["n_layer"]
    assert n_layer == 18 and rec["gpu_layers"] == n_layer + 1 == 19
    assert mem["total_device_bytes"] <= dev["free_bytes"]
    assert mem["need_bytes"] == mem["total_device_bytes"] + GPU_MARGIN <= dev["free_bytes"]
    assert mem["weights_device_bytes"] > 0 and plan["fits"] is True
    assert balanced(fake)


def test_several_gpus_all_or_listed(nvml):
    from sentiric_cli.plan.device import select_devices

    nvml([FakeGPU("A", 24 * GiB, 20 * GiB), FakeGPU("B", 24 * GiB, 22 * GiB), FakeGPU("C", 12 * GiB, 11 * GiB)])
    assert [d.name for d in select_devices("all")] == ["A", "B", "C"]
    assert [d.index for d in select_devices("2,0")] == ["2", "0"]
    assert [d.free_bytes for d in select_devices("0")] == [20 * GiB]
    with pytest.raises(SentiricError, match="no device '5'"):
        select_devices("0,5")
    with pytest.raises(SentiricError, match="listed twice"):
        select_devices("1,1")
    sizes = select_devices(None, "24GiB,12GiB")
    assert [d.total_bytes for d in sizes] == [24 * GiB, 12 * GiB] and all(d.is_gpu for d in sizes)


def test_gpu_all_without_a_driver_is_an_error(nvml):
    from sentiric_cli.plan.device import select_devices

    nvml([], init_error=NVMLError("Driver Not Loaded"))
    with pytest.raises(SentiricError, match="no NVIDIA GPU is visible"):
        select_devices("all")


def test_plan_cli_on_two_fake_gpus(nvml, monkeypatch, capsys, bundled: Path):
    for name in [k for k in os.environ if k.startswith("LLM_LLAMA_SERVICE_")]:
        monkeypatch.delenv(name)
    nvml([FakeGPU("GPU A", 8 * GiB, 6 * GiB), FakeGPU("GPU B", 8 * GiB, 2 * GiB)])
    from sentiric_cli.cli import main

    with pytest.raises(SystemExit) as done:
        main(["plan", str(bundled), "--gpu", "all", "--json"])
    assert done.value.code == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in doc["devices"]] == ["GPU A", "GPU B"]
    uses = doc["memory"]["devices"]
    assert len(uses) == 2 and all(u["verdict"] != "does not fit" for u in uses)
    assert sum(doc["recommendation"]["tensor_split"]) == doc["recommendation"]["gpu_layers"]
