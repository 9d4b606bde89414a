"""`plan`: what fits on a device. Returns data (a Plan); the CLI renders it.

Verdicts compare what llama.cpp will allocate on the device plus a runtime margin (GPUs only)
with the device's free memory:
    need / free <= 0.75  very safe     <= 0.90  safe     <= 1.00  risky     > 1.00  does not fit
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .device import Device
from .gguf_header import GGUFHeader
from .memory import (
    Compute,
    MiB,
    Shape,
    Weights,
    cache_type_fits,
    compute_buffer,
    context_sizes,
    kv_cache,
    weights,
)
from .modelinfo import ModelInfo
from .settings import Settings

VERDICTS = ((0.75, "very safe"), (0.90, "safe"), (1.00, "risky"))
NO_FIT = "does not fit"
CONTEXTS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
THREADS = (1, 2, 3, 4)
# knob sets tried for the recommendation, most faithful first: f16 cache and a shiftable
# sliding window, then a window-sized SWA cache, then a q8_0 cache (needs flash attention)
KNOBS = (("f16", True), ("f16", False), ("q8_0", False))


def verdict(need: int, free: int) -> str:
    if free <= 0:
        return NO_FIT
    ratio = need / free
    return next((name for limit, name in VERDICTS if ratio <= limit), NO_FIT)


@dataclass(frozen=True)
class Breakdown:
    weights_device_bytes: int
    weights_host_bytes: int
    kv_bytes: int
    kv_device_bytes: int
    kv_bytes_per_thread: int
    compute_bytes: int
    compute_stage: str
    output_host_bytes: int  # llama.cpp's host-side logits buffer
    margin_bytes: int
    total_device_bytes: int  # weights + KV + compute that llama.cpp allocates on the device
    total_host_bytes: int
    need_bytes: int  # total on the device plus the margin: what the verdict compares with free memory
    verdict: str


@dataclass(frozen=True)
class Option:
    context: int
    threads: int
    kv_bytes_per_thread: int
    kv_bytes: int
    total_device_bytes: int
    verdict: str


@dataclass(frozen=True)
class Saving:
    """A chosen knob against its alternative: positive saves_bytes = the choice uses less device memory."""

    choice: str
    alternative: str
    saves_bytes: int
    note: str = ""


@dataclass
class Plan:
    model: ModelInfo
    model_path: str
    device: Device
    shape: Shape
    memory: Breakdown
    options: list[Option]
    recommendation: Settings
    fits: bool
    savings: list[Saving] = field(default_factory=list)
    explain: list[tuple[str, str, str]] = field(default_factory=list)  # (what, value, where from)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        info = self.model
        return {
            "model": {"path": self.model_path, "name": info.name, "architecture": info.arch,
                      "n_layer": info.n_layer, "n_embd": info.n_embd, "n_vocab": info.n_vocab,
                      "n_ctx_train": info.n_ctx_train, "sliding_window": info.n_swa or None,
                      "sliding_layers": sum(info.swa), "known_architecture": info.known_arch},
            "device": asdict(self.device) | {"margin_bytes": self.device.margin_bytes},
            "settings": asdict(self.shape),
            "memory": asdict(self.memory),
            "options": [asdict(o) for o in self.options],
            "recommendation": self.recommendation.model_dump(),
            "fits": self.fits,
            "savings": [asdict(s) for s in self.savings],
            "explain": [{"what": w, "value": v, "source": s} for w, v, s in self.explain],
            "notes": self.notes,
            "warnings": self.warnings,
        }


def breakdown(header: GGUFHeader, info: ModelInfo, device: Device, shape: Shape) -> tuple[Breakdown, Weights, Compute]:
    if not device.is_gpu:
        shape = replace(shape, gpu_layers=0)
    w = weights(header, info, shape.gpu_layers)
    kv = kv_cache(info, shape)
    comp = compute_buffer(info, shape, kv)
    output_host = 4 * info.n_vocab * shape.threads  # llama_context output buffer: one logits row per sequence
    if device.is_gpu:
        # the graph runs where the layers are: with any layer offloaded, the device holds the compute buffer
        comp_dev = comp.bytes if shape.gpu_layers > 0 else 0
        dev = w.device_bytes + kv.device_bytes + comp_dev
        host = w.host_bytes + kv.host_bytes + (comp.bytes - comp_dev) + output_host
    else:  # planning for host RAM: everything lives there
        dev = w.host_bytes + kv.bytes + comp.bytes + output_host
        host = dev
    need = dev + device.margin_bytes
    bd = Breakdown(
        weights_device_bytes=w.device_bytes if device.is_gpu else w.host_bytes,
        weights_host_bytes=w.host_bytes if device.is_gpu else 0,
        kv_bytes=kv.bytes, kv_device_bytes=kv.device_bytes if device.is_gpu else kv.bytes,
        kv_bytes_per_thread=kv.bytes // shape.threads, compute_bytes=comp.bytes, compute_stage=comp.stage,
        output_host_bytes=output_host, margin_bytes=device.margin_bytes, total_device_bytes=dev,
        total_host_bytes=host, need_bytes=need, verdict=verdict(need, device.free_bytes),
    )
    return bd, w, comp


def _shape(settings: Settings, info: ModelInfo) -> Shape:
    layers = info.n_layer + 1 if settings.gpu_layers < 0 else settings.gpu_layers
    return Shape(context=settings.context_size, threads=settings.threads, gpu_layers=layers,
                 cache_type_k=settings.cache_type_k, cache_type_v=settings.cache_type_v,
                 flash_attn=settings.flash_attn, swa_full=settings.swa_full, ubatch=settings.ubatch_size,
                 batch=settings.batch_size, kv_offload=settings.kv_offload)


def _fits(bd: Breakdown) -> bool:
    return bd.verdict != NO_FIT


def _safe(bd: Breakdown) -> bool:
    return bd.verdict in ("very safe", "safe")


def make_plan(header: GGUFHeader, info: ModelInfo, device: Device, settings: Settings,
              pinned: set[str] | frozenset[str] = frozenset()) -> Plan:
    """Recommend settings for `device`. `pinned` names the settings the user fixed (context_size,
    threads, gpu_layers, cache_type_k/v, flash_attn, swa_full, ubatch_size); the rest are chosen."""
    base = _shape(settings, info)
    full = info.n_layer + 1
    if "gpu_layers" not in pinned:
        base = replace(base, gpu_layers=full if device.is_gpu else 0)
    knob_sets = _knob_sets(info, settings, pinned)
    contexts = [settings.context_size] if "context_size" in pinned else _contexts(info)
    threads = [settings.threads] if "threads" in pinned else list(THREADS)

    # 1. the largest context x threads that fits (safe first), over the knob sets, most faithful first
    best: tuple | None = None
    for knobs in knob_sets:
        for ctx in contexts:
            for t in threads:
                shape = replace(base, context=ctx, threads=t, **knobs)
                if {"context_size", "threads"} <= pinned and "gpu_layers" not in pinned and device.is_gpu:
                    shape = _most_layers(header, info, device, shape)
                bd, _, _ = breakdown(header, info, device, shape)
                if not _fits(bd):
                    continue
                score = (_safe(bd), shape.gpu_layers, ctx * t, ctx)  # full offload first
                if best is None or score > best[0]:
                    best = (score, shape, bd)
    if best is None and device.is_gpu and "gpu_layers" not in pinned:
        # full offload fits nothing: the most layers that fit at the asked (or smallest) size
        ctx = settings.context_size if "context_size" in pinned else min(contexts)
        t = settings.threads if "threads" in pinned else 1
        for knobs in knob_sets:
            shape = _most_layers(header, info, device, replace(base, context=ctx, threads=t, **knobs))
            bd, _, _ = breakdown(header, info, device, shape)
            score = (_safe(bd), shape.gpu_layers, ctx * t, ctx)
            if _fits(bd) and shape.gpu_layers > 0 and (best is None or score > best[0]):
                best = (score, shape, bd)
    fits = best is not None
    if best is None:  # nothing fits: show the smallest thing asked for, so the user sees by how much
        shape = replace(base, context=min(contexts), threads=min(threads), **knob_sets[-1])
        bd, _, _ = breakdown(header, info, device, shape)
    else:
        _, shape, bd = best
    chosen_knobs = {"cache_type_k": shape.cache_type_k, "cache_type_v": shape.cache_type_v,
                    "flash_attn": shape.flash_attn, "swa_full": shape.swa_full}
    options = [_option(header, info, device, replace(shape, context=c, threads=t)) for c in contexts for t in threads]
    rec = settings.model_copy(update={
        "context_size": shape.context, "threads": shape.threads,
        "gpu_layers": shape.gpu_layers if device.is_gpu else 0, **chosen_knobs,
        "ubatch_size": shape.ubatch, "batch_size": max(shape.batch, shape.ubatch),
    })
    plan = Plan(info, str(header.path), device, shape, bd, options, rec, fits,
                warnings=list(info.warnings))
    plan.savings = _savings(header, info, device, shape)
    plan.explain = _explain(header, info, device, shape, bd)
    plan.notes = _notes(info, device, shape, bd, fits)
    return plan


def _knob_sets(info: ModelInfo, settings: Settings, pinned) -> list[dict]:
    sets = []
    for cache, swa_full in KNOBS:
        k = {"cache_type_k": cache, "cache_type_v": cache, "flash_attn": True, "swa_full": swa_full}
        if not info.has_swa:
            k["swa_full"] = False
        if "flash_attn" in pinned:
            k["flash_attn"] = settings.flash_attn
        if "swa_full" in pinned:
            k["swa_full"] = settings.swa_full
        if "cache_type_k" in pinned:
            k["cache_type_k"] = settings.cache_type_k
        if "cache_type_v" in pinned:
            k["cache_type_v"] = settings.cache_type_v
        if k["cache_type_v"] not in ("f16", "f32", "bf16") and not k["flash_attn"]:
            continue  # llama.cpp refuses a quantized V cache without flash attention
        if not (cache_type_fits(k["cache_type_k"], info.head_k) and cache_type_fits(k["cache_type_v"], info.head_v)):
            continue
        if k not in sets:
            sets.append(k)
    return sets or [{"cache_type_k": settings.cache_type_k, "cache_type_v": settings.cache_type_v,
                     "flash_attn": settings.flash_attn, "swa_full": settings.swa_full}]


def _contexts(info: ModelInfo) -> list[int]:
    limit = info.n_ctx_train or max(CONTEXTS)
    return [c for c in CONTEXTS if c <= limit] or [limit]


def _most_layers(header, info, device, shape: Shape) -> Shape:
    """With context and threads pinned: the most layers offloaded that still fit (safe first)."""
    fallback = None
    for n in range(info.n_layer + 1, -1, -1):
        s = replace(shape, gpu_layers=n)
        bd, _, _ = breakdown(header, info, device, s)
        if _safe(bd):
            return s
        if fallback is None and _fits(bd):
            fallback = s
    return fallback or replace(shape, gpu_layers=0)


def _option(header, info, device, shape: Shape) -> Option:
    bd, _, _ = breakdown(header, info, device, shape)
    return Option(shape.context, shape.threads, bd.kv_bytes_per_thread, bd.kv_bytes, bd.total_device_bytes, bd.verdict)


def _savings(header, info, device, shape: Shape) -> list[Saving]:
    """What each chosen knob saves (or costs) on the device against its alternative, at the chosen size."""
    now, _, _ = breakdown(header, info, device, shape)

    def vs(other: Shape, choice: str, alternative: str, note: str = "") -> Saving:
        alt, _, _ = breakdown(header, info, device, other)
        return Saving(choice, alternative, alt.total_device_bytes - now.total_device_bytes, note)

    on_off = {True: "on", False: "off"}
    fa_alt = replace(shape, flash_attn=not shape.flash_attn)
    if shape.flash_attn and shape.cache_type_v not in ("f16", "f32", "bf16"):
        fa_alt = replace(fa_alt, cache_type_v="f16")  # llama.cpp needs flash attention for a quantized V
    out = [vs(fa_alt, f"flash_attn {on_off[shape.flash_attn]}", f"flash_attn {on_off[not shape.flash_attn]}",
              "no f32 score matrix in the compute buffer; allows a quantized V cache")]
    if info.has_swa:
        note = ("sliding-window layers keep the whole context: it can shift" if shape.swa_full else
                "disables context shifting: `sentiric run` recomputes the window instead")
        out.append(vs(replace(shape, swa_full=not shape.swa_full), f"swa_full {on_off[shape.swa_full]}",
                      f"swa_full {on_off[not shape.swa_full]}", note))
    if (shape.cache_type_k, shape.cache_type_v) == ("f16", "f16"):
        q8 = replace(shape, cache_type_k="q8_0", cache_type_v="q8_0" if shape.flash_attn else "f16")
        if cache_type_fits("q8_0", info.head_k) and cache_type_fits(q8.cache_type_v, info.head_v):
            out.append(vs(q8, "cache f16", f"cache {q8.cache_type_k}/{q8.cache_type_v}", "exact; shifts without drift"))
    else:
        out.append(vs(replace(shape, cache_type_k="f16", cache_type_v="f16"),
                      f"cache {shape.cache_type_k}/{shape.cache_type_v}", "cache f16",
                      "quantized K is re-quantized at every shift (small drift)"))
    return out


def _mib(n: int) -> str:
    return f"{n / MiB:,.2f} MiB"


def _explain(header, info: ModelInfo, device: Device, shape: Shape, bd: Breakdown) -> list[tuple[str, str, str]]:
    f = info.facts
    n_ctx, n_ctx_seq, n_stream = context_sizes(shape)
    rows = [
        ("layers", str(info.n_layer), f["n_layer"].source),
        ("KV heads per layer", _compact(info.n_head_kv), f["n_head_kv"].source),
        ("key / value length", f"{info.head_k} / {info.head_v}", f"{f['head_k'].source}; {f['head_v'].source}"),
        ("vocabulary", f"{info.n_vocab:,}", f["n_vocab"].source),
        ("context per thread", f"{n_ctx_seq:,} cells",
         f"context {shape.context} x threads {shape.threads} padded to 256 = n_ctx {n_ctx}; "
         f"{n_stream} stream(s) of n_ctx/threads padded to 256"),
    ]
    if info.has_swa:
        rows.append(("sliding window", f"{info.n_swa} tokens, {sum(info.swa)} of {info.n_layer} layers",
                     f"{f['n_swa'].source}; pattern {f['swa_pattern'].source}"))
    kv = kv_cache(info, shape)
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
    rows += [
        ("weights on device" if device.is_gpu else "weights", _mib(bd.weights_device_bytes),
         "sum of tensor sizes from the GGUF tensor infos (n_elements x type size / block size) for layers "
         f"{max(info.n_layer + 1 - shape.gpu_layers, 0)}..{info.n_layer} (output layer = {info.n_layer})"
         if device.is_gpu else "all tensors, from the GGUF tensor infos (planning for host RAM)"),
    ]
    if device.is_gpu:
        rows.append(("weights on host", _mib(bd.weights_host_bytes),
                     "token_embd always stays on the host, with the layers not offloaded"))
    rows += [
        ("compute buffer", _mib(bd.compute_bytes),
         f"peak of the worst-case graph at {min(n_ctx, shape.ubatch)} tokens; set by the {bd.compute_stage} stage"),
        ("runtime margin", _mib(bd.margin_bytes),
         "CUDA context and pools, as llama.cpp's --fit keeps" if device.is_gpu else "none on host RAM"),
        ("free on device", _mib(device.free_bytes), f"{device.kind}: {device.name}"),
    ]
    return rows


def _compact(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))


def _notes(info: ModelInfo, device: Device, shape: Shape, bd: Breakdown, fits: bool) -> list[str]:
    notes = []
    if device.note:
        notes.append(device.note)
    if not fits:
        notes.append("nothing fits on this device, even the smallest option shown; try fewer GPU layers, "
                     "a smaller context, or a smaller quantization of the model")
    if info.has_swa and not shape.swa_full:
        notes.append("swa_full is off: the sliding-window layers keep a window-sized cache, so the context "
                     "cannot shift; `sentiric run` recomputes the window instead (slower, same semantics)")
    if not info.can_shift_arch:
        notes.append(f"{info.arch}: llama.cpp cannot shift this model's memory; `sentiric run` recomputes instead")
    if device.is_gpu and shape.gpu_layers < info.n_layer + 1:
        notes.append(f"{shape.gpu_layers} of {info.n_layer + 1} layers offloaded (the output layer counts as one "
                     "and goes first); the rest run on the CPU")
    if info.n_ctx_train and shape.context > info.n_ctx_train:
        notes.append(f"context {shape.context} is past the model's trained {info.n_ctx_train}")
    return notes
