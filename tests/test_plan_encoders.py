"""Embedding and reranker models in `plan`: encoders without KV cache (BERT, nomic-bert, a BERT reranker) and a
pooled causal model (Qwen3-Embedding's shape), against the real llama.cpp where it allocates."""

from __future__ import annotations

import json

import pytest
from clirun import run
from llama_probe import Probe
from synth import write_model
from synth_bert import write_bert

from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.plan.memory import Shape, compute_buffer, kv_cache


def _plan(path, *args: str) -> dict:
    r = run("plan", str(path), "--json", "--ram", "64GiB", "--bandwidth", "20GB/s", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("arch, pooling, labels", [("bert", 1, 0), ("nomic-bert", 1, 0), ("bert", 4, 1)])
def test_encoder_plan_has_no_cache_and_a_whole_input_ubatch(tmp_path, arch, pooling, labels):
    path = write_bert(tmp_path / f"{arch}.gguf", arch, n_embd=384, n_head=12, n_ff=1536, n_ctx_train=1024,
                      pooling=pooling, n_cls_out=labels)
    doc = _plan(path)
    assert doc["model"]["known_architecture"] and not any("not one sentiric knows" in w for w in doc["warnings"])
    assert doc["memory"]["kv_bytes"] == 0 and all(o["kv_bytes"] == 0 for o in doc["options"])
    rec = doc["recommendation"]
    assert rec["context_size"] == 1024 and rec["ubatch_size"] == 1024 - 1024 % rec["threads"]
    assert doc["speed"]["decode_tps"] is None and doc["speed"]["prompt_flops"] > 0  # an encoder does not decode
    explained = {e["what"]: e for e in doc["explain"]}
    assert explained["KV cache"]["value"] == "none"
    assert explained["pooling"]["value"] == ("rank" if pooling == 4 else "mean")
    assert any("encoder" in n for n in doc["notes"])


def test_encoder_threads_that_do_not_divide_the_ubatch_are_warned(tmp_path):
    path = write_bert(tmp_path / "bert.gguf", n_ctx_train=512)
    doc = _plan(path, "--threads", "3")
    assert doc["recommendation"]["ubatch_size"] == 510  # a multiple of 3
    pinned = _plan(path, "--threads", "3", "--ubatch", "512")
    assert any("not a multiple of threads 3" in n for n in pinned["notes"])


def test_pooled_causal_model_keeps_its_cache(tmp_path):
    """Qwen3-Embedding is a causal qwen3 with `last` pooling: llama.cpp builds its KV cache and logits."""
    path = write_model(tmp_path / "qwen3-emb.gguf", "qwen3", n_vocab=8192, n_embd=512, n_head=8, n_head_kv=2,
                       n_ff=1536, **{"qwen3.pooling_type": 3})
    info = model_info(read_header(path))
    assert info.pooling == "last" and not info.no_cache
    doc = _plan(path, "--context", "2048", "--threads", "1")
    assert doc["memory"]["kv_bytes"] > 0 and doc["speed"]["decode_tps"] is not None
    probe = Probe(str(path), embeddings=True)
    try:
        for ub, fa in ((512, True), (256, False), (128, True)):
            shape = Shape(context=2048, threads=1, ubatch=ub, batch=2048, flash_attn=fa)
            measured = probe.measure(shape)
            planned = compute_buffer(info, shape, kv_cache(info, shape)).bytes / 2**20
            assert abs(planned / measured.compute_mib - 1) < 0.06, (ub, fa, planned, measured.compute_mib)
    finally:
        probe.close()
