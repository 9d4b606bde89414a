"""The child side of the CPU path probe (see cpupath.py): `python -m sentiric_cli.engine.cpu_probe --extra-bufts|--plain`.

Writes a tiny llama model whose weights are of every type llama.cpp's AMX and repack buffers take
(Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS, F16; rows multiples of 256), loads it, prints the weight
buffer types llama.cpp chose (`buffers:` line, flushed before any decode, so a parent still sees it
when the decode kills us), then decodes a 64-token batch and one token. Exit 0: this path runs here.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

N_EMBD, N_FF, N_HEAD = 256, 512, 4
Q = gguf.GGMLQuantizationType


def write_probe_model(path: Path) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("sentiric-cpu-probe")
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(2)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([2, 3, 3] + [6] * 256)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    rng = np.random.default_rng(0)

    def put(name: str, qtype: Q, cols: int, rows: int) -> None:
        if rows == 0:  # a norm: one dimension
            w.add_tensor(name, np.ones(cols, dtype=np.float32))
            return
        if qtype in (Q.F32, Q.F16):
            dtype = np.float32 if qtype == Q.F32 else np.float16
            w.add_tensor(name, (rng.standard_normal((rows, cols)) * 0.02).astype(dtype))
            return
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        # zero bytes are a valid block of every type (scale 0): the probe tests instructions, not numbers
        w.add_tensor(name, np.zeros((rows, cols // block * size), dtype=np.uint8), raw_dtype=qtype)

    n_vocab = len(tokens)
    put("token_embd.weight", Q.F32, N_EMBD, n_vocab)
    put("output_norm.weight", Q.F32, N_EMBD, 0)
    put("output.weight", Q.Q8_0, N_EMBD, n_vocab)
    layers = [(Q.Q4_0, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.Q4_K, Q.Q5_K, Q.Q4_0),
              (Q.F16, Q.Q4_1, Q.IQ4_XS, Q.Q8_0, Q.Q6_K, Q.Q4_0, Q.Q4_K)]
    for i, (q, k, v, o, gate, up, down) in enumerate(layers):
        p = f"blk.{i}."
        put(p + "attn_norm.weight", Q.F32, N_EMBD, 0)
        put(p + "ffn_norm.weight", Q.F32, N_EMBD, 0)
        for name, t in (("attn_q", q), ("attn_k", k), ("attn_v", v), ("attn_output", o)):
            put(p + name + ".weight", t, N_EMBD, N_EMBD)
        put(p + "ffn_gate.weight", gate, N_EMBD, N_FF)
        put(p + "ffn_up.weight", up, N_EMBD, N_FF)
        put(p + "ffn_down.weight", down, N_FF, N_EMBD)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main(argv: list[str]) -> int:
    extra = "--plain" not in argv
    from llama_cpp import llama_cpp as C

    from sentiric_cli.engine.llamalog import tap_log

    log: list[str] = []
    tap_log(log)
    with tempfile.TemporaryDirectory(prefix="sentiric-probe-") as tmp:
        path = write_probe_model(Path(tmp) / "probe.gguf")
        mp = C.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.use_extra_bufts = extra
        model = C.llama_model_load_from_file(str(path).encode(), mp)
        if not model:
            print("".join(log[-5:]), file=sys.stderr)
            return 3
        bufs = re.findall(r"(\S+) model buffer size", "".join(log))
        print("buffers:" + ",".join(dict.fromkeys(bufs)), flush=True)
        cp = C.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 256, 64, 64, 1
        cp.n_threads = cp.n_threads_batch = 2
        ctx = C.llama_init_from_model(model, cp)
        if not ctx:
            print("".join(log[-5:]), file=sys.stderr)
            return 3
        for n, start in ((64, 0), (1, 64)):
            batch = C.llama_batch_init(n, 0, 1)
            for i in range(n):
                batch.token[i] = 3 + (i * 7) % 256
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i == n - 1
            batch.n_tokens = n
            rc = C.llama_decode(ctx, batch)
            C.llama_batch_free(batch)
            if rc != 0:
                print(f"llama_decode returned {rc}", file=sys.stderr)
                return 3
        C.llama_free(ctx)
        C.llama_model_free(model)
    print("decoded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
