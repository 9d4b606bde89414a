"""`plan --measure`: llama.cpp's own no_alloc dry run beside the formulas, over the architecture zoo."""

from __future__ import annotations

import pytest
from accuracy import COMPUTE_TOL, DEFAULT_TOL
from clirun import run
from synth import ARCHS

from sentiric_cli.gguf import modelinfo
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.plan.device import Device, host_memory
from sentiric_cli.plan.measure import compare, measure
from sentiric_cli.plan.memory import MiB, Shape, compute_buffer, kv_cache
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.settings import Settings

ROUNDING = 0.005 * MiB  # llama.cpp prints MiB with 2 decimals, one line per cache


@pytest.mark.parametrize("arch", ARCHS)
def test_dry_run_agrees_with_the_formulas(arch, synth):
    header = read_model(synth(arch, n_vocab=8192, n_embd=256, n_head=8, n_head_kv=2, n_ff=768))
    info = model_info(header)
    # the second is set by the attention stage (4096 cells x 8 heads), not the logits
    for shape in (Shape(context=2048, threads=2, flash_attn=True), Shape(context=4096, threads=1, flash_attn=False)):
        m = measure(header, shape)
        kv = kv_cache(info, shape)
        assert not m.gpu_build and not m.shadow
        assert m.weights_bytes == sum(t.n_bytes for t in header.tensors)
        assert abs(m.kv_bytes - kv.bytes) <= ROUNDING * max(len(m.kv_lines), 1), (arch, m.kv_lines)
        planned = compute_buffer(info, shape, kv).bytes
        tol = COMPUTE_TOL.get(info.arch, DEFAULT_TOL)
        assert abs(planned / m.compute["CPU"] - 1) <= tol, (arch, shape, planned / MiB, m.compute["CPU"] / MiB)


def test_header_only_files_run_on_a_sparse_shadow(seed_gguf):
    header = read_model(seed_gguf)
    assert header.file_size < 64 * MiB  # no tensor data: a 2.4 GB model's header
    m = measure(header, Shape(context=8192, threads=1))
    assert m.shadow
    assert m.weights_bytes == sum(t.n_bytes for t in header.tensors)
    assert m.kv_lines and abs(m.kv_bytes - 334 * MiB) <= 2 * ROUNDING  # 160 + 174 MiB, as the published log
    info = model_info(header)
    shape = Shape(context=8192, threads=1)
    assert abs(compute_buffer(info, shape, kv_cache(info, shape)).bytes / m.compute["CPU"] - 1) <= DEFAULT_TOL


def test_unknown_architecture_takes_llama_cpps_figures(synth, monkeypatch):
    """An architecture sentiric does not model is planned as dense attention; the dry run corrects it."""
    path = synth("gemma3", n_vocab=8192, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)
    monkeypatch.delitem(modelinfo.ARCH_RULES, "gemma3")
    header = read_model(path)
    info = model_info(header)
    assert not info.known_arch and not info.has_swa
    host = host_memory()
    plan = make_plan(header, info, Device("host", "host RAM", host.total_bytes, host.free_bytes),
                     Settings(context_size=4096, threads=2), {"context_size", "threads"})
    guessed = plan.memory.kv_bytes
    m = measure(header, plan.shape)
    rows, notes = compare(plan, header, m)
    assert m.kv_bytes < guessed  # llama.cpp knows gemma3's sliding window
    assert plan.memory.kv_bytes == m.kv_bytes and plan.memory.compute_bytes == m.compute["CPU"]
    assert "differs" in notes[-1] and any(r.what == "KV cache" for r in rows)


def test_cli_measure_table_and_json(bundled):
    r = run("plan", str(bundled), "-c", "4096", "-t", "2", "--measure")
    assert r.returncode == 0, r.stderr
    assert "llama.cpp's own dry run" in r.stdout and "agrees with the plan" in r.stdout
    j = run("plan", str(bundled), "-c", "4096", "-t", "2", "--measure", "--json")
    import json

    rows = {x["what"]: x for x in json.loads(j.stdout)["measured"]}
    assert rows["KV cache"]["planned"] == rows["KV cache"]["measured"]
    cpu = rows["compute buffer (CPU)"]
    assert abs(cpu["planned"] / cpu["measured"] - 1) <= DEFAULT_TOL
    gpu = run("plan", str(bundled), "--vram", "8GiB", "--measure")
    assert gpu.returncode == 0, gpu.stderr
    assert "CPU-only build" in gpu.stdout  # a CUDA plan measured on a CPU build says so instead of comparing
