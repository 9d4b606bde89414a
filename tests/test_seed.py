"""The seed document's scenario: gemma-3-4b-it Q4_K_M on a 6 GB GPU, against published llama.cpp logs."""

from __future__ import annotations

from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.memory import MiB, Shape, compute_buffer, kv_cache, weights
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.settings import Settings

SIX_GB = Device("vram", "6 GiB GPU", 6 * 1024**3, 6 * 1024**3)


def test_kv_matches_published_log(seed_gguf):
    info = model_info(read_header(seed_gguf))
    kv = kv_cache(info, Shape(context=8192, threads=1, gpu_layers=99, swa_full=False))
    # llama.cpp: "160.00 MiB (8192 cells, 5 layers)" + "174.00 MiB (1536 cells, 29 layers)"
    assert [(g.kind, g.cells, g.n_layers, g.bytes / MiB) for g in kv.groups] == [
        ("full", 8192, 5, 160.0), ("sliding", 1536, 29, 174.0)]
    full = kv_cache(info, Shape(context=8192, threads=1, gpu_layers=99, swa_full=True))
    assert full.bytes == 1088 * MiB


def test_weights_and_compute_match_published_log(seed_gguf):
    header = read_header(seed_gguf)
    info = model_info(header)
    w = weights(header, info, 99)
    assert round(w.device_bytes / MiB) == 2368  # "CUDA0 model buffer size = 2368.xx MiB"
    assert round(w.host_bytes / MiB) == 525  # token_embd stays on the host
    shape = Shape(context=8192, threads=1, gpu_layers=99)
    comp = compute_buffer(info, shape, kv_cache(info, shape))
    assert abs(comp.bytes / MiB / 517 - 1) < 0.02  # "CUDA0 compute buffer size = 517.xx MiB"


def test_output_layer_is_offloaded_first(seed_gguf):
    header = read_header(seed_gguf)
    info = model_info(header)
    one = weights(header, info, 1)  # llama.cpp: i_gpu_start = n_layer + 1 - n_gpu_layers
    assert one.output_on_device and one.layers_on_device == 1
    assert round(one.device_bytes / MiB) == 525  # the tied output: a copy of token_embd
    assert weights(header, info, 0).device_bytes == 0


def test_six_gb_plan_serves_threads_at_8192(seed_gguf):
    header = read_header(seed_gguf)
    plan = make_plan(header, model_info(header), SIX_GB, Settings(context_size=8192), {"context_size"})
    assert plan.fits
    rec = plan.recommendation
    assert rec.context_size == 8192 and rec.gpu_layers == 35
    assert rec.threads >= 2  # the seed's table allowed at most 1 safe thread at 8192; reality allows more
    assert plan.memory.need_bytes <= SIX_GB.free_bytes
    by_threads = {o.threads: o for o in plan.options}
    assert by_threads[1].kv_bytes_per_thread == 334 * MiB
    assert "swa_full" in " ".join(plan.notes)  # says shifting is off with a window-sized SWA cache


def test_pinned_context_and_threads_choose_the_most_gpu_layers(seed_gguf):
    header = read_header(seed_gguf)
    info = model_info(header)
    tight = Device("vram", "4 GiB GPU", 4 * 1024**3, 4 * 1024**3)
    pinned = {"context_size", "threads", "swa_full", "cache_type_k", "cache_type_v", "flash_attn"}
    asked = Settings(context_size=8192, threads=2, swa_full=True)
    plan = make_plan(header, info, tight, asked, pinned)
    assert plan.fits
    assert 0 < plan.recommendation.gpu_layers < info.n_layer + 1
    one_more = asked.model_copy(update={"gpu_layers": plan.recommendation.gpu_layers + 1})
    more = make_plan(header, info, tight, one_more, pinned | {"gpu_layers"})
    assert more.memory.need_bytes > plan.memory.need_bytes
    assert more.memory.verdict in ("risky", "does not fit")


def test_savings_never_offer_a_cache_type_llama_cpp_refuses(synth):
    path = synth("deepseek2", n_vocab=4096, n_embd=256, n_head=8, n_ff=768)  # MLA key 40 wide: q8_0 refused
    header = read_header(path)
    info = model_info(header)
    plan = make_plan(header, info, SIX_GB, Settings())
    assert plan.recommendation.cache_type_k == "f16"
    assert not any("q8_0" in s.alternative or "q8_0" in s.choice for s in plan.savings)
