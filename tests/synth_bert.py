"""A small valid BERT-family embedding GGUF (bert, nomic-bert) that llama.cpp loads: random f16 weights, a
WordPiece vocabulary, mean pooling, non-causal attention. For planning embedding and reranker models."""

from __future__ import annotations

import pathlib

import gguf
import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_bert(path, arch: str = "bert", *, n_layer=4, n_embd=128, n_head=4, n_ff=512, n_vocab=1024, n_ctx_train=512,
               pooling=1, n_cls_out=0) -> pathlib.Path:
    """`arch`: "bert" (learned positions, token types) or "nomic-bert" (rotary, fused QKV, gated FFN).
    `n_cls_out` > 0 adds a classifier head (a reranker, pooling 4 = rank)."""
    rng = np.random.default_rng(7)
    path = pathlib.Path(path)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("sentiric-synth-bert")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType(pooling))
    if arch == "nomic-bert":
        w.add_rope_freq_base(1000.0)
    if n_cls_out:
        w.add_classifier_output_labels([f"label{i}" for i in range(n_cls_out)])
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    tokens = SPECIAL + [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(n_vocab - len(SPECIAL))]
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIAL) + [1] * (n_vocab - len(SPECIAL)))
    w.add_token_type_count(2)
    for setter, i in ((w.add_pad_token_id, 0), (w.add_unk_token_id, 1), (w.add_bos_token_id, 2),
                      (w.add_sep_token_id, 3), (w.add_mask_token_id, 4)):
        setter(i)  # BERT's [CLS] is its beginning-of-sequence token

    def mat(name, *ne):
        w.add_tensor(name, (rng.standard_normal(ne[::-1]) * 0.02).astype(np.float16))

    def vec(name, n, value=0.0):
        w.add_tensor(name, np.full(n, value, dtype=np.float32))

    mat("token_embd.weight", n_embd, n_vocab)
    mat("token_types.weight", n_embd, 2)
    if arch == "bert":
        mat("position_embd.weight", n_embd, n_ctx_train)
    vec("token_embd_norm.weight", n_embd, 1.0)
    vec("token_embd_norm.bias", n_embd)
    for i in range(n_layer):
        p = f"blk.{i}"
        if arch == "nomic-bert":
            mat(f"{p}.attn_qkv.weight", n_embd, 3 * n_embd)
            mat(f"{p}.ffn_gate.weight", n_embd, n_ff)
        else:
            for x in ("q", "k", "v"):
                mat(f"{p}.attn_{x}.weight", n_embd, n_embd)
                vec(f"{p}.attn_{x}.bias", n_embd)
            vec(f"{p}.attn_output.bias", n_embd)
            vec(f"{p}.ffn_up.bias", n_ff)
            vec(f"{p}.ffn_down.bias", n_embd)
        mat(f"{p}.attn_output.weight", n_embd, n_embd)
        vec(f"{p}.attn_output_norm.weight", n_embd, 1.0)
        vec(f"{p}.attn_output_norm.bias", n_embd)
        mat(f"{p}.ffn_up.weight", n_embd, n_ff)
        mat(f"{p}.ffn_down.weight", n_ff, n_embd)
        vec(f"{p}.layer_output_norm.weight", n_embd, 1.0)
        vec(f"{p}.layer_output_norm.bias", n_embd)
    if n_cls_out:
        mat("cls.weight", n_embd, n_embd)
        vec("cls.bias", n_embd)
        mat("cls.output.weight", n_embd, n_cls_out)
        vec("cls.output.bias", n_cls_out)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
