"""The plan on `--vram` GPUs against published llama.cpp CUDA logs: KV exact, compute within 3%."""

from __future__ import annotations

import pytest
from cuda_logs import LOGS, plan_log, write_header

from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.memory import MiB, Shape
from sentiric_cli.plan.usage import breakdown

GPU = Device("vram", "a 24 GiB GPU", 24 * 1024**3, 24 * 1024**3)


@pytest.fixture(scope="module")
def headers(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda_logs")
    cache = {}
    for log in LOGS:
        if log.shape not in cache:
            cache[log.shape] = write_header(root / f"{log.shape.arch}-{len(cache)}.gguf", log.shape)
    return cache


@pytest.mark.parametrize("log", LOGS, ids=[x.name for x in LOGS])
def test_plan_matches_published_cuda_log(log, headers):
    bd = plan_log(log, headers[log.shape])
    assert bd.backend == "cuda" and not bd.compute_modelled, "a logged setting must not be marked modelled"
    assert bd.kv_bytes / MiB == pytest.approx(log.kv_mib, abs=0.005), log.source
    if log.device_kv_mib:
        assert [round(d.kv_bytes / MiB, 2) for d in bd.devices] == list(log.device_kv_mib)
    assert len(bd.devices) == len(log.device_compute_mib)
    for d, logged in zip(bd.devices, log.device_compute_mib, strict=True):
        planned = d.compute_bytes / MiB
        assert abs(planned / logged - 1) <= 0.03, f"{log.name}: device compute {planned:.2f} vs {logged}"
    if log.host_compute_mib is not None:
        host = bd.host_compute_bytes / MiB
        assert abs(host / log.host_compute_mib - 1) <= 0.03, f"{log.name}: host compute {host:.2f} vs {log.host_compute_mib}"


def test_the_logs_cover_partial_offload_and_several_gpus():
    assert any(x.gpu_layers is not None and x.gpu_layers <= x.shape.n_layer for x in LOGS)
    assert any(len(x.free_mib) > 1 for x in LOGS)


def test_seed_log_compute_on_cuda(seed_gguf):
    """gemma-3-4b-it at -c 8192 -ngl 99: "CUDA0 compute buffer size = 517.xx MiB" (docs/memory.md)."""
    header = read_model(seed_gguf)
    info = model_info(header)
    bd = breakdown(header, info, (GPU,), Shape(context=8192, threads=1, gpu_layers=info.n_layer + 1))
    assert abs(bd.devices[0].compute_bytes / MiB / 517 - 1) < 0.01
