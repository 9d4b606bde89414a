"""Issue 27 in `plan`: host RAM in GPU plans (--ram, mmap), the speed estimate (--bandwidth, NVML), a quick start."""

from __future__ import annotations

import json
import subprocess
import sys

import gguf
import pytest
from clirun import _env, assert_user_error, run
from cuda_logs import QWEN3_30B_A3B, write_header
from test_device import FakeGPU, nvml  # noqa: F401 (the fixture)
from waits import WAIT

from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.quants import TYPES
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.layout import CPU
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.plan.speed import Bandwidths, parse_bandwidth
from sentiric_cli.settings import Settings

GiB = 1024**3


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    return write_header(tmp_path_factory.mktemp("moe") / "qwen3-30b-a3b.gguf", QWEN3_30B_A3B)


def _json(*args: str) -> tuple[int, dict]:
    r = run("plan", *args, "--json", "--bandwidth", "20GB/s")
    return r.returncode, (json.loads(r.stdout) if r.stdout else {"stderr": r.stderr})


def test_cpu_moe_that_fits_the_gpus_but_not_ram_exits_1(moe):
    code, small = _json(str(moe), "--vram", "24GiB,24GiB", "--cpu-moe", "--ram", "16GiB")
    assert code == 1 and small["fits"] is False
    host = small["memory"]["host"]
    assert all(u["verdict"] == "very safe" for u in small["memory"]["devices"])
    assert host["verdict"] == "does not fit" and host["free_bytes"] == 16 * GiB
    assert host["weights_bytes"] > 16 * GiB  # the experts, left in host memory
    assert any("fits the GPUs but not host RAM" in n for n in small["notes"])
    code, big = _json(str(moe), "--vram", "24GiB,24GiB", "--cpu-moe", "--ram", "64GiB")
    assert code == 0 and big["fits"] and big["memory"]["host"]["verdict"] == "very safe"
    assert big["memory"]["host"]["total_bytes"] == big["memory"]["total_host_bytes"]


def test_mmap_and_no_mmap_told_apart(moe):
    _, mapped = _json(str(moe), "--vram", "24GiB,24GiB", "-ngl", "24", "--ram", "64GiB")
    _, read = _json(str(moe), "--vram", "24GiB,24GiB", "-ngl", "24", "--ram", "64GiB", "--no-mmap")
    host = mapped["memory"]["host"]
    assert mapped["memory"]["host_mapped_bytes"] == host["weights_bytes"] > 0
    assert read["memory"]["host_mapped_bytes"] == 0 and read["recommendation"]["use_mmap"] is False
    assert read["memory"]["host"]["total_bytes"] == host["total_bytes"]  # the same bytes, held otherwise
    assert any(e["what"] == "host RAM" and "page cache" in e["source"] for e in mapped["explain"])
    assert any(e["what"] == "host RAM" and "--no-mmap" in e["source"] for e in read["explain"])


def test_host_only_plan_uses_ram(bundled):
    code, doc = _json(str(bundled), "--ram", "300MiB")
    assert code == 1 and doc["device"]["kind"] == "ram" and doc["device"]["free_bytes"] == 300 * 2**20


@pytest.mark.parametrize("args, expected", [
    (["--ram", "lots"], "cannot read memory size 'lots'"),
    (["--ram", "0GiB"], "must be positive"),
    (["--bandwidth", "fast"], "cannot read bandwidth 'fast'"),
    (["--bandwidth", "cpu=10GB/s"], "'cpu' is not host, gpu or gpuN"),
    (["--bandwidth", "0GB/s"], "cannot read bandwidth"),
    (["--bandwidth", ","], "--bandwidth is empty"),
])
def test_bad_ram_and_bandwidth_are_one_line(bundled, args, expected):
    assert_user_error(run("plan", str(bundled), *args), expected)


def test_decode_speed_follows_bandwidth_and_reads(moe, bundled):
    h = read_header(bundled)
    info = model_info(h)
    host = Device("host", "RAM", 64 * GiB, 64 * GiB)
    s = Settings(context_size=2048, threads=1)
    slow = make_plan(h, info, host, s, {"context_size", "threads"}, bw=Bandwidths({CPU: 10e9}, {CPU: "t"}))
    fast = make_plan(h, info, host, s, {"context_size", "threads"}, bw=Bandwidths({CPU: 20e9}, {CPU: "t"}))
    assert fast.speed.decode_tps == pytest.approx(2 * slow.speed.decode_tps)
    reads = slow.speed.step_bytes[CPU]
    assert reads == pytest.approx(10e9 / slow.speed.decode_tps)
    weights = sum(t.n_bytes for t in h.tensors)
    assert 0.9 * weights < reads < weights + slow.memory.kv_bytes  # tied output read whole, the input one row
    four = make_plan(h, info, host, s.model_copy(update={"threads": 4}), {"context_size", "threads"},
                     bw=Bandwidths({CPU: 10e9}, {CPU: "t"}))
    assert four.speed.decode_tps < slow.speed.decode_tps < four.speed.decode_tps_all
    # an MoE step reads the used experts' share: 8 of 128
    mh = read_header(moe)
    m = make_plan(mh, model_info(mh), host, s, {"context_size", "threads"}, bw=Bandwidths({CPU: 10e9}, {CPU: "t"}))
    experts = sum(t.n_bytes for t in mh.tensors if "_exps" in t.name)
    assert m.speed.step_bytes[CPU] < sum(t.n_bytes for t in mh.tensors) - experts * (1 - 8 / 128) + m.memory.kv_bytes
    assert m.speed.prompt_tps_bound is None  # no peak given


def test_gpu_bandwidth_from_nvml_and_flags(nvml, monkeypatch, capsys, bundled):  # noqa: F811
    nvml([FakeGPU("H100", 80 * GiB, 79 * GiB, mem_clock_mhz=2619, bus_width=5120),
          FakeGPU("Old", 8 * GiB, 7 * GiB)])
    from sentiric_cli.plan.device import select_devices

    h100, old = select_devices("all")
    assert h100.bandwidth == pytest.approx(2619e6 * 2 * 5120 / 8) and old.bandwidth == 0
    from sentiric_cli.cli import main

    for args, known in ((["--gpu", "0"], True), (["--gpu", "1"], False), (["--gpu", "1", "--bandwidth",
                                                                              "host=20GB/s,gpu=300GB/s"], True)):
        with pytest.raises(SystemExit):
            main(["plan", str(bundled), "--json", "--ram", "64GiB", *args])
        doc = json.loads(capsys.readouterr().out)
        assert (doc["speed"]["decode_tps"] is not None) == known, args
        assert all((o["decode_tps"] is not None) == known for o in doc["options"])
    assert parse_bandwidth("60GB/s") == {"host": 60e9}
    assert parse_bandwidth("host=1.5TB/s, gpu1=50GiB/s") == {"host": 1.5e12, "gpu1": 50 * GiB}


def test_quant_table_matches_gguf():
    known = {t.value: (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType
             if t in gguf.GGML_QUANT_SIZES}
    assert {k: v for k, v in TYPES.items() if k in known} == known
    assert set(known) <= set(TYPES)


def test_plan_imports_neither_llama_cpp_nor_numpy(bundled):
    code = ("import sys\nfrom sentiric_cli.cli import main\ntry:\n    main(['plan', sys.argv[1], '--json'])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = sorted(m for m in ('llama_cpp', 'numpy', 'gguf') if m in sys.modules)\n"
            "print(heavy, file=sys.stderr)\nassert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code, str(bundled)], capture_output=True, text=True, env=_env(None),
                       timeout=WAIT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[]" in r.stderr


def test_serves_prompt_cache_is_checked_against_the_ram_the_plan_leaves(bundled):
    """cache_ram (serve's prompt caches in host RAM) is not llama.cpp's memory: it is shown with the tokens it holds,
    checked against the RAM left beside the model, and lowered in the recommendation where it does not fit."""
    code, roomy = _json(str(bundled), "--ram", "64GiB")
    pc = roomy["prompt_cache"]
    assert code == 0 and pc["fits"] and pc["budget_bytes"] == 8192 * 2**20 and pc["recommended_mib"] == 8192
    kv = roomy["memory"]["kv_bytes_per_thread"] // roomy["settings"]["context"]
    assert pc["token_bytes"] == kv and pc["tokens"] == pc["budget_bytes"] // kv
    assert any(e["what"].startswith("serve's prompt cache") for e in roomy["explain"])
    code, tight = _json(str(bundled), "--ram", "4GiB")
    pc = tight["prompt_cache"]
    assert code == 0 and not pc["fits"] and pc["room_bytes"] < 4 * GiB
    assert pc["recommended_mib"] == pc["room_bytes"] // 2 // 2**20 == tight["recommendation"]["cache_ram"]
    assert any("cache_ram 8,192 MiB is more than" in w for w in tight["warnings"])
    _, pinned = _json(str(bundled), "--ram", "4GiB", "--cache-ram", "6000")
    assert pinned["recommendation"]["cache_ram"] == 6000 and not pinned["prompt_cache"]["fits"]
    _, off = _json(str(bundled), "--ram", "4GiB", "--cache-ram", "0")
    assert off["prompt_cache"]["fits"] and not any("cache_ram" in w for w in off["warnings"])
