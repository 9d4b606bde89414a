"""Plans for several GPUs, partial offload on a CUDA build, split GGUFs and the per-layer view."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from accuracy import compare
from clirun import assert_user_error, run
from llama_probe import Probe

from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.layout import CPU, layer_devices
from sentiric_cli.plan.memory import Shape, kv_cache, weights
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.plan.usage import breakdown
from sentiric_cli.settings import Settings


def gpu(name: str, gib: float) -> Device:
    n = int(gib * 1024**3)
    return Device("vram", name, n, n, name)


def test_layer_split_follows_llama_cpp():
    # llama.cpp: device(il) = upper_bound(cumulative splits, (il - i_gpu_start) / act_gpu_layers)
    assert layer_devices(8, 9, [1, 1]) == [0, 0, 0, 0, 0, 1, 1, 1, 1]  # 5/9 < 0.5 is false at il 5
    assert layer_devices(8, 9, [3, 1]) == [0] * 7 + [1, 1]
    assert layer_devices(8, 3, [1, 1]) == [CPU] * 6 + [0, 0, 1]  # the output layer goes first, to the last GPU
    assert layer_devices(8, 0, [1, 1]) == [CPU] * 9
    # layer counts as shares reproduce themselves exactly (float32 ties fall to the next device)
    for counts in ([17, 18], [1, 34], [12, 11, 12]):
        where = layer_devices(34, 35, counts)
        assert [where.count(i) for i in range(len(counts))] == counts


def test_two_gpus_split_weights_kv_and_compute(seed_gguf):
    header = read_model(seed_gguf)
    info = model_info(header)
    devs = (gpu("0", 4), gpu("1", 4))
    shape = Shape(context=8192, threads=2, gpu_layers=info.n_layer + 1, tensor_split=(1.0, 1.0))
    bd = breakdown(header, info, devs, shape)
    one = breakdown(header, info, (gpu("0", 8),), replace(shape, tensor_split=()))
    a, b = bd.devices
    assert (a.layers, b.layers) == ("blk 0-17", "blk 18-33 + output")
    # the two GPUs hold exactly what one GPU would: weights and KV are only placed differently
    assert a.weights_bytes + b.weights_bytes == one.devices[0].weights_bytes
    assert a.kv_bytes + b.kv_bytes == one.devices[0].kv_bytes == one.kv_bytes
    # every layer's cache is on its layer's GPU
    kv = kv_cache(info, shape, list(bd.layer_devices))
    assert a.kv_bytes == sum(kv.layers[:18])
    # pipeline parallelism: both GPUs have a compute buffer; only the last has the logits
    assert bd.devices[1].compute_bytes > bd.devices[0].compute_bytes > 0
    assert "pipeline" in a.compute_why and bd.host_compute_bytes > 4 * 512 * info.n_embd * 4


def test_partial_offload_keeps_a_gpu_compute_buffer(seed_gguf):
    header = read_model(seed_gguf)
    info = model_info(header)
    dev = (gpu("0", 6),)
    none_op = breakdown(header, info, dev, Shape(context=4096, gpu_layers=0, op_offload=True))
    none_no = breakdown(header, info, dev, Shape(context=4096, gpu_layers=0, op_offload=False))
    # gpu_layers 0 on a CUDA build: op offload copies the output weights in and computes the logits there
    assert none_op.devices[0].compute_bytes > 4 * 512 * info.n_vocab
    assert none_no.devices[0].compute_bytes == 0
    half = breakdown(header, info, dev, Shape(context=4096, gpu_layers=18))
    w = weights(header, info, 18)
    assert half.devices[0].weights_bytes == w.device_bytes and half.weights_host_bytes == w.host_bytes
    # partial offload with op offload is checked on a log (tests/cuda_logs.py); the CPU doing that work
    # itself (no op offload) and pipeline copies are still modelled
    assert not half.compute_modelled and not breakdown(header, info, dev, Shape(context=4096, gpu_layers=35)).compute_modelled
    assert breakdown(header, info, dev, Shape(context=4096, gpu_layers=18, op_offload=False)).compute_modelled


def test_plan_recommends_a_tensor_split_in_layers(seed_gguf):
    header = read_model(seed_gguf)
    info = model_info(header)
    plan = make_plan(header, info, (gpu("0", 3), gpu("1", 5)), Settings(context_size=8192, threads=2),
                     {"context_size", "threads"})
    rec = plan.recommendation
    assert plan.fits and rec.gpu_layers == info.n_layer + 1
    assert len(rec.tensor_split) == 2 and sum(rec.tensor_split) == info.n_layer + 1
    assert [u.n_layers for u in plan.memory.devices] == [int(x) for x in rec.tensor_split]
    assert all(u.need_bytes <= u.free_bytes for u in plan.memory.devices)


def test_unbalanced_gpus_get_a_rebalanced_split(seed_gguf):
    """By free memory the small GPU's share overflows it (its margin is the same 1 GiB); moving layers fits."""
    header = read_model(seed_gguf)
    info = model_info(header)
    devs = (gpu("0", 1.6), gpu("1", 4.5))
    pinned = {"context_size", "threads", "gpu_layers"}
    asked = Settings(context_size=4096, threads=1, gpu_layers=-1)
    by_free = breakdown(header, info, devs, Shape(context=4096, gpu_layers=info.n_layer + 1,
                                                  cache_type_k="f16", cache_type_v="f16", swa_full=True))
    plan = make_plan(header, info, devs, asked, pinned)
    assert by_free.verdict == "does not fit" and by_free.devices[0].verdict == "does not fit"
    assert plan.fits, [(u.layers, u.verdict) for u in plan.memory.devices]
    assert plan.recommendation.tensor_split[0] < by_free.devices[0].n_layers


def test_cli_several_gpus_json_and_table(seed_gguf):
    r = run("plan", str(seed_gguf), "--vram", "4GiB,4GiB", "-c", "8192", "-t", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["devices"]) == 2 and len(doc["memory"]["devices"]) == 2
    assert doc["memory"]["backend"] == "cuda"
    assert len(doc["recommendation"]["tensor_split"]) == 2
    t = run("plan", str(seed_gguf), "--vram", "4GiB,4GiB", "-c", "8192", "-t", "2", "--tensor-split", "1,1")
    assert t.returncode == 0, t.stderr
    assert "GPU 0" in t.stdout and "GPU 1" in t.stdout and "blk 0-17" in t.stdout
    # the pinned 1,1 written back as layers per GPU: blk 0-17 (18) and blk 18-33 + output (17)
    assert "tensor_split:\n- 18.0\n- 17.0" in t.stdout
    assert_user_error(run("plan", str(seed_gguf), "--vram", "4GiB,4GiB", "--tensor-split", "1,1,1"),
                      "tensor_split has 3 entries for 2 GPU(s)")
    assert_user_error(run("plan", str(seed_gguf), "--vram", "4GiB,4GiB", "--tensor-split", "1,-1"), "tensor_split")


def test_layers_view_adds_up(seed_gguf):
    r = run("plan", str(seed_gguf), "--vram", "6GiB", "-c", "8192", "-ngl", "20", "--layers", "--json")
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    rows = doc["layers"]
    assert [x["name"] for x in rows[:2]] == ["token_embd", "blk.0"] and rows[-1]["name"] == "output"
    on_gpu = sum(x["weights_bytes"] for x in rows if x["device"] != "CPU")
    assert on_gpu == doc["memory"]["weights_device_bytes"]
    assert sum(x["kv_bytes"] for x in rows) == doc["memory"]["kv_bytes"]
    assert {x["device"] for x in rows[1:16]} == {"CPU"} and rows[-2]["device"] == "0"
    assert {x["kind"] for x in rows[1:-1]} == {"full", "sliding"}
    assert "Layers: where each lives" in run("plan", str(seed_gguf), "--vram", "6GiB", "--layers").stdout


def test_split_gguf_is_one_model_for_plan_and_llama_cpp(tmp_path, synth):
    from synth import write_model

    first = write_model(tmp_path / "m.gguf", "llama", n_embd=256, n_head=8, n_head_kv=2, n_ff=768, n_vocab=4096,
                        split_max_tensors=10)
    whole = synth("llama", n_embd=256, n_head=8, n_head_kv=2, n_ff=768, n_vocab=4096)
    shards = sorted(tmp_path.glob("m-*-of-*.gguf"))
    assert len(shards) > 2
    header = read_model(shards[2])  # any shard names the whole model
    info = model_info(header)
    planned = weights(header, info, 0)
    assert planned.host_bytes == weights(read_model(whole), model_info(read_model(whole)), 0).host_bytes
    probe = Probe(str(first))
    try:
        assert probe.model_size == planned.host_bytes  # llama.cpp loaded every shard
    finally:
        probe.close()
    rows = compare(first, "split", [Shape(context=512)])
    assert rows[0].kv_pred == rows[0].kv_meas
    r = run("plan", str(shards[-1]), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["memory"]["weights_device_bytes"] == planned.host_bytes
    shards[1].unlink()
    with pytest.raises(SentiricError, match="missing"):
        read_model(first)
    assert_user_error(run("plan", str(first)), "split model of", "missing", shards[1].name)


def test_kv_unified_matches_llama_cpp(synth):
    path = synth("gemma3", n_vocab=8192, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)
    rows = compare(path, "gemma3", [Shape(context=1024, threads=3, kv_unified=True),
                                   Shape(context=1024, threads=3, kv_unified=True, swa_full=True)])
    assert rows and all(r.kv_pred == r.kv_meas for r in rows), [(r.kv_pred, r.kv_meas) for r in rows]
    split = compare(path, "gemma3", [Shape(context=1024, threads=3)])
    assert rows[0].kv_meas != split[0].kv_meas  # one shared window of n_swa * threads + ubatch, not three


def test_draft_and_projector_add_to_the_gpu(seed_gguf, synth, tmp_path):
    draft = synth("gemma3", n_vocab=8192, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)
    base = json.loads(run("plan", str(seed_gguf), "--vram", "8GiB", "-c", "8192", "-t", "1", "--json").stdout)
    r = run("plan", str(seed_gguf), "--vram", "8GiB", "-c", "8192", "-t", "1", "--draft", str(draft),
            "--mmproj", str(draft), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    extra = doc["memory"]["devices"][0]["extra_bytes"]
    projector = sum(t.n_bytes for t in read_model(draft).tensors)
    assert extra > 2 * projector  # the draft's weights + KV + compute, and the projector's weights
    assert doc["memory"]["total_device_bytes"] == base["memory"]["total_device_bytes"] + extra
    assert {e["kind"] for e in doc["extras"]} == {"draft", "mmproj"}
    assert_user_error(run("plan", str(seed_gguf), "--draft", str(tmp_path / "none.gguf")), "no such file")


def test_run_passes_the_split_to_llama_cpp(synth):
    """A profile written for two GPUs still loads here (llama.cpp takes the split; a CPU has no GPUs to split)."""
    from sentiric_cli.engine.core import Engine

    path = synth("llama", n_embd=256, n_head=8, n_head_kv=2, n_ff=768, n_vocab=4096)
    settings = Settings(context_size=256, tensor_split=[17, 18], main_gpu=1, op_offload=False)
    with Engine(settings, path) as engine:
        assert engine.model.handle and engine.ctx
    host = run("plan", str(path), "--tensor-split", "1,1", "--json")  # host RAM: no GPU, the split is moot
    assert host.returncode == 0, host.stderr
