"""The plan against the real llama.cpp: KV exact, weights to alignment, compute within tolerance."""

from __future__ import annotations

import pytest
from accuracy import COMPUTE_TOL, DEFAULT_TOL, compare, shapes_for_synth
from synth import ARCHS
from synth_bert import write_bert

from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.plan.memory import Shape

ALIGN = 32  # GGUF default alignment between tensors in the file (and so in the mapped buffer)


def _check(rows) -> None:
    assert rows, "no configuration was measured"
    for r in rows:
        assert r.kv_pred == r.kv_meas, f"{r.model} {r.label}: KV {r.kv_pred} MiB planned, llama.cpp {r.kv_meas}"
        assert r.weights_pred == r.weights_size, f"{r.model}: weights {r.weights_pred} != {r.weights_size}"
        slack = r.n_tensors * ALIGN + 0.005 * 1024 * 1024  # padding between tensors + log rounding
        assert abs(r.weights_buffer_mib * 1024 * 1024 - r.weights_pred) <= slack, r.model
        tol = COMPUTE_TOL.get(r.arch, DEFAULT_TOL)
        assert abs(r.compute_err) <= tol, (
            f"{r.model} {r.label}: compute {r.compute_pred:.3f} MiB planned, {r.compute_meas:.3f} measured "
            f"({r.compute_err:+.2%}, bound {tol:.0%})")


def test_bundled_model_matches_llama_cpp(bundled):
    rows = compare(bundled, "gemma-3-270m")
    assert len(rows) == 36  # 3 contexts x 2 thread counts x 3 cache/attention settings x swa_full on/off
    _check(rows)
    assert max(abs(r.compute_err) for r in rows) <= DEFAULT_TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_synthetic_architectures_match_llama_cpp(arch, synth):
    path = synth(arch, n_vocab=8192, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)
    info = model_info(read_header(path))
    _check(compare(path, arch, shapes_for_synth(info.has_swa)))


def test_swa_and_padding_choices_change_what_llama_cpp_allocates(synth):
    """The grid must exercise what the plan claims to model, or the tests above prove little."""
    path = synth("gemma3", n_vocab=8192, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)
    rows = compare(path, "gemma3", shapes_for_synth(True))
    kv_sets = {tuple(r.kv_meas) for r in rows}
    assert len(kv_sets) > 10
    off = next(r for r in rows if not r.shape.swa_full and r.shape.context == 2048)
    on = next(r for r in rows if r.shape.swa_full and r.shape.context == 2048 and r.shape.threads == off.shape.threads
              and r.shape.cache_type_k == off.shape.cache_type_k and r.shape.ubatch == off.shape.ubatch)
    assert float(on.kv_meas[1]) > float(off.kv_meas[1])  # sliding layers grow to the full context


ENCODER_TOL = 0.11  # nomic-bert's attention at a 128-token ubatch without flash attention: +10.8%; else exact


@pytest.mark.parametrize("arch", ["bert", "nomic-bert"])
def test_embedding_encoders_match_llama_cpp(arch, tmp_path):
    """BERT-family encoders as llama-server --embeddings loads them: no KV cache, T x T attention."""
    path = write_bert(tmp_path / f"{arch}.gguf", arch, n_layer=2, n_embd=384, n_head=12, n_ff=1536, n_vocab=2048,
                      n_ctx_train=1024)
    info = model_info(read_header(path))
    assert info.no_cache and info.pooling == "mean" and info.known_arch
    # the ubatch a multiple of threads: llama.cpp 0.3.36 aborts reserving an encoder's graph otherwise
    shapes = [Shape(context=c, threads=t, ubatch=min(c, u) - min(c, u) % t, batch=max(c, 512), flash_attn=fa)
              for c in (256, 1024) for t in (1, 3) for u in (128, 1024) for fa in (False, True)]
    rows = compare(path, arch, shapes)
    assert len(rows) == len(shapes) and all(r.kv_meas == [] == r.kv_pred for r in rows)
    for r in rows:
        assert r.weights_pred == r.weights_size
        assert abs(r.compute_err) <= ENCODER_TOL, (r.label, r.compute_pred, r.compute_meas)
    # the plan a generative model would get is far off: llama.cpp allocates no cache for an encoder
    big = max(rows, key=lambda r: r.compute_meas)
    assert big.compute_meas > 40 and abs(big.compute_err) < 0.01
