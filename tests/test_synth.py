"""Smoke test: every synthetic model from tests/synth.py loads, tokenizes and decodes in llama.cpp."""

import gguf
import numpy as np
import pytest
from synth import ARCHS, write_model

llama_cpp = pytest.importorskip("llama_cpp")


def _logits(ctx, i, n_vocab):
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy()


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_tokenizes_and_decodes(tmp_path, arch):
    path = write_model(tmp_path / f"{arch}.gguf", arch)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False)
    try:
        assert llm.detokenize(llm.tokenize(b"hello world", add_bos=False)) == b"hello world"
        tokens = llm.tokenize(b"the quick brown fox")
        assert tokens[0] == llm.token_bos()
        llm.eval(tokens)
        logits = _logits(llm.ctx, -1, llm.n_vocab())
        assert np.isfinite(logits).all() and logits.std() > 0
    finally:
        llm.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_q8_0_two_sequences(tmp_path, arch):
    """q8_0 weights, n_ctx=1024, two sequences decoded in one batch through the low-level API."""
    path = write_model(tmp_path / f"{arch}.gguf", arch, tensor_type="q8_0")
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    assert model, "model failed to load"
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = 1024, 64, 64, 2
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    batch = llama_cpp.llama_batch_init(16, 0, 2)
    try:
        assert ctx, "context creation failed"
        vocab = llama_cpp.llama_model_get_vocab(model)
        n_vocab, bos = llama_cpp.llama_vocab_n_tokens(vocab), llama_cpp.llama_vocab_bos(vocab)
        seqs = [[bos, 40, 41, 42, 43], [bos, 100, 101]]
        n = 0
        for seq_id, toks in enumerate(seqs):
            for pos, tok in enumerate(toks):
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = tok, pos, 1
                batch.seq_id[n][0] = seq_id
                batch.logits[n] = pos == len(toks) - 1
                n += 1
        batch.n_tokens = n
        assert llama_cpp.llama_decode(ctx, batch) == 0
        for i in (len(seqs[0]) - 1, n - 1):
            assert np.isfinite(_logits(ctx, i, n_vocab)).all()
    finally:
        llama_cpp.llama_batch_free(batch)
        if ctx:
            llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


def test_tensor_types_and_metadata(tmp_path):
    r = gguf.GGUFReader(write_model(tmp_path / "m.gguf", "mixtral", tensor_type="q8_0", sliding_window=64))
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.ffn_gate_inp.weight"] == gguf.GGMLQuantizationType.F32
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["llama.attention.sliding_window"].contents() == 64
    assert r.fields["llama.expert_count"].contents() == 4


def test_f32_llama_loads(tmp_path):
    path = write_model(tmp_path / "m.gguf", "llama", tensor_type="f32", n_layer=2, tied_output=True)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False)
    try:
        llm.eval(llm.tokenize(b"hi"))
        assert np.isfinite(_logits(llm.ctx, -1, llm.n_vocab())).all()
    finally:
        llm.close()
