"""`plan`: what fits on a device (or several). Returns data (a Plan); the CLI renders it.

The search: the largest context x threads that fits (safe first) over the knob sets, full offload
first; else the most layers that fit. With several GPUs the layers are split by free memory as
llama.cpp does, then rebalanced (`tensor_split` as layers per GPU) when that fits more.
Verdicts and the per-device accounting are in usage.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from sentiric_cli.gguf.header import GGUFHeader
from sentiric_cli.gguf.modelinfo import ModelInfo
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.explain import explain, notes, speed_rows
from sentiric_cli.plan.memory import MiB, Shape, cache_type_fits
from sentiric_cli.plan.promptcache import PromptCache, describe, prompt_cache
from sentiric_cli.plan.speed import Bandwidths, Speed, speed
from sentiric_cli.plan.usage import NO_FIT, Breakdown, Extra, breakdown, strain, verdict  # noqa: F401 (verdict: API)
from sentiric_cli.settings import Settings

CONTEXTS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
THREADS = (1, 2, 3, 4)
# knob sets tried for the recommendation, most faithful first: f16 cache and a shiftable
# sliding window, then a window-sized SWA cache, then a q8_0 cache (needs flash attention)
KNOBS = (("f16", True), ("f16", False), ("q8_0", False))


@dataclass(frozen=True)
class Option:
    context: int
    threads: int
    kv_bytes_per_thread: int
    kv_bytes: int
    total_device_bytes: int
    verdict: str
    host_bytes: int = 0  # host RAM a GPU option also needs (the device's own total without a GPU)
    decode_tps: float | None = None  # one request's decode tokens/s at a full context (speed.py); None: unknown


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
    devices: tuple[Device, ...]
    shape: Shape
    memory: Breakdown
    options: list[Option]
    recommendation: Settings
    fits: bool
    savings: list[Saving] = field(default_factory=list)
    explain: list[tuple[str, str, str]] = field(default_factory=list)  # (what, value, where from)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extras: tuple[Extra, ...] = ()
    host: Device | None = None  # the host RAM planned beside the GPUs (the device itself without one)
    speed: Speed | None = None  # at the recommended shape; None when not asked for
    prompt_cache: PromptCache | None = None  # serve's cache_ram beside the plan (promptcache.py)

    @property
    def device(self) -> Device:
        return self.devices[0]

    def to_dict(self) -> dict:
        info = self.model
        return {
            "model": {"path": self.model_path, "name": info.name, "architecture": info.arch,
                      "n_layer": info.n_layer, "n_embd": info.n_embd, "n_vocab": info.n_vocab,
                      "n_ctx_train": info.n_ctx_train, "sliding_window": info.n_swa or None,
                      "sliding_layers": sum(info.swa), "known_architecture": info.known_arch},
            "device": asdict(self.device) | {"margin_bytes": self.device.margin_bytes},
            "devices": [asdict(d) | {"margin_bytes": d.margin_bytes} for d in self.devices],
            "host": asdict(self.host) if self.host else None,
            "extras": [{"kind": e.kind, "path": str(e.header.path)} for e in self.extras],
            "settings": asdict(self.shape),
            "memory": asdict(self.memory),
            "options": [asdict(o) for o in self.options],
            "recommendation": self.recommendation.model_dump(),
            "fits": self.fits,
            "savings": [asdict(s) for s in self.savings],
            "explain": [{"what": w, "value": v, "source": s} for w, v, s in self.explain],
            "speed": asdict(self.speed) if self.speed else None,
            "prompt_cache": (asdict(self.prompt_cache) | {"tokens": self.prompt_cache.tokens,
                                                           "fits": self.prompt_cache.fits}) if self.prompt_cache else None,
            "notes": self.notes,
            "warnings": self.warnings,
        }


def _shape(settings: Settings, info: ModelInfo) -> Shape:
    layers = info.n_layer + 1 if settings.gpu_layers < 0 else settings.gpu_layers
    return Shape(context=settings.context_size, threads=settings.threads, gpu_layers=layers,
                 cache_type_k=settings.cache_type_k, cache_type_v=settings.cache_type_v,
                 flash_attn=settings.flash_attn, swa_full=settings.swa_full, ubatch=settings.ubatch_size,
                 batch=settings.batch_size, kv_offload=settings.kv_offload, op_offload=settings.op_offload,
                 tensor_split=tuple(settings.tensor_split), overrides=tuple(settings.tensor_overrides),
                 mmap=settings.use_mmap)


def _fits(bd: Breakdown) -> bool:
    return bd.verdict != NO_FIT


def _safe(bd: Breakdown) -> bool:
    return bd.verdict in ("very safe", "safe")


class Target:
    """What a shape is evaluated against: the model, the devices, extra models (draft, mmproj)."""

    def __init__(self, header: GGUFHeader, info: ModelInfo, devices: tuple[Device, ...],
                 extras: tuple[Extra, ...] = (), host: Device | None = None, bw: Bandwidths | None = None,
                 peaks: dict[int, float] | None = None) -> None:
        self.header, self.info, self.devices, self.extras, self.host = header, info, devices, extras, host
        self.gpus = [d for d in devices if d.is_gpu]
        self.bw, self.peaks = bw, peaks or {}
        self._bds: dict[Shape, Breakdown] = {}  # the options table re-weighs shapes the search weighed

    def speed(self, shape: Shape, bd: Breakdown) -> Speed | None:
        return None if self.bw is None else speed(self.header, self.info, shape, bd, self.bw, self.peaks)

    def bd(self, shape: Shape) -> Breakdown:
        if shape not in self._bds:
            self._bds[shape] = breakdown(self.header, self.info, self.devices, shape, self.extras, host=self.host)
        return self._bds[shape]


def make_plan(header: GGUFHeader, info: ModelInfo, device: Device | tuple[Device, ...] | list[Device],
              settings: Settings, pinned: set[str] | frozenset[str] = frozenset(), *,
              extras: tuple[Extra, ...] = (), kv_unified: bool = False, host: Device | None = None,
              bw: Bandwidths | None = None, peaks: dict[int, float] | None = None, peak_how: str = "") -> Plan:
    """Recommend settings for the device(s). `pinned` names the settings the user fixed (context_size,
    threads, gpu_layers, cache_type_k/v, flash_attn, swa_full, ubatch_size, tensor_split); the rest are chosen.
    `host`: the host RAM a GPU plan must also fit (weights left on the CPU, host KV, CUDA_Host buffers)."""
    devices = (device,) if isinstance(device, Device) else tuple(device)
    tg = Target(header, info, devices, extras, host if any(d.is_gpu for d in devices) else None, bw, peaks)
    base = replace(_shape(settings, info), kv_unified=kv_unified)
    full = info.n_layer + 1
    if "gpu_layers" not in pinned:
        base = replace(base, gpu_layers=full if tg.gpus else 0)
    balance = len(tg.gpus) > 1 and "tensor_split" not in pinned
    if balance or len(tg.gpus) <= 1:  # llama.cpp's default, by free memory (rebalanced below); one GPU: moot
        base = replace(base, tensor_split=())
    knob_sets = _knob_sets(info, settings, pinned)
    if info.no_cache:  # an encoder has no cache type to choose: its knob is flash attention alone
        knob_sets = knob_sets[:1]
    contexts = [settings.context_size] if "context_size" in pinned else _contexts(info)
    threads = [settings.threads] if "threads" in pinned else list(THREADS)
    # a non-causal encoder must see a whole input in one ubatch (llama.cpp refuses it otherwise): ubatch = context,
    # rounded down to a multiple of threads (llama.cpp 0.3.36 aborts reserving an encoder's graph otherwise; measured)
    whole = info.no_cache and "ubatch_size" not in pinned

    def sized(shape: Shape) -> Shape:
        if not whole:
            return shape
        ubatch = max(shape.threads, shape.context - shape.context % shape.threads)
        return replace(shape, ubatch=ubatch, batch=max(shape.batch, ubatch))

    # 1. the largest context x threads that fits (safe first), over the knob sets, most faithful first
    best: tuple | None = None
    for knobs in knob_sets:
        for ctx in contexts:
            for t in threads:
                shape = sized(replace(base, context=ctx, threads=t, **knobs))
                if {"context_size", "threads"} <= pinned and "gpu_layers" not in pinned and tg.gpus:
                    shape = _most_layers(tg, shape)
                bd = tg.bd(shape)
                if not _fits(bd) and balance:
                    shape, bd = _balanced(tg, shape)
                if not _fits(bd):
                    continue
                score = (_safe(bd), shape.gpu_layers, ctx * t, ctx)  # full offload first
                if best is None or score > best[0]:
                    best = (score, shape, bd)
    if best is None and tg.gpus and "gpu_layers" not in pinned:
        # full offload fits nothing: the most layers that fit at the asked (or smallest) size
        ctx = settings.context_size if "context_size" in pinned else min(contexts)
        t = settings.threads if "threads" in pinned else 1
        for knobs in knob_sets:
            shape = _most_layers(tg, sized(replace(base, context=ctx, threads=t, **knobs)))
            bd = tg.bd(shape)
            score = (_safe(bd), shape.gpu_layers, ctx * t, ctx)
            if _fits(bd) and shape.gpu_layers > 0 and (best is None or score > best[0]):
                best = (score, shape, bd)
    fits = best is not None
    if best is None:  # nothing fits: show the smallest thing asked for, so the user sees by how much
        shape = sized(replace(base, context=min(contexts), threads=min(threads), **knob_sets[-1]))
        bd = tg.bd(shape)
    else:
        _, shape, bd = best
    if balance and not _safe(bd):
        shape, bd = _balanced(tg, shape)
    if len(tg.gpus) > 1 and shape.gpu_layers > 0:
        # written as layers per GPU: the same placement on any machine, whatever its free memory then
        counts = tuple(float(sum(1 for x in bd.layer_devices if x == i)) for i in range(len(tg.gpus)))
        shape = replace(shape, tensor_split=counts)
        bd = tg.bd(shape)
    chosen_knobs = {"cache_type_k": shape.cache_type_k, "cache_type_v": shape.cache_type_v,
                    "flash_attn": shape.flash_attn, "swa_full": shape.swa_full}
    options = [_option(tg, sized(replace(shape, context=c, threads=t))) for c in contexts for t in threads]
    rec = settings.model_copy(update={
        "context_size": shape.context, "threads": shape.threads,
        "gpu_layers": shape.gpu_layers if tg.gpus else 0, **chosen_knobs,
        "ubatch_size": shape.ubatch, "batch_size": max(shape.batch, shape.ubatch),
        "tensor_split": list(shape.tensor_split) if len(tg.gpus) > 1 else [],
    })
    plan = Plan(info, header.url or str(header.path), devices, shape, bd, options, rec, fits, warnings=list(info.warnings),
                extras=extras, host=tg.host or (devices[0] if not tg.gpus else None))
    plan.speed = tg.speed(shape, bd)
    plan.savings = _savings(tg, shape)
    plan.explain = explain(header, info, tg.gpus, devices, shape, bd, extras, tg.host)
    if plan.speed is not None:
        plan.explain += speed_rows(plan.speed, shape.threads, peak_how)
    plan.notes = notes(info, devices, shape, bd, fits)
    pc = plan.prompt_cache = prompt_cache(settings.cache_ram, bd, shape.context, "cache_ram" in pinned)
    if pc.budget_bytes:
        plan.explain.append(describe(pc))
        plan.recommendation = plan.recommendation.model_copy(update={"cache_ram": pc.recommended_mib})
        if not pc.fits:
            plan.warnings.append(f"cache_ram {pc.budget_bytes / MiB:,.0f} MiB is more than the "
                                 f"{(pc.room_bytes or 0) / MiB:,.0f} MiB of host RAM left beside the model"
                                 + ("" if "cache_ram" in pinned else
                                    f"; the recommendation sets {pc.recommended_mib:,} MiB"))
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
        if not (cache_type_fits(str(k["cache_type_k"]), info.head_k) and cache_type_fits(str(k["cache_type_v"]), info.head_v)):
            continue
        if k not in sets:
            sets.append(k)
    return sets or [{"cache_type_k": settings.cache_type_k, "cache_type_v": settings.cache_type_v,
                     "flash_attn": settings.flash_attn, "swa_full": settings.swa_full}]


def _contexts(info: ModelInfo) -> list[int]:
    limit = info.n_ctx_train or max(CONTEXTS)
    return [c for c in CONTEXTS if c <= limit] or [limit]


def _most_layers(tg: Target, shape: Shape) -> Shape:
    """With context and threads pinned: the most layers offloaded that still fit (safe first)."""
    fallback = None
    for n in range(tg.info.n_layer + 1, -1, -1):
        s = replace(shape, gpu_layers=n)
        bd = tg.bd(s)
        if _safe(bd):
            return s
        if fallback is None and _fits(bd):
            fallback = s
    return fallback or replace(shape, gpu_layers=0)


def _balanced(tg: Target, shape: Shape) -> tuple[Shape, Breakdown]:
    """Several GPUs: move layers one at a time off the fullest GPU while that lowers the worst need/free.
    The result is a tensor_split in layers per GPU, which llama.cpp's float split reproduces exactly."""
    bd = tg.bd(shape)
    counts = [sum(1 for x in bd.layer_devices if x == i) for i in range(len(tg.gpus))]

    def worst(b: Breakdown) -> tuple:
        return max(strain(u) for u in b.devices)

    best = (worst(bd), shape, bd)
    if sum(counts) == 0:
        return shape, bd
    for _ in range(2 * (tg.info.n_layer + 1)):
        ratios = [u.need_bytes / max(u.free_bytes, 1) for u in best[2].devices]
        full = max(range(len(counts)), key=lambda i: ratios[i])
        tried = None
        for to in (full - 1, full + 1):
            if not 0 <= to < len(counts) or counts[full] == 0:
                continue
            c = list(counts)
            c[full] -= 1
            c[to] += 1
            s = replace(shape, tensor_split=tuple(float(x) for x in c))
            b = tg.bd(s)
            if worst(b) < best[0] and (tried is None or worst(b) < tried[0]):
                tried = (worst(b), s, b, c)
        if tried is None:
            break
        best, counts = tried[:3], tried[3]
    return best[1], best[2]


def _option(tg: Target, shape: Shape) -> Option:
    bd = tg.bd(shape)
    sp = tg.speed(shape, bd)
    return Option(shape.context, shape.threads, bd.kv_bytes_per_thread, bd.kv_bytes, bd.total_device_bytes, bd.verdict,
                  bd.total_host_bytes, sp.decode_tps if sp else None)


def _savings(tg: Target, shape: Shape) -> list[Saving]:
    """What each chosen knob saves (or costs) on the device against its alternative, at the chosen size."""
    info = tg.info
    now = tg.bd(shape)

    def vs(other: Shape, choice: str, alternative: str, note: str = "") -> Saving:
        alt = tg.bd(other)
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
    if info.no_cache:
        return out
    if (shape.cache_type_k, shape.cache_type_v) == ("f16", "f16"):
        q8 = replace(shape, cache_type_k="q8_0", cache_type_v="q8_0" if shape.flash_attn else "f16")
        if cache_type_fits("q8_0", info.head_k) and cache_type_fits(q8.cache_type_v, info.head_v):
            out.append(vs(q8, "cache f16", f"cache {q8.cache_type_k}/{q8.cache_type_v}", "exact; shifts without drift"))
    else:
        out.append(vs(replace(shape, cache_type_k="f16", cache_type_v="f16"),
                      f"cache {shape.cache_type_k}/{shape.cache_type_v}", "cache f16",
                      "quantized K is re-quantized at every shift (small drift)"))
    return out
