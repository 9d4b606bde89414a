"""Published llama.cpp CUDA logs (buffer lines) and header-only GGUFs with those models' shapes.

Each record keeps its source, the settings the log shows and the buffer sizes it printed. The model
shapes are the published configs of the named models; where a log does not name its model, the
record says how the shape was identified. tests/test_cuda_logs.py plans each one on a `--vram`
device and compares: KV exact, device and host (CUDA_Host) compute buffers within 3%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

F16, Q4K = gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q4_K


@dataclass(frozen=True)
class Shape:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int = 32768


@dataclass(frozen=True)
class Log:
    name: str
    source: str  # where the log was published
    date: str
    shape: Shape
    identified: str  # how the model's shape is known
    n_ctx: int
    n_seq: int
    ubatch: int
    flash_attn: bool
    kv_mib: float  # "KV buffer size" / "KV self size"
    device_compute_mib: float  # "CUDA0 compute buffer size"
    host_compute_mib: float | None  # "CUDA_Host compute buffer size" (None: not in the published excerpt)


MISTRAL_7B_V02 = Shape("llama", 32, 4096, 32, 8, 128, 14336, 32000)
QWEN25_3B = Shape("qwen2", 36, 2048, 16, 2, 128, 11008, 151936)

LOGS = (
    Log("mistral-7b-v0.2 c2048", "https://github.com/fedora-copr/logdetective/pull/106", "2025-01-13",
        MISTRAL_7B_V02, "logdetective's default model (Mistral-7B-Instruct-v0.2 GGUF); freq_base 1e6, "
        "KV 256 MiB at 2048 and the 0.12 MiB output buffer (32000 x 4 bytes) agree",
        2048, 1, 512, False, 256.00, 164.00, 12.01),
    Log("mistral-7b-v0.2 c32768", "https://github.com/fedora-copr/logdetective/pull/106", "2025-01-13",
        MISTRAL_7B_V02, "same run at -c 32768", 32768, 1, 512, False, 4096.00, 2144.00, 72.01),
    Log("qwen2.5-3b c4096", "https://github.com/SciSharp/LLamaSharp/issues/1099", "2025-02 (build 4701)",
        QWEN25_3B, "36 layers with n_embd_k_gqa 256 (2 KV heads x 128) and a 0.58 MiB output buffer "
        "(151936 x 4 bytes): Qwen2.5-3B's config", 4096, 1, 512, False, 144.00, 300.75, 12.01),
)


def write_header(path: str | Path, s: Shape) -> Path:
    """A header-only GGUF (tensor infos, no data) with the shapes of `s` and Q4_K matrices."""
    path = Path(path)
    w = gguf.GGUFWriter(str(path), s.arch)
    w.add_name(f"{s.arch} {s.n_layer}x{s.n_embd} (header only)")
    w.add_context_length(s.n_ctx_train)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(s.n_vocab)])

    def t(name: str, rows: int, cols: int, qtype) -> None:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        w.add_tensor_info(name, (rows, cols) if rows > 1 else (cols,), np.dtype(np.float32),
                          rows * cols // block * size, raw_dtype=qtype)

    f32 = gguf.GGMLQuantizationType.F32
    t("token_embd.weight", s.n_vocab, s.n_embd, Q4K)
    t("output_norm.weight", 1, s.n_embd, f32)
    t("output.weight", s.n_vocab, s.n_embd, Q4K)
    for i in range(s.n_layer):
        p = f"blk.{i}."
        t(p + "attn_norm.weight", 1, s.n_embd, f32)
        t(p + "ffn_norm.weight", 1, s.n_embd, f32)
        t(p + "attn_q.weight", s.n_head * s.head, s.n_embd, Q4K)
        t(p + "attn_k.weight", s.n_head_kv * s.head, s.n_embd, Q4K)
        t(p + "attn_v.weight", s.n_head_kv * s.head, s.n_embd, Q4K)
        t(p + "attn_output.weight", s.n_embd, s.n_head * s.head, Q4K)
        t(p + "ffn_gate.weight", s.n_ff, s.n_embd, Q4K)
        t(p + "ffn_up.weight", s.n_ff, s.n_embd, Q4K)
        t(p + "ffn_down.weight", s.n_embd, s.n_ff, Q4K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path
