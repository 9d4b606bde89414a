"""Where each number of a plan comes from, and the notes under it: words for the CLI and --json."""

from __future__ import annotations

from sentiric_cli.gguf.modelinfo import ModelInfo
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.memory import MiB, Shape, context_sizes, kv_cache
from sentiric_cli.plan.usage import Breakdown, Extra


def _mib(n: int) -> str:
    return f"{n / MiB:,.2f} MiB"


def explain(header, info: ModelInfo, gpus: list[Device], devices: tuple[Device, ...], shape: Shape,
            bd: Breakdown, extras: tuple[Extra, ...] = ()) -> list[tuple[str, str, str]]:
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
    rows.append(("runtime margin", _mib(bd.margin_bytes),
                 "CUDA context and pools, 1 GiB per GPU as llama.cpp's --fit keeps" if gpus else "none on host RAM"))
    return rows


def _compact(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))


def notes(info: ModelInfo, devices: tuple[Device, ...], shape: Shape, bd: Breakdown, fits: bool) -> list[str]:
    out = [d.note for d in devices if d.note][:1]
    gpu = any(d.is_gpu for d in devices)
    if not fits:
        out.append("nothing fits, even the smallest option shown; try fewer GPU layers, "
                   "a smaller context, or a smaller quantization of the model")
    if info.has_swa and not shape.swa_full:
        out.append("swa_full is off: the sliding-window layers keep a window-sized cache, so the context "
                   "cannot shift; `sentiric run` recomputes the window instead (slower, same semantics)")
    if not info.can_shift_arch:
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
