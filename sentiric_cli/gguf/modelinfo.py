"""The model facts the memory model needs, taken from a GGUF header the way llama.cpp reads them.

Each value keeps the metadata key (or default) it came from, so the plan can explain itself.
Per-architecture rules (sliding-window pattern, recurrent state) follow the vendored llama.cpp
`src/models/<arch>.cpp` loaders of llama-cpp-python 0.3.36.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.header import GGUFHeader, SkippedArray


@dataclass(frozen=True)
class ArchRule:
    swa_period: int = 0  # default sliding-window pattern period; 0 = no sliding window
    swa_default: int = 0  # window used when the GGUF has none (gemma2: 4096)
    swa_needs_key: bool = False  # gemma3/phi-style: sliding only when the window key is present and > 0
    dense_first: bool = False
    recurrent: bool = False
    mrope: bool = False  # M-RoPE positions cannot be shifted
    no_cache: bool = False  # a non-causal encoder (BERT and kin): llama.cpp keeps no KV cache for it at all
    gated_ffn: bool = False  # gate x up feed-forward (three rows alive) rather than BERT's up + bias


DENSE = ArchRule()
# Architectures whose memory llama.cpp 0.3.36 lays out as planned here. Anything else is planned
# as dense attention with a warning.
ARCH_RULES: dict[str, ArchRule] = {
    **{a: DENSE for a in (
        "llama", "mistral3", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "phi3", "phi2", "gemma",
        "deepseek2", "granite", "granitemoe", "olmo2", "olmoe", "starcoder2", "stablelm", "command-r",
        "internlm2", "exaone", "smollm3", "minicpm", "gpt2", "falcon", "mpt", "bloom", "qwen",
    )},
    "gemma2": ArchRule(swa_period=2, swa_default=4096),
    "gemma3": ArchRule(swa_period=6, swa_needs_key=True),
    "cohere2": ArchRule(swa_period=4),
    "llama4": ArchRule(swa_period=4, swa_default=8192),
    "gpt-oss": ArchRule(swa_period=2),
    "qwen2vl": ArchRule(mrope=True),
    "qwen3vl": ArchRule(mrope=True),
    "qwen3vlmoe": ArchRule(mrope=True),
    # embedding and reranker encoders: llama.cpp's create_memory makes none for them (llama-model.cpp)
    **{a: ArchRule(no_cache=True) for a in ("bert", "jina-bert-v3")},
    **{a: ArchRule(no_cache=True, gated_ffn=True) for a in (
        "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "neo-bert", "modern-bert", "eurobert")},
    "mamba": ArchRule(recurrent=True),
    "mamba2": ArchRule(recurrent=True),
    "rwkv6": ArchRule(recurrent=True),
    "rwkv7": ArchRule(recurrent=True),
}
POOLING = {1: "mean", 2: "cls", 3: "last", 4: "rank"}  # llama_pooling_type; 0 (none): per-token, as generation
# phi3 GGUFs may carry a sliding window, but llama.cpp 0.3.36 disables it (src/models/phi3.cpp).
NO_SWA = {"phi3"}


@dataclass(frozen=True)
class Fact:
    value: object
    source: str  # the metadata key, or how the value was derived


@dataclass
class ModelInfo:
    arch: str
    name: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: list[int]
    n_head_kv: list[int]
    head_k: int
    head_v: int
    swa: list[bool]
    n_swa: int
    is_mla: bool
    recurrent: bool
    n_embd_r: int  # recurrent conv state per layer (f32 elements)
    n_embd_s: int  # recurrent ssm state per layer
    n_ff: list[int]
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    known_arch: bool
    can_shift_arch: bool
    no_cache: bool = False  # an encoder without KV cache (embeddings, reranking): ArchRule.no_cache
    gated_ffn: bool = False
    pooling: str = ""  # the model's pooling for embeddings (mean, cls, last, rank), "" when it has none
    facts: dict[str, Fact] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_swa(self) -> bool:
        return any(self.swa)


class _Meta:
    """Typed access to `<arch>.*` keys that records where each value came from."""

    def __init__(self, header: GGUFHeader, arch: str) -> None:
        self.md, self.arch = header.metadata, arch
        self.facts: dict[str, Any] = {}
        self.where = str(header.path)

    def get(self, key: str, default=None, *, name: str | None = None, required: bool = False):
        full = f"{self.arch}.{key}"
        if full in self.md:
            value, source = self.md[full], full
        elif required:
            raise SentiricError(f"{self.where}: metadata key {full!r} is missing", "is the GGUF complete?")
        else:
            value, source = default, f"default ({full} absent)"
        self.facts[name or key] = Fact(value, source)
        return value

    def per_layer(self, key: str, n_layer: int, default, *, name: str) -> list[int]:
        v = self.get(key, default, name=name)
        if isinstance(v, SkippedArray):
            raise SentiricError(f"{self.where}: {self.arch}.{key} has {v.length} entries", "corrupt header?")
        if isinstance(v, list):
            if len(v) < n_layer:
                raise SentiricError(f"{self.where}: {self.arch}.{key} has {len(v)} entries for {n_layer} layers")
            return [_uint(x, key, self.where) for x in v[:n_layer]]
        return [_uint(v, key, self.where)] * n_layer


def _check_heads(m, recurrent: bool, n_embd: int, n_head: list[int], n_head_kv: list[int]) -> None:
    """Head counts a real model can have: a plan from impossible ones would be "very safe" nonsense."""
    if not recurrent and not any(n_head):
        raise SentiricError(f"{m.where}: {m.arch}.attention.head_count is 0: no attention heads", "corrupt header?")
    for i, (h, kv) in enumerate(zip(n_head, n_head_kv, strict=True)):
        if h > max(n_embd, 1) or (h and not 0 < kv <= h) or (not h and kv):
            raise SentiricError(f"{m.where}: layer {i} has {h} attention heads and {kv} KV heads "
                                f"(embedding length {n_embd})", "corrupt header?")


def _uint(v, key: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 2**40:
        raise SentiricError(f"{where}: {key} = {v!r} is not a valid count", "corrupt header?")
    return v


def _vocab_size(header: GGUFHeader, arch: str) -> tuple[int, str]:
    md = header.metadata
    if f"{arch}.vocab_size" in md:
        return _uint(md[f"{arch}.vocab_size"], "vocab_size", str(header.path)), f"{arch}.vocab_size"
    tokens = md.get("tokenizer.ggml.tokens")
    if tokens is not None:
        n = tokens.length if isinstance(tokens, SkippedArray) else len(tokens)
        return n, "length of tokenizer.ggml.tokens"
    for t in header.tensors:
        if t.name == "token_embd.weight" and len(t.shape) >= 2:
            return t.shape[1], "token_embd.weight shape[1]"
    return 0, "unknown (no vocabulary in the header)"


def _swa_layers(m: _Meta, rule: ArchRule, n_layer: int) -> tuple[list[bool], int]:
    none = [False] * n_layer
    if m.arch in NO_SWA or not rule.swa_period:
        return none, 0
    window = m.get("attention.sliding_window", rule.swa_default, name="n_swa")
    if not isinstance(window, int) or window <= 0:
        return none, 0
    if rule.swa_needs_key and f"{m.arch}.attention.sliding_window" not in m.md:
        return none, 0
    pattern = m.get("attention.sliding_window_pattern", rule.swa_period, name="swa_pattern")
    if isinstance(pattern, list):  # newer GGUFs: one bool per layer
        if len(pattern) < n_layer:
            raise SentiricError(f"{m.where}: sliding_window_pattern has {len(pattern)} entries for {n_layer} layers")
        return [bool(x) for x in pattern[:n_layer]], window
    period = _uint(pattern, "attention.sliding_window_pattern", m.where)
    if rule.dense_first:
        return [period == 0 or il % period != 0 for il in range(n_layer)], window
    return [period == 0 or il % period < period - 1 for il in range(n_layer)], window


def _recurrent_state(m: _Meta, n_embd: int) -> tuple[int, int]:
    """Per-layer f32 state sizes, as llama_hparams::n_embd_r / n_embd_s."""
    if m.arch.startswith("rwkv"):
        shift = _uint(m.get("token_shift_count", 2), "token_shift_count", m.where)
        head = _uint(m.get("wkv.head_size", 64), "wkv.head_size", m.where)
        return shift * n_embd, n_embd * head
    d_conv = _uint(m.get("ssm.conv_kernel", 0), "ssm.conv_kernel", m.where)
    d_inner = _uint(m.get("ssm.inner_size", 0), "ssm.inner_size", m.where)
    d_state = _uint(m.get("ssm.state_size", 0), "ssm.state_size", m.where)
    groups = _uint(m.get("ssm.group_count", 0), "ssm.group_count", m.where)
    return max(d_conv - 1, 0) * (d_inner + 2 * groups * d_state), d_state * d_inner


_BLOCK = re.compile(r"^blk\.(\d+)\.")


def model_info(header: GGUFHeader) -> ModelInfo:
    md = header.metadata
    arch = md.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise SentiricError(f"{header.path}: general.architecture is missing", "is this a llama.cpp model?")
    rule = ARCH_RULES.get(arch)
    warnings: list[str] = []
    if rule is None:
        rule = DENSE
        warnings.append(
            f"architecture {arch!r} is not one sentiric knows: planned as dense attention "
            "(no sliding window, no recurrent state); `sentiric plan --measure` asks llama.cpp for its own figures"
        )
    m = _Meta(header, arch)
    n_layer = _uint(m.get("block_count", required=True), "block_count", m.where)
    if not 0 < n_layer <= 4096:
        raise SentiricError(f"{m.where}: block_count {n_layer} is out of range", "corrupt header?")
    n_embd = _uint(m.get("embedding_length", required=True), "embedding_length", m.where)
    n_head = m.per_layer("attention.head_count", n_layer, 0, name="n_head")
    n_head_kv = m.per_layer("attention.head_count_kv", n_layer, n_head[0], name="n_head_kv")
    if f"{arch}.attention.head_count_kv" not in md:
        m.facts["n_head_kv"] = Fact(n_head_kv[0], f"{arch}.attention.head_count (no head_count_kv)")
    _check_heads(m, rule.recurrent, n_embd, n_head, n_head_kv)
    derived = n_embd // n_head[0] if n_head[0] else 0
    head_k = _uint(m.get("attention.key_length", derived, name="head_k"), "key_length", m.where)
    head_v = _uint(m.get("attention.value_length", derived, name="head_v"), "value_length", m.where)
    if f"{arch}.attention.key_length" not in md:
        m.facts["head_k"] = Fact(head_k, f"embedding_length / head_count = {n_embd}/{n_head[0]}")
    if f"{arch}.attention.value_length" not in md:
        m.facts["head_v"] = Fact(head_v, f"embedding_length / head_count = {n_embd}/{n_head[0]}")
    is_mla = f"{arch}.attention.key_length_mla" in md and f"{arch}.attention.value_length_mla" in md
    swa, n_swa = _swa_layers(m, rule, n_layer)
    n_embd_r, n_embd_s = _recurrent_state(m, n_embd) if rule.recurrent else (0, 0)
    n_ff = m.per_layer("feed_forward_length", n_layer, 0, name="n_ff")
    n_vocab, vocab_src = _vocab_size(header, arch)
    m.facts["n_vocab"] = Fact(n_vocab, vocab_src)
    n_ctx_train = _uint(m.get("context_length", 0, name="n_ctx_train"), "context_length", m.where)
    n_expert = _uint(m.get("expert_count", 0, name="n_expert"), "expert_count", m.where)
    n_expert_used = _uint(m.get("expert_used_count", 0, name="n_expert_used"), "expert_used_count", m.where)
    fallback = max(n_ff, default=0) // max(n_expert_used or 1, 1)
    n_ff_exp = _uint(m.get("expert_feed_forward_length", fallback, name="n_ff_exp"), "expert_ff", m.where)
    m.facts["n_layer"] = m.facts.pop("block_count")
    m.facts["n_embd"] = m.facts.pop("embedding_length")
    can_shift = not (rule.mrope or rule.recurrent or rule.no_cache)
    pooling = POOLING.get(m.get("pooling_type", -1, name="pooling"), "") if f"{arch}.pooling_type" in md else ""
    name = md["general.name"] if isinstance(md.get("general.name"), str) else header.path.stem
    return ModelInfo(
        arch=arch, name=name, n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab, n_ctx_train=n_ctx_train or 0,
        n_head=n_head, n_head_kv=n_head_kv, head_k=head_k, head_v=head_v, swa=swa, n_swa=n_swa,
        is_mla=is_mla, recurrent=rule.recurrent, n_embd_r=n_embd_r, n_embd_s=n_embd_s, n_ff=n_ff,
        n_expert=n_expert or 0, n_expert_used=n_expert_used or 0, n_ff_exp=n_ff_exp, known_arch=arch in ARCH_RULES,
        can_shift_arch=can_shift, no_cache=rule.no_cache, gated_ffn=rule.gated_ffn, pooling=pooling,
        facts=m.facts, warnings=warnings + header.warnings,
    )


def layer_of(tensor_name: str) -> int | None:
    """Block index of a `blk.N.*` tensor, else None (token_embd, output, output_norm ...)."""
    hit = _BLOCK.match(tensor_name)
    return int(hit.group(1)) if hit else None
