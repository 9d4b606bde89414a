"""Tiny synthetic GGUF models that llama.cpp (as vendored in llama-cpp-python 0.3.36) loads and runs.

``write_model(path, arch, ...)`` writes a small model with random weights (fixed seed) and a
working byte-level BPE vocabulary, so tests can plan, load, tokenize and decode without a real model.

Metadata is built first as ``{suffix: value}`` (written as ``"{arch}.{suffix}"``); ``**extra`` is
applied on top of it, and every tensor shape is then derived from the final metadata, so overrides
such as ``expert_count=8`` or ``key_length=32`` stay consistent with the tensors.
"""

from __future__ import annotations

import math
import pathlib

import gguf
import numpy as np

ARCHS: tuple[str, ...] = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "gemma2",
    "gemma3",
    "phi3",
    "deepseek2",
    "mamba",
)

# ARCHS name -> GGUF general.architecture
GGUF_ARCH = {"mistral": "llama", "mixtral": "llama"}

SEED = 1234
TENSOR_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # value = general.file_type (llama_ftype)

# short names accepted in **extra, mapped to their key suffix after "{arch}."
KEY_ALIASES = {
    key.rsplit(".", 1)[-1]: key
    for key in """
        context_length embedding_length block_count feed_forward_length vocab_size
        attention.head_count attention.head_count_kv attention.key_length attention.value_length
        attention.layer_norm_rms_epsilon attention.sliding_window attention.sliding_window_pattern
        attention.q_lora_rank attention.kv_lora_rank attention.key_length_mla attention.value_length_mla
        rope.dimension_count rope.freq_base rope.freq_base_swa attn_logit_softcapping final_logit_softcapping
        expert_count expert_used_count expert_feed_forward_length expert_shared_count expert_weights_scale
        expert_weights_norm expert_gating_func leading_dense_block_count
        ssm.conv_kernel ssm.inner_size ssm.state_size ssm.time_step_rank
    """.split()
}

# tensors llama.cpp conventionally keeps in f32 whatever the model type
_F32_NAMES = ("ffn_gate_inp", "ssm_conv1d", "ssm_a", "ssm_d")


def write_model(
    path,
    arch: str,
    *,
    n_layer=None,
    n_embd=64,
    n_head=4,
    n_head_kv=2,
    head_dim=None,
    n_ff=128,
    n_vocab=512,
    n_ctx_train=4096,
    tensor_type="f16",
    tied_output=False,
    split_max_tensors=0,
    **extra,
) -> pathlib.Path:
    """Write a tiny valid GGUF for ``arch`` (one of ARCHS) to ``path`` and return the path.

    ``n_layer`` defaults to 4 (6 for gemma3, one full SWA pattern period). gemma2/gemma3 always tie the
    output to token_embd. ``**extra`` overrides or adds metadata: a short name from KEY_ALIASES
    (``sliding_window=128``), a suffix with dots (``"rope.scaling.type"``) or a full key
    (``"general.name"``, ``"tokenizer.ggml.add_bos_token"``). Lists become per-layer arrays.
    ``split_max_tensors`` writes a split model the way gguf-split does (NAME-00001-of-0000N.gguf, ...)
    and returns the first shard.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    if tensor_type not in TENSOR_TYPES:
        raise ValueError(f"tensor_type must be one of {sorted(TENSOR_TYPES)}")
    if n_layer is None:
        n_layer = 6 if arch == "gemma3" else 4
    if head_dim is None and arch == "gemma3":
        head_dim = 2 * n_embd // n_head  # gemma3 heads are wider than n_embd / n_head
    garch = GGUF_ARCH.get(arch, arch)
    path = pathlib.Path(path)

    meta = _base_meta(arch, n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_ctx_train)
    # general.name must not contain "phi3"/"phi-3": llama.cpp then looks up "</s>", "<s>", ... by text
    general = {"general.name": "sentiric-synth", "general.file_type": TENSOR_TYPES[tensor_type]}
    tokenizer = {}
    for key, value in extra.items():
        if key.startswith("general."):
            general[key] = value
        elif key.startswith("tokenizer."):
            tokenizer[key] = value
        elif key.startswith(f"{garch}."):
            meta[key[len(garch) + 1 :]] = value
        elif "." in key or key in KEY_ALIASES:
            meta[KEY_ALIASES.get(key, key)] = value
        else:
            raise ValueError(f"unknown metadata name {key!r}; pass a dotted key suffix instead")

    tied = tied_output or arch in ("gemma2", "gemma3")
    t = _Tensors(np.random.default_rng(SEED), tensor_type)
    t.add("token_embd.weight", n_embd, n_vocab)
    t.norm("output_norm.weight", n_embd)
    if not tied:
        t.add("output.weight", n_embd, n_vocab)
    blocks = {"mamba": _mamba_blocks, "deepseek2": _deepseek2_blocks}.get(arch, _attn_blocks)
    blocks(t, arch, meta, n_embd)

    w = gguf.GGUFWriter(str(path), garch, split_max_tensors=split_max_tensors)
    for key, value in general.items():
        _add_kv(w, key, value)
    for suffix, value in meta.items():
        _add_kv(w, f"{garch}.{suffix}", value)
    for key, value in {**_vocab(n_vocab), **tokenizer}.items():
        _add_kv(w, key, value)
    for name, data, raw_dtype in t.items:
        w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    shards = sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))
    return shards[0] if split_max_tensors and shards else path


# ---------------------------------------------------------------- metadata


def _base_meta(arch, n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_ctx_train) -> dict:
    meta = {
        "context_length": n_ctx_train,
        "embedding_length": n_embd,
        "block_count": n_layer,
        "feed_forward_length": n_ff,
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.layer_norm_rms_epsilon": 1e-6,
    }
    if arch == "mamba":
        meta.update(
            {
                "feed_forward_length": 0,
                "attention.head_count": 0,
                "attention.head_count_kv": 0,
                "ssm.conv_kernel": 4,
                "ssm.inner_size": 2 * n_embd,
                "ssm.state_size": 16,
                "ssm.time_step_rank": math.ceil(n_embd / 16),
            }
        )
        return meta
    if arch == "deepseek2":
        # MLA: converted as MQA (one kv head) over the compressed latent; see convert_hf_to_gguf
        rope, nope, v_dim, kv_lora = 8, 16, 16, 32
        meta.update(
            {
                "attention.head_count_kv": 1,
                "attention.q_lora_rank": 32,
                "attention.kv_lora_rank": kv_lora,
                "attention.key_length": kv_lora + rope,
                "attention.value_length": kv_lora,
                "attention.key_length_mla": nope + rope,
                "attention.value_length_mla": v_dim,
                "rope.dimension_count": rope,
                "leading_dense_block_count": 1,
                "expert_count": 4,
                "expert_used_count": 2,
                "expert_shared_count": 1,
                "expert_feed_forward_length": 32,
                "expert_weights_scale": 1.0,
            }
        )
        return meta
    if head_dim is not None:
        meta["attention.key_length"] = head_dim
        meta["attention.value_length"] = head_dim
    meta["rope.dimension_count"] = head_dim or n_embd // n_head
    if arch == "mistral":
        meta["attention.sliding_window"] = 128
    if arch in ("mixtral", "qwen3moe"):
        meta["expert_count"], meta["expert_used_count"] = 4, 2
    if arch == "qwen3moe":
        meta["expert_feed_forward_length"] = n_ff // 2
    if arch == "gemma2":
        meta.update(
            {"attention.sliding_window": 128, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}
        )
    if arch == "gemma3":
        meta.update({"attention.sliding_window": 128, "rope.freq_base": 1e6, "rope.freq_base_swa": 1e4})
    return meta


def _add_kv(w, key, value):
    if isinstance(value, (list, tuple)):
        w.add_array(key, list(value))  # ints -> INT32, floats -> FLOAT32, bools -> BOOL
    elif isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        raise TypeError(f"unsupported metadata value for {key}: {value!r}")


def _layer(meta, key, i, default=0):
    v = meta.get(key, default)
    return v[i] if isinstance(v, (list, tuple)) else v


# ---------------------------------------------------------------- vocabulary


def _byte_tokens() -> list[str]:
    """GPT-2's byte -> printable unicode mapping, indexed by byte value."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


_MERGES = ["h e", "l l", "o r", "Ġ w", "he ll", "hell o", "Ġw or", "Ġwor l", "Ġworl d", "Ġ t", "Ġt he"]


def _vocab(n_vocab) -> dict:
    """tokenizer.* metadata: GPT-2 byte-level BPE (every byte is a token, so any text tokenizes)."""
    tokens = _byte_tokens() + [m.replace(" ", "") for m in _MERGES] + ["<|bos|>", "<|eos|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]  # NORMAL, CONTROL
    if n_vocab < len(tokens):
        raise ValueError(f"n_vocab must be >= {len(tokens)}")
    pad = n_vocab - len(tokens)
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens + [f"<|extra_{i}|>" for i in range(pad)],
        "tokenizer.ggml.token_type": types + [3] * pad,
        "tokenizer.ggml.merges": _MERGES,
        "tokenizer.ggml.bos_token_id": tokens.index("<|bos|>"),
        "tokenizer.ggml.eos_token_id": tokens.index("<|eos|>"),
        "tokenizer.ggml.add_bos_token": True,
    }


# ---------------------------------------------------------------- tensors


class _Tensors:
    """Collects (name, numpy data, raw_dtype); shapes are given in ggml order (ne0 first)."""

    def __init__(self, rng, tensor_type):
        self.rng, self.tensor_type, self.items = rng, tensor_type, []

    def add(self, name, *ne, scale=0.02):
        data = (self.rng.standard_normal(ne[::-1]) * scale).astype(np.float32)
        self.put(name, data)

    def norm(self, name, n, value=1.0):
        self.put(name, np.full(n, value, dtype=np.float32))

    def put(self, name, data):
        kind = self.tensor_type
        if data.ndim == 1 or any(f".{s}" in name for s in _F32_NAMES):
            kind = "f32"
        elif kind == "q8_0" and data.shape[-1] % 32:
            kind = "f16"  # q8_0 blocks are 32 wide along ne0
        if kind == "f32":
            self.items.append((name, data, None))
        elif kind == "f16":
            self.items.append((name, data.astype(np.float16), None))
        else:
            qt = gguf.GGMLQuantizationType.Q8_0
            self.items.append((name, gguf.quants.quantize(data, qt), qt))


def _dense_ffn(t, p, n_embd, n_ff):
    t.add(f"{p}.ffn_gate.weight", n_embd, n_ff)
    t.add(f"{p}.ffn_up.weight", n_embd, n_ff)
    t.add(f"{p}.ffn_down.weight", n_ff, n_embd)


def _moe_ffn(t, p, n_embd, n_ff_exp, n_expert, n_shared_ff=0):
    t.add(f"{p}.ffn_gate_inp.weight", n_embd, n_expert)
    t.add(f"{p}.ffn_gate_exps.weight", n_embd, n_ff_exp, n_expert)
    t.add(f"{p}.ffn_up_exps.weight", n_embd, n_ff_exp, n_expert)
    t.add(f"{p}.ffn_down_exps.weight", n_ff_exp, n_embd, n_expert)
    if n_shared_ff:
        t.add(f"{p}.ffn_gate_shexp.weight", n_embd, n_shared_ff)
        t.add(f"{p}.ffn_up_shexp.weight", n_embd, n_shared_ff)
        t.add(f"{p}.ffn_down_shexp.weight", n_shared_ff, n_embd)


def _attn_blocks(t, arch, meta, n_embd):
    """llama / mistral / mixtral / qwen2 / qwen3 / qwen3moe / gemma2 / gemma3 / phi3 blocks."""
    n_expert = meta.get("expert_count", 0)
    for i in range(meta["block_count"]):
        p = f"blk.{i}"
        n_head = _layer(meta, "attention.head_count", i)
        n_head_kv = _layer(meta, "attention.head_count_kv", i)
        n_ff = _layer(meta, "feed_forward_length", i)
        hk = meta.get("attention.key_length", n_embd // n_head)
        hv = meta.get("attention.value_length", n_embd // n_head)
        q, k, v = n_head * hk, n_head_kv * hk, n_head_kv * hv

        t.norm(f"{p}.attn_norm.weight", n_embd)
        if arch == "phi3":
            t.add(f"{p}.attn_qkv.weight", n_embd, q + k + v)
        else:
            for name, n in (("attn_q", q), ("attn_k", k), ("attn_v", v)):
                t.add(f"{p}.{name}.weight", n_embd, n)
                if arch == "qwen2":
                    t.add(f"{p}.{name}.bias", n)
        if arch in ("qwen3", "qwen3moe", "gemma3"):
            t.norm(f"{p}.attn_q_norm.weight", hk)
            t.norm(f"{p}.attn_k_norm.weight", hk)
        t.add(f"{p}.attn_output.weight", n_head * hv, n_embd)
        if arch.startswith("gemma"):
            t.norm(f"{p}.post_attention_norm.weight", n_embd)
            t.norm(f"{p}.post_ffw_norm.weight", n_embd)

        t.norm(f"{p}.ffn_norm.weight", n_embd)
        if arch == "phi3":
            t.add(f"{p}.ffn_up.weight", n_embd, 2 * n_ff)  # gate and up fused
            t.add(f"{p}.ffn_down.weight", n_ff, n_embd)
        elif n_expert:
            n_ff_exp = _layer(meta, "expert_feed_forward_length", i) or n_ff
            _moe_ffn(t, p, n_embd, n_ff_exp, n_expert)
        else:
            _dense_ffn(t, p, n_embd, n_ff)


def _deepseek2_blocks(t, arch, meta, n_embd):
    """DeepSeek-V2/V3 style: MLA attention (split k_b/v_b), leading dense blocks, routed + shared experts."""
    n_head = meta["attention.head_count"]
    rope = meta["rope.dimension_count"]
    k_mla, v_mla = meta["attention.key_length_mla"], meta["attention.value_length_mla"]
    q_lora, kv_lora = meta.get("attention.q_lora_rank", 0), meta["attention.kv_lora_rank"]
    n_expert, n_shared = meta["expert_count"], meta.get("expert_shared_count", 0)
    for i in range(meta["block_count"]):
        p = f"blk.{i}"
        t.norm(f"{p}.attn_norm.weight", n_embd)
        if q_lora:
            t.norm(f"{p}.attn_q_a_norm.weight", q_lora)
            t.add(f"{p}.attn_q_a.weight", n_embd, q_lora)
            t.add(f"{p}.attn_q_b.weight", q_lora, n_head * k_mla)
        else:  # "lite" variant
            t.add(f"{p}.attn_q.weight", n_embd, n_head * k_mla)
        t.norm(f"{p}.attn_kv_a_norm.weight", kv_lora)
        t.add(f"{p}.attn_kv_a_mqa.weight", n_embd, kv_lora + rope)
        t.add(f"{p}.attn_k_b.weight", k_mla - rope, kv_lora, n_head)
        t.add(f"{p}.attn_v_b.weight", kv_lora, v_mla, n_head)
        t.add(f"{p}.attn_output.weight", n_head * v_mla, n_embd)
        t.norm(f"{p}.ffn_norm.weight", n_embd)
        if i < meta.get("leading_dense_block_count", 0):
            _dense_ffn(t, p, n_embd, _layer(meta, "feed_forward_length", i))
        else:
            n_ff_exp = _layer(meta, "expert_feed_forward_length", i)
            _moe_ffn(t, p, n_embd, n_ff_exp, n_expert, n_ff_exp * n_shared)


def _mamba_blocks(t, arch, meta, n_embd):
    d_conv, d_inner = meta["ssm.conv_kernel"], meta["ssm.inner_size"]
    d_state, dt_rank = meta["ssm.state_size"], meta["ssm.time_step_rank"]
    for i in range(meta["block_count"]):
        p = f"blk.{i}"
        t.norm(f"{p}.attn_norm.weight", n_embd)
        t.add(f"{p}.ssm_in.weight", n_embd, 2 * d_inner)
        t.add(f"{p}.ssm_conv1d.weight", d_conv, d_inner, scale=0.2)
        t.norm(f"{p}.ssm_conv1d.bias", d_inner, 0.0)
        t.add(f"{p}.ssm_x.weight", d_inner, dt_rank + 2 * d_state)
        t.add(f"{p}.ssm_dt.weight", dt_rank, d_inner)
        t.norm(f"{p}.ssm_dt.bias", d_inner, -4.0)
        # A = -exp(A_log) must be negative; D is a skip gain
        t.put(f"{p}.ssm_a", -np.tile(np.arange(1, d_state + 1, dtype=np.float32), (d_inner, 1)))
        t.norm(f"{p}.ssm_d", d_inner)
        t.add(f"{p}.ssm_out.weight", d_inner, n_embd)
