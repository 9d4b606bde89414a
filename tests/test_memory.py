"""The memory model's arithmetic, without a model: padding, streams, cache types, MLA, recurrent state."""

from __future__ import annotations

from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.plan.memory import Shape, cache_type_fits, context_sizes, kv_cache, pad, row_bytes


def test_context_padding_follows_llama_context():
    assert pad(1) == 256 and pad(256) == 256 and pad(257) == 512
    assert context_sizes(Shape(context=1000, threads=1)) == (1024, 1024, 1)
    # three threads of 1000: n_ctx 3000 -> 3072, per stream 1024
    assert context_sizes(Shape(context=1000, threads=3)) == (3072, 1024, 3)
    assert context_sizes(Shape(context=1000, threads=3, kv_unified=True)) == (3072, 3072, 1)


def test_cache_type_row_sizes():
    assert row_bytes("f16", 256) == 512
    assert row_bytes("q8_0", 256) == 272  # 34 bytes per 32
    assert row_bytes("q4_0", 256) == 144  # 18 bytes per 32
    assert cache_type_fits("q8_0", 256) and not cache_type_fits("q8_0", 40)


def test_kv_scales_with_threads_and_sliding_window_caps(synth):
    info = model_info(read_header(synth("gemma3", n_vocab=8192, n_embd=256, n_head=8, n_head_kv=2, n_ff=768,
                                        sliding_window=128)))
    one = kv_cache(info, Shape(context=4096, threads=1, ubatch=512))
    four = kv_cache(info, Shape(context=4096, threads=4, ubatch=512))
    assert four.bytes == 4 * one.bytes
    sliding = next(g for g in one.groups if g.kind == "sliding")
    assert sliding.cells == 768  # pad256(min(4096, 128 + 512))
    full = kv_cache(info, Shape(context=4096, threads=1, swa_full=True))
    assert all(g.cells == 4096 for g in full.groups)


def test_mla_stores_k_only_and_recurrent_state_ignores_context(synth):
    ds = model_info(read_header(synth("deepseek2", n_vocab=4096, n_embd=256, n_head=8, n_ff=768)))
    assert ds.is_mla
    kv = kv_cache(ds, Shape(context=2048))
    assert all(g.v_bytes == 0 for g in kv.groups) and kv.bytes > 0
    mamba = model_info(read_header(synth("mamba", n_vocab=4096, n_embd=256, n_ff=768)))
    small, big = kv_cache(mamba, Shape(context=512)), kv_cache(mamba, Shape(context=65536))
    assert small.bytes == big.bytes > 0
    assert kv_cache(mamba, Shape(context=512, threads=2)).bytes == 2 * small.bytes


def test_kv_offload_off_keeps_cache_on_host(synth):
    info = model_info(read_header(synth("llama", n_vocab=4096, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)))
    on = kv_cache(info, Shape(context=2048, gpu_layers=99))
    off = kv_cache(info, Shape(context=2048, gpu_layers=99, kv_offload=False))
    assert on.device_bytes == off.host_bytes == on.bytes and off.device_bytes == 0
    assert on.bytes == 2 * 4 * 2048 * 64 * 2  # K+V x 4 layers x 2048 cells x (2 heads x 32) x f16 bytes


def test_impossible_head_counts_are_refused_not_planned(synth):
    import pytest

    from sentiric_cli.errors import SentiricError

    for key, value in (("attention.head_count", 0), ("attention.head_count_kv", 4_000_000_000),
                       ("attention.head_count", 1 << 20)):
        h = read_header(synth("llama"))
        h.metadata[f"llama.{key}"] = value
        with pytest.raises(SentiricError, match="head"):
            model_info(h)
    model_info(read_header(synth("mamba")))  # recurrent: no heads at all is right
