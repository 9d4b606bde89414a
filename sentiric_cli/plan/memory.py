"""llama.cpp's memory accounting as pure functions: weights, KV cache, compute buffer.

Mirrors llama.cpp 0.3.36 (vendored in llama-cpp-python 0.3.36): src/llama-model.cpp (layer
placement), src/llama-kv-cache*.cpp (cache sizes), src/llama-context.cpp (context padding).
No I/O here: tested without a model, checked against the real library in tests/test_accuracy.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sentiric_cli.gguf.header import GGUFHeader
from sentiric_cli.gguf.modelinfo import ModelInfo, layer_of
from sentiric_cli.gguf.quants import named
from sentiric_cli.plan.layout import CPU, layer_devices

MiB = 1024 * 1024
CTX_PAD = 256  # llama_context pads n_ctx (and n_ctx_seq) to 256; the SWA cache is padded to 256 too
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


def pad(n: int, to: int = CTX_PAD) -> int:
    return -(-n // to) * to


def cache_type_fits(cache_type: str, head_len: int) -> bool:
    """llama.cpp refuses a cache type whose block does not divide the head length (q8_0 needs 32 | head)."""
    block, _ = named(cache_type)
    return head_len % block == 0


def row_bytes(cache_type: str, n: int) -> int:
    block, size = named(cache_type)
    return n // block * size


@dataclass(frozen=True)
class Shape:
    """The inputs that change memory: one context holding `threads` sequences of `context` tokens."""

    context: int = 4096  # tokens per thread (per sequence)
    threads: int = 1  # n_seq_max: requests served at once, each with its own KV stream
    gpu_layers: int = 0
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool = True
    swa_full: bool = False
    ubatch: int = 512
    batch: int = 2048
    kv_offload: bool = True
    kv_unified: bool = False  # one cache shared by all sequences (llama-server's default with -np auto)
    op_offload: bool = True  # a GPU build runs CPU layers' big matrix products on the first GPU
    tensor_split: tuple[float, ...] = ()  # share of the offloaded layers per GPU; () = by free memory
    overrides: tuple[str, ...] = ()  # llama.cpp's tensor buffer overrides, PATTERN=BUFFER (layout.override_places)
    mmap: bool = True  # host weights mapped from the file (page cache) rather than read into allocated RAM


@dataclass(frozen=True)
class Weights:
    device_bytes: int
    host_bytes: int
    layers_on_device: int  # llama.cpp counts the output layer as one of n_layer + 1
    output_on_device: bool
    tied_output: bool
    per_layer_bytes: int  # mean bytes of one repeating block
    by_device: dict[int, int] = field(default_factory=dict)  # device index (CPU = -1) -> bytes


@dataclass(frozen=True)
class LayerWeights:
    """Tensor bytes per llama.cpp 'layer': blk.0 .. blk.{n-1}, then the output layer (index n_layer)."""

    layers: tuple[int, ...]  # n_layer + 1 entries; the output entry excludes a tied output's copy
    input_bytes: int  # token_embd and friends: always in host memory
    tied_bytes: int  # a tied output (no output.weight) is a copy of token_embd.weight, made where the output lives


# llama.cpp's LLM_TENSOR_LAYER_INPUT tensors (llama-arch.cpp): read by row, kept in host memory
INPUT_TENSORS = ("token_embd.", "position_embd.", "token_types.")


def tensor_layer(name: str, n_layer: int) -> int | None:
    """The llama.cpp 'layer' a tensor belongs to: its block (0 .. n_layer - 1), n_layer for the output
    layer (output, output_norm and other model-level tensors travel with it), None for the input
    (token_embd and friends, always in host memory)."""
    il = layer_of(name)
    if il is not None and il < n_layer:
        return il
    return None if name.startswith(INPUT_TENSORS) else n_layer


def layer_weights(header: GGUFHeader, info: ModelInfo) -> LayerWeights:
    key = ("layer_weights", info.n_layer)
    if key not in header.memo:
        header.memo[key] = _layer_weights(header, info)
    return header.memo[key]


def _layer_weights(header: GGUFHeader, info: ModelInfo) -> LayerWeights:
    layers = [0] * (info.n_layer + 1)
    embd = inputs = 0
    tied = not any(t.name == "output.weight" for t in header.tensors)
    for t in header.tensors:
        il = tensor_layer(t.name, info.n_layer)
        if il is not None:
            layers[il] += t.n_bytes
        else:
            inputs += t.n_bytes
            embd += t.n_bytes if t.name == "token_embd.weight" else 0
    return LayerWeights(tuple(layers), inputs, embd if tied else 0)


def weights(header: GGUFHeader, info: ModelInfo, gpu_layers: int, where: list[int] | None = None,
            moved: dict[str, int] | None = None) -> Weights:
    """Where each tensor lives for n_gpu_layers, as llama_model::load_tensors assigns it.

    The last gpu_layers of the n_layer + 1 'layers' go to the GPU, and the output layer
    (index n_layer) is the first to go: i_gpu_start = n_layer + 1 - n_gpu_layers.
    token_embd always stays on the host; a tied output (no output.weight) is a second copy of
    token_embd that goes with the output layer. `where` (layout.layer_devices) places each layer
    on one of several devices; without it, every offloaded layer is on device 0. `moved`
    (layout.override_places): tensors a tensor override puts elsewhere, name -> device.
    """
    lw = layer_weights(header, info)
    where = where if where is not None else layer_devices(info.n_layer, gpu_layers, [1.0])
    by: dict[int, int] = {CPU: lw.input_bytes}
    for il, n in enumerate(lw.layers):
        by[where[il]] = by.get(where[il], 0) + n
    output_dev = where[info.n_layer]
    if lw.tied_bytes and output_dev != CPU:
        by[output_dev] += lw.tied_bytes
    moved = moved or {}
    for t in header.tensors if moved else ():
        if t.name in moved:
            layer = tensor_layer(t.name, info.n_layer)
            by[CPU if layer is None else where[layer]] -= t.n_bytes
            by[moved[t.name]] = by.get(moved[t.name], 0) + t.n_bytes
    host = by.get(CPU, 0)
    blocks = lw.layers[:info.n_layer]
    per_layer = sum(blocks) // max(len(blocks), 1)
    return Weights(sum(by.values()) - host, host, sum(d != CPU for d in where), output_dev != CPU,
                   bool(lw.tied_bytes), per_layer, by)


@dataclass(frozen=True)
class KVGroup:
    """Layers that share one cache size: llama.cpp logs one line per group."""

    kind: str  # "full", "sliding" or "recurrent"
    n_layers: int
    cells: int  # per stream
    streams: int
    k_bytes: int
    v_bytes: int

    @property
    def bytes(self) -> int:
        return self.k_bytes + self.v_bytes


@dataclass(frozen=True)
class KV:
    n_ctx: int  # as llama.cpp pads it: n_ctx_seq * n_seq_max
    n_ctx_seq: int
    groups: tuple[KVGroup, ...]
    device_bytes: int
    host_bytes: int
    layers: tuple[int, ...] = ()  # bytes per layer (0 for a layer without a cache)
    by_device: dict[int, int] = field(default_factory=dict)  # device index (CPU = -1) -> bytes

    @property
    def bytes(self) -> int:
        return self.device_bytes + self.host_bytes


def context_sizes(shape: Shape) -> tuple[int, int, int]:
    """(n_ctx, n_ctx_seq, n_stream) exactly as llama_context's constructor pads them."""
    n_ctx = pad(shape.context * shape.threads)
    if shape.kv_unified:
        return n_ctx, n_ctx, 1
    n_ctx_seq = pad(n_ctx // shape.threads)
    return n_ctx_seq * shape.threads, n_ctx_seq, shape.threads


def kv_cache(info: ModelInfo, shape: Shape, where: list[int] | None = None) -> KV:
    """The cache of every layer, on its layer's device (`where`, layout.layer_devices) when kv_offload."""
    n_ctx, n_ctx_seq, n_stream = context_sizes(shape)
    where = where if where is not None else layer_devices(info.n_layer, shape.gpu_layers, [1.0])
    per_layer = [0] * info.n_layer
    groups: list[KVGroup] = []
    if info.no_cache:  # an encoder: every ubatch attends only to itself
        return _placed(n_ctx, n_ctx_seq, groups, per_layer, where, shape.kv_offload)
    if info.recurrent:
        # llama_memory_recurrent: one f32 conv + ssm state row per sequence, whatever the context
        cells = max(1, shape.threads)
        per_layer_r, per_layer_s = info.n_embd_r * 4 * cells, info.n_embd_s * 4 * cells
        per_layer = [per_layer_r + per_layer_s] * info.n_layer
        groups.append(KVGroup("recurrent", info.n_layer, cells, 1, per_layer_r * info.n_layer,
                              per_layer_s * info.n_layer))
        return _placed(n_ctx, n_ctx_seq, groups, per_layer, where, shape.kv_offload)

    swa_cells = n_ctx_seq
    if info.has_swa and not shape.swa_full:
        unified_seqs = shape.threads if shape.kv_unified else 1
        swa_cells = pad(min(n_ctx_seq, info.n_swa * unified_seqs + shape.ubatch))
    # without flash attention V is stored transposed and padded to the widest layer
    v_max = max(info.head_v * h for h in info.n_head_kv)
    acc: dict[str, list[int]] = {}
    for il in range(info.n_layer):
        if info.n_head_kv[il] == 0:
            continue
        kind = "sliding" if info.swa[il] else "full"
        cells = swa_cells if info.swa[il] else n_ctx_seq
        k = row_bytes(shape.cache_type_k, info.head_k * info.n_head_kv[il]) * cells * n_stream
        v_width = info.head_v * info.n_head_kv[il] if shape.flash_attn else v_max
        v = 0 if info.is_mla else row_bytes(shape.cache_type_v, v_width) * cells * n_stream
        per_layer[il] = k + v
        g = acc.setdefault(kind, [0, cells, 0, 0])
        g[0] += 1
        g[2] += k
        g[3] += v
    for kind in ("full", "sliding"):
        if kind in acc:
            n, cells, k, v = acc[kind]
            groups.append(KVGroup(kind, n, cells, n_stream, k, v))
    return _placed(n_ctx, n_ctx_seq, groups, per_layer, where, shape.kv_offload)


def _placed(n_ctx, n_ctx_seq, groups, per_layer: list[int], where: list[int], offload: bool) -> KV:
    by: dict[int, int] = {}
    for il, n in enumerate(per_layer):
        d = where[il] if offload else CPU
        by[d] = by.get(d, 0) + n
    host = by.get(CPU, 0)
    return KV(n_ctx, n_ctx_seq, tuple(groups), sum(by.values()) - host, host, tuple(per_layer), by)


@dataclass(frozen=True)
class Compute:
    bytes: int
    stage: str  # which part of the graph sets the peak: "output", "attention" or "feed-forward"
    n_tokens: int  # worst-case ubatch llama.cpp reserves for: min(n_ctx, n_ubatch)


def compute_buffer(info: ModelInfo, shape: Shape, kv: KV) -> Compute:
    """Peak of llama.cpp's graph allocator for the worst-case ubatch (sched_reserve).

    Fitted to the allocator's measured peaks on llama.cpp 0.3.36 (tests/test_accuracy.py):
    - output:    the f32 logits of every token plus the last hidden states,
                 4*T*(n_vocab + 2*n_embd + 1);
    - attention: without flash attention the f32 score matrix of the widest layer
                 4*T*n_kv*n_head, plus Q/K/V and residual rows 4*T*(5*n_embd + 2*n_embd_gqa + 5);
    - feed-forward: gate, up and their product 4*T*(3*n_ff + 4*n_embd + 7);
    and, alive through every layer, one mask per cache kind: T*n_kv (f16 with flash
    attention, f32 without).
    """
    st = stages(info, shape, kv)
    if info.recurrent:
        return _peak(st.tokens, out=st.output)
    return _peak(st.tokens, out=st.output, attention=st.attention, ffn=st.ffn)


@dataclass(frozen=True)
class Stages:
    """The graph allocator's live set at each stage of the worst-case ubatch (see compute_buffer)."""

    tokens: int
    output: int
    attention: int  # 0 with flash attention
    ffn: int
    masks: int  # part of attention and ffn: one mask per cache kind, alive through every layer


def stages(info: ModelInfo, shape: Shape, kv: KV) -> Stages:
    t = min(kv.n_ctx, shape.ubatch)
    if info.no_cache:
        return _encoder_stages(info, shape, t)
    # rows of n_embd alive next to the logits: mamba keeps one more, MLA's decompression ~5 more
    hidden = 3 if info.recurrent else 7 if info.is_mla else 2
    if info.pooling:  # served with --embeddings, a pooled causal model (Qwen3-Embedding) keeps its hidden rows for
        hidden += 2  # the pooling beside the logits: measured +1 to +3 rows of n_embd, by the allocator's layout
    out = 4 * t * (info.n_vocab + hidden * info.n_embd + 1)
    mask_elem = 2 if shape.flash_attn else 4
    masks = sum(mask_elem * t * g.cells for g in kv.groups if g.kind != "recurrent")
    if info.recurrent:
        return Stages(t, out, 0, 0, 0)
    n_ff = max(info.n_ff, default=0)
    if info.n_expert and info.n_expert_used:  # mul_mat_id rows: one per used expert per token
        n_ff = max(n_ff, info.n_ff_exp * info.n_expert_used)
    ff_rows = 4 if info.arch == "phi3" else 3  # phi3's fused gate+up output is 2*n_ff wide
    ffn = masks + 4 * t * (ff_rows * n_ff + 4 * info.n_embd + 7)
    attn = 0
    if not shape.flash_attn:
        widest = max((g.cells for g in kv.groups), default=0)
        gqa = max(info.head_k * h for h in info.n_head_kv)
        rows = 3 if info.arch == "phi3" else 5  # phi3's fused QKV keeps two fewer rows alive
        attn = masks + 4 * t * (widest * max(info.n_head) + rows * info.n_embd + 2 * gqa + 5)
    return Stages(t, out, attn, ffn, masks)


def _encoder_stages(info: ModelInfo, shape: Shape, t: int) -> Stages:
    """A non-causal encoder without cache (BERT, nomic-bert ...): the ubatch attends to itself, so attention is
    T x T. Fitted to the allocator's peaks on llama.cpp 0.3.36 for bert and nomic-bert (tests/test_accuracy.py):
    - attention without flash attention: the f32 scores of every head 4*T*T*n_head, the f32 mask 4*T*T, and Q/K/V
      rows 4*T*r*n_embd (r = 6, 8 with a fused QKV);
    - with flash attention: the f16 mask 2*T*T and the rows (r = 5.5);
    - feed-forward: the mask and 4*T*(1.5*n_ff + n_embd) (BERT's up + bias), 4*T*(3*n_ff + 3*n_embd) (gated);
    - output: the pooled rows, never the peak (no logits: an encoder has no output head).
    Every stage adds ~16 bytes a token of graph inputs."""
    e, ff, heads = info.n_embd, max(info.n_ff, default=0), max(info.n_head, default=0)
    mask = (2 if shape.flash_attn else 4) * t * t
    if shape.flash_attn:
        attn = mask + int(4 * t * 5.5 * e)
    else:
        attn = 4 * t * t * heads + mask + 4 * t * (8 if info.gated_ffn else 6) * e
    ffn = mask + (4 * t * (3 * ff + 3 * e) if info.gated_ffn else int(4 * t * (1.5 * ff + e)))
    extra = 16 * t
    return Stages(t, 4 * t * 2 * e + extra, attn + extra, ffn + extra, mask)


def _peak(t: int, **stages: int) -> Compute:
    name, value = max(stages.items(), key=lambda kv: kv[1])
    return Compute(value, {"ffn": "feed-forward"}.get(name, "output" if name == "out" else name), t)
