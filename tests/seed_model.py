"""A header-only GGUF with gemma-3-4b-it Q4_K_M's real shapes and tensor types (no tensor data).

Types follow llama.cpp's Q4_K_M rule (src/llama-quant.cpp): Q4_K everywhere, Q6_K for attn_v and
ffn_down in the `use_more_bits` layers, Q6_K for the tied token_embd (it doubles as the output), f32
norms. It lets the seed document's scenario be planned without the 2.5 GB model.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

Q4K, Q6K, F32 = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K, gguf.GGMLQuantizationType.F32
N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, HEAD, N_FF, N_VOCAB = 34, 2560, 8, 4, 256, 10240, 262144


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def write_gemma3_4b_header(path: str | Path, n_vocab: int = N_VOCAB) -> Path:
    path = Path(path)
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("gemma-3-4b-it (header only)")
    w.add_context_length(131072)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD)
    w.add_value_length(HEAD)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(1024)
    w.add_rope_freq_base(1e6)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(n_vocab)])

    def t(name: str, rows: int, cols: int, qtype) -> None:
        w.add_tensor_info(name, (rows, cols) if rows > 1 else (cols,), np.dtype(np.float32),
                          _nbytes(rows * cols, qtype), raw_dtype=qtype)

    t("token_embd.weight", n_vocab, N_EMBD, Q6K)
    t("output_norm.weight", 1, N_EMBD, F32)
    for i in range(N_LAYER):
        more = Q6K if _more_bits(i, N_LAYER) else Q4K
        p = f"blk.{i}."
        for norm, n in (("attn_norm", N_EMBD), ("attn_q_norm", HEAD), ("attn_k_norm", HEAD),
                        ("post_attention_norm", N_EMBD), ("ffn_norm", N_EMBD), ("post_ffw_norm", N_EMBD)):
            t(p + norm + ".weight", 1, n, F32)
        t(p + "attn_q.weight", N_HEAD * HEAD, N_EMBD, Q4K)
        t(p + "attn_k.weight", N_HEAD_KV * HEAD, N_EMBD, Q4K)
        t(p + "attn_v.weight", N_HEAD_KV * HEAD, N_EMBD, more)
        t(p + "attn_output.weight", N_EMBD, N_HEAD * HEAD, Q4K)
        t(p + "ffn_gate.weight", N_FF, N_EMBD, Q4K)
        t(p + "ffn_up.weight", N_FF, N_EMBD, Q4K)
        t(p + "ffn_down.weight", N_EMBD, N_FF, more)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def _nbytes(n_elements: int, qtype) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return n_elements // block * size


if __name__ == "__main__":
    import sys

    print(write_gemma3_4b_header(sys.argv[1] if len(sys.argv) > 1 else "gemma-3-4b-it-Q4_K_M.gguf"))
