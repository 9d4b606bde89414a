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
- op offload (on by default, `--no-op-offload`): an op whose weight is in host memory (a CPU layer's,
  or one a tensor override keeps there) runs on the first GPU when its batch has at least 32 rows.
  The scheduler starts a new split at every such weight, so the GPU's compute buffer holds a copy of
  one weight at a time (the biggest decides) next to that stage's working set. The ops between them
  follow onto the GPU too: a CPU layer's attention runs there on a copy of its K and V views, and the
  host keeps only the graph inputs and the K/V rows written into the CPU-side cache. With gpu_layers
  0 a CUDA build therefore still has a GPU compute buffer, as big as the output layer's weights plus
  the logits;
- pipeline parallelism (several GPUs, every layer offloaded, KV offloaded, no tensor overrides): every
  input of every split is kept in GGML_SCHED_MAX_COPIES = 4 copies that the allocator may not reuse.
Full offload on one and on two GPUs, gpu_layers 0 and 20 of 32 layers are checked against published
CUDA logs (tests/cuda_logs.py); pipeline copies and CPU layers without op offload follow the
scheduler's code and are marked as modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sentiric_cli.gguf.header import GGUFHeader
from sentiric_cli.gguf.modelinfo import ARCH_RULES, ModelInfo
from sentiric_cli.plan.layout import CPU
from sentiric_cli.plan.memory import KV, Shape, Stages, layer_weights, stages, tensor_layer

N_COPIES = 4  # GGML_SCHED_MAX_COPIES
OFFLOAD_MIN_BATCH = 32  # ggml-cuda: ops with fewer rows stay where their weights are


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


def _host_weight_peak(header: GGUFHeader, info: ModelInfo, where: list[int], moved: dict[str, int]) -> int:
    """The biggest weight an offloaded op copies to the GPU: a tensor of a CPU layer, or one a tensor
    override keeps in host memory. Each such op is a split of its own (ggml_backend_sched_split_graph:
    "by starting a new split, the memory of the previously offloaded weights can be reused")."""
    peak = 0
    for t in header.tensors:
        il = tensor_layer(t.name, info.n_layer)
        if il is not None and il < info.n_layer and moved.get(t.name, where[il]) == CPU:
            peak = max(peak, t.n_bytes)
    return peak


def cuda_stages(info: ModelInfo, shape: Shape, kv: KV) -> Stages:
    """The CPU build's stages with CUDA's output and attention terms (see the module docstring)."""
    st = stages(info, shape, kv)
    if info.no_cache:  # an encoder: the CPU build's stages, not yet checked on a CUDA log (modelled)
        return st
    t = st.tokens
    hidden = 2 if info.recurrent else 6 if info.is_mla else 1  # MLA and mamba: kept as the CPU fit has them
    hidden += 2 if info.pooling else 0  # a pooled causal model's rows beside the logits, as on the CPU
    out = 4 * t * (info.n_vocab + hidden * info.n_embd)
    attn = st.attention
    if attn:
        widest = max((g.cells for g in kv.groups), default=0)
        attn = st.masks + 4 * t * (widest * max(info.n_head) + 4 * info.n_embd)
    return replace(st, output=out, attention=attn)


def cuda_compute(header: GGUFHeader, info: ModelInfo, shape: Shape, kv: KV, where: list[int],
                 n_gpus: int, op_offload: bool = True, moved: dict[str, int] | None = None) -> BackendCompute:
    """`moved`: tensors a tensor override placed off their layer's device (name -> device, CPU = -1)."""
    moved = moved or {}
    st: Stages = cuda_stages(info, shape, kv)
    t = st.tokens
    n_layer = info.n_layer
    gpus = sorted({d for d in where if d != CPU})
    cpu_layers = [il for il in range(n_layer) if where[il] == CPU]
    output_cpu = where[n_layer] == CPU
    pipeline = (n_gpus > 1 and not cpu_layers and not output_cpu and shape.kv_offload and len(gpus) > 1
                and not shape.overrides)  # llama_context: no pipeline parallelism with tensor overrides
    copies = N_COPIES if pipeline else 1
    rule = ARCH_RULES.get(info.arch)
    pos = 4 if rule and rule.mrope else 1  # M-RoPE keeps 4 positions per token
    # token ids, positions, output ids; and the int64 rows where the new K and V go in the cache
    ids = 4 * t * (pos + 2) + (0 if info.recurrent else 16 * t)
    embd = 4 * t * info.n_embd  # get_rows reads the host-side token_embd: the embeddings start on the CPU
    # the mask inputs are f32; flash attention casts them to f16 where the attention runs
    inputs = embd + ids + st.masks * (2 if shape.flash_attn else 1)
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
            size += (copies - 1) * (st.masks + embd)
            why += f" + {copies - 1} more copies of the split inputs (pipeline parallelism)"
        buffers[d] = DeviceCompute(d, size, why)
    offloading = op_offload and t >= OFFLOAD_MIN_BATCH and n_gpus > 0
    offloaded = 0
    if offloading and (cpu_layers or output_cpu or any(v == CPU for v in moved.values())):
        peak_w = _host_weight_peak(header, info, where, moved)
        need, why = (peak_w + st.ffn, "a host-side weight copied in for op offload") if peak_w else (0, "")
        if cpu_layers and st.attention:  # their attention follows onto the GPU, on copies of the K/V views
            views = max(kv.layers[il] for il in cpu_layers)
            if st.attention + views > need:
                need, why = st.attention + views, "the CPU layers' attention, run here on copies of their K/V"
        if output_cpu:
            lw = layer_weights(header, info)
            out_w = lw.layers[n_layer] + lw.tied_bytes
            if out_w + st.output > need:
                need, why, peak_w = out_w + st.output, "the output layer's weights copied in for op offload", out_w
        offloaded = peak_w
        prev = buffers.get(0, DeviceCompute(0, 0, ""))
        buffers[0] = DeviceCompute(0, need, why) if need > prev.bytes else prev
    host_work = 0
    if cpu_layers and not offloading:  # the CPU runs those layers
        host_work = layer_stage
    elif cpu_layers and not info.recurrent:
        # only get_rows and the writes into the CPU-side cache stay: the new K and V rows (f32) come
        # back from the GPU while the embeddings are already gone
        rows = max(info.head_k * h for h in info.n_head_kv) + max(info.head_v * h for h in info.n_head_kv)
        host_work = max(0, 4 * t * rows - embd)
    elif cpu_layers:
        host_work = 4 * t * (info.n_embd + 2 * max(info.head_k * h for h in info.n_head_kv))
    if output_cpu and not offloading:
        host_work = max(host_work, st.output)
    host = inputs * copies + host_work
    buffers[CPU] = DeviceCompute(CPU, host, "graph inputs (embeddings, ids, positions, masks)"
                                 + (f" x {copies} copies" if copies > 1 else "")
                                 + (" + the CPU layers' working set" if host_work else ""))
    # checked on logs: full offload (one GPU, or several without pipeline copies), and CPU layers with op
    # offload (gpu_layers 0, and 20 of 32); pipeline copies and CPU layers without op offload are not yet
    modelled = pipeline or (bool(cpu_layers or output_cpu) and not offloading) or info.no_cache
    return BackendCompute("cuda", buffers, pipeline, offloaded, modelled)
