"""Where each number of a plan comes from, and the notes under it: words for the CLI and --json."""

from __future__ import annotations

from sentiric_cli.gguf.modelinfo import ModelInfo
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.memory import MiB, Shape, context_sizes, kv_cache
from sentiric_cli.plan.speed import Speed
from sentiric_cli.plan.usage import NO_FIT, Breakdown, Extra


def _mib(n: int) -> str:
    return f"{n / MiB:,.2f} MiB"


def explain(header, info: ModelInfo, gpus: list[Device], devices: tuple[Device, ...], shape: Shape,
            bd: Breakdown, extras: tuple[Extra, ...] = (), host_ram: Device | None = None) -> list[tuple[str, str, str]]:
    f = info.facts
    n_ctx, n_ctx_seq, n_stream = context_sizes(shape)
    rows = [
        ("layers", str(info.n_layer), f["n_layer"].source),
        ("KV heads per layer", _compact(info.n_head_kv), f["n_head_kv"].source),
        ("key / value length", f"{info.head_k} / {info.head_v}", f"{f['head_k'].source}; {f['head_v'].source}"),
        ("vocabulary", f"{info.n_vocab:,}", f["n_vocab"].source),
        ("context per thread", f"{n_ctx_seq:,} cells",
         f"context {shape.context} x threads {shape.threads} padded to 256 = n_ctx {n_ctx}; "
         + ("one stream shared by all threads (kv_unified)" if shape.kv_unified else
            f"{n_stream} stream(s) of n_ctx/threads padded to 256")),
    ]
    if header.shards:
        rows.append(("model files", f"{len(header.shards)} shards",
                     f"split GGUF: the tensors of {header.shards[0].name} .. {header.shards[-1].name}"))
    if info.has_swa:
        rows.append(("sliding window", f"{info.n_swa} tokens, {sum(info.swa)} of {info.n_layer} layers",
                     f"{f['n_swa'].source}; pattern {f['swa_pattern'].source}"))
    if info.no_cache:
        rows.append(("KV cache", "none", f"{info.arch} is a non-causal encoder: llama.cpp makes no memory for it, each "
                     f"input attends to itself in one ubatch of up to {shape.ubatch} tokens (the compute buffer grows "
                     "with its square)"))
    if info.pooling:
        rows.append(("pooling", info.pooling, f"{f['pooling'].source}: an embedding"
                     + (" or reranker" if info.pooling == "rank" else "") + " model, served with --embeddings"
                     + ("" if info.no_cache else "; causal, so planned with its KV cache as llama.cpp loads it")))
    kv = kv_cache(info, shape, list(bd.layer_devices))
    for g in kv.groups:
        if g.kind == "recurrent":
            rows.append(("recurrent state", _mib(g.bytes),
                         f"{g.n_layers} layers x (conv {info.n_embd_r} + ssm {info.n_embd_s}) f32 x {g.cells} seq"))
            continue
        rows.append((f"KV {g.kind} layers", _mib(g.bytes),
                     f"{g.n_layers} layers x {g.cells:,} cells x {g.streams} stream(s) x "
                     f"(K {shape.cache_type_k} + V {shape.cache_type_v}) rows of head length x KV heads"
                     + ("; MLA: K only" if info.is_mla else "")
                     + ("" if shape.flash_attn else "; V padded to the widest layer (no flash attention)")))
    if gpus:
        rows.append(("weights on GPU", _mib(bd.weights_device_bytes),
                     "sum of tensor sizes from the GGUF tensor infos (n_elements x type size / block size) for layers "
                     f"{max(info.n_layer + 1 - shape.gpu_layers, 0)}..{info.n_layer} (output layer = {info.n_layer})"))
        rows.append(("weights on host", _mib(bd.weights_host_bytes),
                     "token_embd always stays on the host, with the layers not offloaded"
                     + (" and the tensors a CPU override matches" if shape.overrides else "")))
    else:
        rows.append(("weights", _mib(bd.weights_device_bytes),
                     "all tensors, from the GGUF tensor infos (planning for host RAM)"))
    t = min(n_ctx, shape.ubatch)
    if len(gpus) > 1:
        rows.append(("layer split", " / ".join(f"{u.index or i}: {u.layers}" for i, u in enumerate(bd.devices)),
                     "tensor_split " + ", ".join(f"{x:g}" for x in bd.tensor_split) + " (free memory when not set): "
                     "llama.cpp cuts the offloaded layers at the cumulative fractions"))
    for u in bd.devices:
        where = f" on {u.index or u.name}" if len(bd.devices) > 1 else ""
        rows.append((f"compute buffer{where}", _mib(u.compute_bytes),
                     f"{bd.backend.upper()} build: peak of the worst-case graph at {t} tokens; {u.compute_why}"
                     + (" (modelled from ggml's scheduler, not yet checked on a log; `--measure` on a CUDA build "
                        "gives llama.cpp's own figure)" if bd.compute_modelled and bd.backend == "cuda" else "")))
    if gpus:
        rows.append(("host compute buffer", _mib(bd.host_compute_bytes),
                     "CUDA_Host: the graph inputs llama.cpp creates on the CPU (token ids, positions, the embeddings "
                     "read from the host-side token_embd, the KQ masks), in pinned host memory"))
    for e in extras:
        rows.append((f"{e.kind} model", e.header.path.name, e.describe()))
    for d in gpus or devices[:1]:
        rows.append((f"free on {d.index or d.name}" if len(gpus) > 1 else "free on device", _mib(d.free_bytes),
                     f"{d.kind}: {d.name}"))
    if bd.host is not None:
        h = bd.host
        held = ("mapped from the file: page cache the kernel can drop, so a shortfall pages from disk rather than "
                "failing" if shape.mmap else "read into allocated RAM (--no-mmap): a shortfall fails the load")
        rows.append(("host RAM", f"{_mib(h.total_bytes)} of {_mib(h.free_bytes)}",
                     f"weights {_mib(h.weights_bytes)} ({held}); repacked weights (CPU_REPACK) are copies in RAM; "
                     + (f"KV {_mib(h.kv_bytes)}, CUDA_Host buffers and logits {_mib(h.compute_bytes)}"
                        + (f", draft/projector {_mib(h.extra_bytes)}" if h.extra_bytes else "") + "; " if gpus else "")
                     + ("against --ram" if (host_ram or devices[0]).kind == "ram"
                        else "against MemAvailable (/proc/meminfo)")))
    rows.append(("runtime margin", _mib(bd.margin_bytes),
                 "CUDA context and pools, 1 GiB per GPU as llama.cpp's --fit keeps" if gpus else "none on host RAM"))
    return rows


def _compact(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))


def notes(info: ModelInfo, devices: tuple[Device, ...], shape: Shape, bd: Breakdown, fits: bool) -> list[str]:
    out = [d.note for d in devices if d.note][:1]
    gpu = any(d.is_gpu for d in devices)
    host = bd.host if gpu else None
    if host is not None and host.verdict == NO_FIT and all(u.verdict != NO_FIT for u in bd.devices):
        out.append(f"fits the GPU{'s' if len(bd.devices) > 1 else ''} but not host RAM: {host.total_bytes / MiB:,.0f} "
                   f"MiB needed of {host.free_bytes / MiB:,.0f} MiB available (weights left on the CPU "
                   f"{host.weights_bytes / MiB:,.0f} MiB); offload more layers or keep fewer tensors on the CPU")
    elif not fits:
        out.append("nothing fits, even the smallest option shown; try fewer GPU layers, "
                   "a smaller context, or a smaller quantization of the model")
    if info.has_swa and not shape.swa_full:
        out.append("swa_full is off: the sliding-window layers keep a window-sized cache, so the context "
                   "cannot shift; `sentiric run` recomputes the window instead (slower, same semantics)")
    if info.no_cache:
        out.append(f"{info.arch}: an embedding/reranker encoder; no KV cache and no decoding (llama-server "
                   "--embeddings, or --reranking for a rank pooling); ubatch = context (a multiple of threads), so "
                   "an input of the whole context fits one ubatch, which non-causal attention needs")
        if shape.ubatch % shape.threads:
            out.append(f"ubatch {shape.ubatch} is not a multiple of threads {shape.threads}: llama.cpp 0.3.36 aborts "
                       "(GGML_ASSERT) making an encoder's context so; pick another --ubatch or --threads")
    elif not info.can_shift_arch:
        out.append(f"{info.arch}: llama.cpp cannot shift this model's memory; `sentiric run` recomputes instead")
    if gpu and shape.gpu_layers < info.n_layer + 1:
        out.append(f"{shape.gpu_layers} of {info.n_layer + 1} layers offloaded (the output layer counts as one "
                   "and goes first); the rest run on the CPU"
                   + ("; with op offload their big matrix products, and the attention between them, run on the "
                      "first GPU, which holds a copy of one weight at a time" if shape.op_offload else ""))
    if gpu and shape.overrides:
        out.append("tensor overrides (" + ", ".join(shape.overrides) + "): matching tensors live where they say; "
                   "llama.cpp then runs without pipeline parallelism"
                   + ("; ops on host-side weights run on the first GPU (op offload), one weight copy at a time"
                      if shape.op_offload else ""))
    if len(bd.devices) > 1 and any(u.n_layers == 0 for u in bd.devices):
        out.append("a GPU holds no layers: it still gets a CUDA context (the margin)")
    if info.n_ctx_train and shape.context > info.n_ctx_train:
        out.append(f"context {shape.context} is past the model's trained {info.n_ctx_train}")
    return out


def speed_rows(sp: Speed, threads: int, peak_how: str) -> list[tuple[str, str, str]]:
    reads = ", ".join(f"{'host' if d < 0 else f'GPU {d}'} {n / MiB:,.0f} MiB" for d, n in sorted(sp.step_bytes.items()))
    rows = [("decode speed", "unknown" if sp.decode_tps is None else f"{sp.decode_tps:,.1f} tokens/s per request"
             + (f", {sp.decode_tps_all:,.1f} in all" if threads > 1 and sp.decode_tps_all else ""),
             f"a step reads {reads} (weights once, MoE experts by their used share, each busy sequence's KV at a "
             "full context) at " + "; ".join(sp.sources) + " (a bandwidth bound: llama.cpp reaches a share of it, "
             "docs/benchmarks.md)" + ("" if sp.decode_tps is not None else "; give --bandwidth for the missing ones"))]
    rows.append(("prompt speed bound", "unknown" if sp.prompt_tps_bound is None
                 else f"at most {sp.prompt_tps_bound:,.0f} tokens/s",
                 f"{sp.prompt_flops / 1e9:,.2f} GFLOPs a prompt token (2 per weight used, attention over half the "
                 "context) against " + (peak_how or "a peak FLOP/s NVML does not report (tensor cores)")))
    return rows
