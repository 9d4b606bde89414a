"""Compute buffers per backend: the CPU build (memory.compute_buffer) and a CUDA build.

With a GPU backend llama.cpp's scheduler (ggml/src/ggml-backend.cpp) splits the graph by where each
op's weights live and gives every backend its own compute buffer:
- each GPU holds the live set of the layers it runs (output stage only on the GPU with the output
  layer). CUDA's stages differ a little from the CPU build's, fitted to published logs
  (tests/cuda_logs.py): output 4*T*(n_vocab + n_embd), attention without flash attention
  masks + 4*T*(n_kv*n_head + 4*n_embd); the feed-forward stage is the CPU formula's;
- the host gets a pinned `CUDA_Host` compute buffer: the graph inputs, which llama.cpp creates on
  the CPU (token ids, positions, the embeddings that get_rows reads from the host-side token_embd,
  the KQ masks), plus the working set of whatever still runs on the CPU;
- op offload (on by default, `--no-op-offload`): a weight-bound op of a CPU layer with a batch of
  at least 32 rows runs on the first GPU, whose compute buffer then holds a copy of that split's
  weights. With gpu_layers 0 a CUDA build therefore still has a GPU compute buffer, as big as the
  output layer's weights plus the logits;
- pipeline parallelism (several GPUs, every layer offloaded, KV offloaded): every input of every
  split is kept in GGML_SCHED_MAX_COPIES = 4 copies that the allocator may not reuse.
Full offload on one GPU is checked against published CUDA logs (tests/cuda_logs); partial offload,
op offload and pipeline copies follow the scheduler's code and are marked as modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .gguf_header import GGUFHeader
from .layout import CPU
from .memory import KV, Shape, Stages, layer_weights, stages
from .modelinfo import ARCH_RULES, ModelInfo, layer_of

N_COPIES = 4  # GGML_SCHED_MAX_COPIES
OFFLOAD_MIN_BATCH = 32  # ggml-cuda: ops with fewer rows stay where their weights are
_ATTN_IN = ("attn_q.", "attn_k.", "attn_v.", "attn_qkv.", "attn_norm.", "attn_q_a", "attn_q_b", "attn_kv_a",
            "attn_kv_b", "attn_k_b", "attn_v_b", "attn_q_norm", "attn_k_norm")


@dataclass(frozen=True)
class DeviceCompute:
    device: int  # GPU index, or CPU (-1) for the host compute buffer
    bytes: int
    why: str  # what sets it, in words


@dataclass(frozen=True)
class BackendCompute:
    backend: str  # "cpu" or "cuda"
    buffers: dict[int, DeviceCompute]  # device (CPU = -1) -> its compute buffer
    pipeline: bool  # pipeline parallelism: 4 copies of every split input
    op_offload_bytes: int  # weights of CPU layers copied to the first GPU for one split (0: none)
    modelled: bool  # partial offload / op offload / pipeline: from the scheduler's code, not yet checked on a log


def _split_weights(header: GGUFHeader, info: ModelInfo) -> list[int]:
    """Per repeating layer: the bigger of its two op-offload splits (the Q/K/V projections before the
    attention, which stays on the CPU, and the output projection + feed-forward after it)."""
    before = [0] * info.n_layer
    after = [0] * info.n_layer
    for t in header.tensors:
        il = layer_of(t.name)
        if il is None or il >= info.n_layer:
            continue
        rest = t.name.split(".", 2)[2]
        (before if rest.startswith(_ATTN_IN) else after)[il] += t.n_bytes
    return [max(a, b) for a, b in zip(before, after, strict=True)]


def cuda_stages(info: ModelInfo, shape: Shape, kv: KV) -> Stages:
    """The CPU build's stages with CUDA's output and attention terms (see the module docstring)."""
    st = stages(info, shape, kv)
    t = st.tokens
    hidden = 2 if info.recurrent else 6 if info.is_mla else 1  # MLA and mamba: kept as the CPU fit has them
    out = 4 * t * (info.n_vocab + hidden * info.n_embd)
    attn = st.attention
    if attn:
        widest = max((g.cells for g in kv.groups), default=0)
        attn = st.masks + 4 * t * (widest * max(info.n_head) + 4 * info.n_embd)
    return replace(st, output=out, attention=attn)


def cuda_compute(header: GGUFHeader, info: ModelInfo, shape: Shape, kv: KV, where: list[int],
                 n_gpus: int, op_offload: bool = True) -> BackendCompute:
    st: Stages = cuda_stages(info, shape, kv)
    t = st.tokens
    n_layer = info.n_layer
    gpus = sorted({d for d in where if d != CPU})
    cpu_layers = [il for il in range(n_layer) if where[il] == CPU]
    output_cpu = where[n_layer] == CPU
    pipeline = n_gpus > 1 and not cpu_layers and not output_cpu and shape.kv_offload and len(gpus) > 1
    copies = N_COPIES if pipeline else 1
    rule = ARCH_RULES.get(info.arch)
    pos = 4 if rule and rule.mrope else 1  # M-RoPE keeps 4 positions per token
    inputs = 4 * t * info.n_embd + 4 * t * (pos + 2) + st.masks  # embeddings, ids/positions/out_ids, masks
    layer_stage = max(st.ffn, st.attention) if not info.recurrent else st.output
    buffers: dict[int, DeviceCompute] = {}
    for d in gpus:
        repeating = any(where[il] == d for il in range(n_layer))
        parts = []
        if repeating:
            parts.append((layer_stage, "attention" if st.attention > st.ffn else "feed-forward"))
        if where[n_layer] == d:
            parts.append((st.output, "output"))
        size, why = max(parts)
        why += " stage"
        if pipeline and repeating:
            size += (copies - 1) * (st.masks + 4 * t * info.n_embd)
            why += f" + {copies - 1} more copies of the split inputs (pipeline parallelism)"
        buffers[d] = DeviceCompute(d, size, why)
    offloaded = 0
    if op_offload and t >= OFFLOAD_MIN_BATCH and n_gpus and (cpu_layers or output_cpu):
        split = _split_weights(header, info)
        peak_w = max((split[il] for il in cpu_layers), default=0)
        need, why = (peak_w + st.ffn, "CPU layers' weights copied in for op offload") if cpu_layers else (0, "")
        if output_cpu:
            lw = layer_weights(header, info)
            out_w = lw.layers[n_layer] + lw.tied_bytes
            if out_w + st.output > need:
                need, why, peak_w = out_w + st.output, "the output layer's weights copied in for op offload", out_w
        offloaded = peak_w
        first = DeviceCompute(0, 0, "")
        prev = buffers.get(0, first)
        buffers[0] = DeviceCompute(0, need, why) if need > prev.bytes else prev
    host_work = 0
    if cpu_layers:  # the CPU still runs those layers' attention (and their feed-forward without op offload)
        host_work = st.attention if op_offload else layer_stage
        if op_offload and not st.attention:
            host_work = 4 * t * (info.n_embd + 2 * max(info.head_k * h for h in info.n_head_kv))
    if output_cpu and not op_offload:
        host_work = max(host_work, st.output)
    host = inputs * copies + host_work
    buffers[CPU] = DeviceCompute(CPU, host, "graph inputs (embeddings, ids, positions, masks)"
                                 + (f" x {copies} copies" if copies > 1 else "")
                                 + (" + the CPU layers' working set" if host_work else ""))
    modelled = bool(cpu_layers or output_cpu or pipeline)
    return BackendCompute("cuda", buffers, pipeline, offloaded, modelled)
