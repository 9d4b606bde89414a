"""What llama.cpp allocates where, for one shape on one or several devices, and the verdict.

Verdicts compare what llama.cpp will allocate on a device plus a runtime margin (GPUs only)
with the device's free memory:
    need / free <= 0.75  very safe     <= 0.90  safe     <= 1.00  risky     > 1.00  does not fit
Several GPUs get a verdict each; the plan's verdict is the worst of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sentiric_cli.gguf.header import GGUFHeader
from sentiric_cli.gguf.modelinfo import ModelInfo
from sentiric_cli.plan.backends import cuda_compute
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.layout import CPU, layer_devices, override_places, runs
from sentiric_cli.plan.memory import Shape, compute_buffer, kv_cache, layer_weights, tensor_layer, weights

VERDICTS = ((0.75, "very safe"), (0.90, "safe"), (1.00, "risky"))
NO_FIT = "does not fit"
RANK = {"very safe": 0, "safe": 1, "risky": 2, NO_FIT: 3}


def verdict(need: int, free: int) -> str:
    if free <= 0:
        return NO_FIT
    ratio = need / free
    return next((name for limit, name in VERDICTS if ratio <= limit), NO_FIT)


def strain(u: DeviceUse) -> tuple[int, float]:
    """How close a device is to not fitting: its verdict's rank, then need / free. The plan's verdict is
    the most strained device's."""
    return RANK[u.verdict], u.need_bytes / max(u.free_bytes, 1)


@dataclass(frozen=True)
class Extra:
    """A second model llama-server loads beside the main one: a draft model for speculative
    decoding (`--draft`, planned like the main model at the same context and threads, all its
    layers offloaded as llama-server's -ngld default) or a vision projector (`--mmproj`: its
    weights on the first GPU; the image encoder's compute buffer is not planned)."""

    kind: str  # "draft" or "mmproj"
    header: GGUFHeader
    info: ModelInfo | None = None  # the draft's; None for a projector

    def describe(self) -> str:
        if self.kind == "draft":
            return "weights, KV and compute of the draft at the same context x threads, every layer offloaded"
        return "projector weights on the first GPU (host RAM without one); its image compute buffer is not planned"


@dataclass(frozen=True)
class DeviceUse:
    index: str  # NVML index ("0", "0:1" for a MIG slice), "" for a --vram device, "host"
    name: str
    layers: str  # which layers it holds, e.g. "blk 0-16" or "blk 17-33 + output"
    n_layers: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    compute_why: str
    extra_bytes: int  # a draft model's or projector's share here
    total_bytes: int
    margin_bytes: int
    need_bytes: int
    free_bytes: int
    verdict: str


@dataclass(frozen=True)
class Breakdown:
    weights_device_bytes: int  # summed over the GPUs (host RAM when planning for it)
    weights_host_bytes: int
    kv_bytes: int
    kv_device_bytes: int
    kv_bytes_per_thread: int
    compute_bytes: int  # on the GPUs (the CPU buffer when planning for host RAM)
    compute_stage: str
    host_compute_bytes: int  # CUDA_Host: graph inputs and the CPU's share (0 when planning for host RAM)
    output_host_bytes: int  # llama.cpp's host-side logits buffer
    margin_bytes: int
    total_device_bytes: int  # weights + KV + compute that llama.cpp allocates on the GPUs
    total_host_bytes: int
    need_bytes: int  # total on the GPUs plus their margins
    verdict: str  # the worst device's
    backend: str  # "cpu" or "cuda": whose compute formulas
    tensor_split: tuple[float, ...]  # the split used (free memory by default)
    devices: tuple[DeviceUse, ...]
    compute_modelled: bool  # a CUDA figure not yet checked on a log (partial/op offload, pipeline copies)
    layer_devices: tuple[int, ...]  # where each of the n_layer + 1 layers lives (-1 = CPU)
    host: DeviceUse | None = None  # host RAM against MemAvailable (or --ram); None when not planned
    host_mapped_bytes: int = 0  # of the host weights, those mapped from the file (page cache, with mmap)


def breakdown(header: GGUFHeader, info: ModelInfo, devs: tuple[Device, ...], shape: Shape,
              extras: tuple[Extra, ...] = (), where: list[int] | None = None, host: Device | None = None) -> Breakdown:
    """`where`: a layer placement to use instead of this llama.cpp's rule (layout.layer_devices), e.g.
    an older build's, whose gpu_layers offloaded repeating layers before the output layer.
    `host`: the host RAM a GPU plan also needs is checked against it (the plan's verdict is the worst)."""
    bd = _breakdown(header, info, devs, shape, extras, where)
    if bd.backend == "cpu":  # planning for host RAM: the one device is the host
        return replace(bd, host=bd.devices[0], host_mapped_bytes=bd.weights_device_bytes if shape.mmap else 0)
    if host is None:
        return bd
    mapped = bd.weights_host_bytes if shape.mmap else 0
    n_cpu = sum(1 for x in bd.layer_devices if x == CPU)
    kv_host, compute = bd.kv_bytes - bd.kv_device_bytes, bd.host_compute_bytes + bd.output_host_bytes
    extra = bd.total_host_bytes - bd.weights_host_bytes - kv_host - compute
    use = DeviceUse("host", host.name, f"{n_cpu} layers + token_embd" if n_cpu else "token_embd", n_cpu,
                    bd.weights_host_bytes, kv_host, compute, "CUDA_Host graph inputs and the logits", extra,
                    bd.total_host_bytes, 0, bd.total_host_bytes, host.free_bytes,
                    verdict(bd.total_host_bytes, host.free_bytes))
    worst = max((*bd.devices, use), key=strain)
    return replace(bd, host=use, host_mapped_bytes=mapped, verdict=worst.verdict)


def _breakdown(header: GGUFHeader, info: ModelInfo, devs: tuple[Device, ...], shape: Shape,
               extras: tuple[Extra, ...] = (), where: list[int] | None = None) -> Breakdown:
    gpus = [d for d in devs if d.is_gpu]
    extra = _extras(devs, shape, extras)
    # llama_context's output buffer: a logits row per sequence, and an embedding row where the model pools
    # (an embedding or reranker model, served with --embeddings)
    output_host = 4 * (info.n_vocab + (info.n_embd if info.no_cache or info.pooling else 0)) * shape.threads
    if not gpus:  # planning for host RAM: everything lives there, the CPU build's compute buffer
        override_places(header, shape.overrides, 0)  # a GPU buffer named without a GPU: an error
        shape = replace(shape, gpu_layers=0)
        where = layer_devices(info.n_layer, 0, [])
        w, kv = weights(header, info, 0, where), kv_cache(info, shape, where)
        comp = compute_buffer(info, shape, kv)
        total = w.host_bytes + kv.bytes + comp.bytes + output_host + extra.get(CPU, 0)
        host = devs[0]
        use = DeviceUse("host", host.name, f"all {info.n_layer} + output", info.n_layer + 1, w.host_bytes, kv.bytes,
                        comp.bytes, f"{comp.stage} stage", extra.get(CPU, 0), total, 0, total, host.free_bytes,
                        verdict(total, host.free_bytes))
        return Breakdown(w.host_bytes, 0, kv.bytes, kv.bytes, kv.bytes // shape.threads, comp.bytes, comp.stage, 0,
                         output_host, 0, total, total, total, use.verdict, "cpu", (), (use,), False, tuple(where))
    split = shape.tensor_split or tuple(float(d.free_bytes) for d in gpus)
    if len(split) != len(gpus):
        raise ValueError(f"tensor_split has {len(split)} entries for {len(gpus)} GPUs")
    where = where or layer_devices(info.n_layer, shape.gpu_layers, list(split))
    moved = override_places(header, shape.overrides, len(gpus))
    w, kv = weights(header, info, shape.gpu_layers, where, moved), kv_cache(info, shape, where)
    cuda = cuda_compute(header, info, shape, kv, where, len(gpus), shape.op_offload, moved)
    spans = runs(where)
    uses = []
    for i, d in enumerate(gpus):
        c = cuda.buffers.get(i)
        total = w.by_device.get(i, 0) + kv.by_device.get(i, 0) + (c.bytes if c else 0) + extra.get(i, 0)
        need = total + d.margin_bytes
        uses.append(DeviceUse(d.index, d.name, _span(spans.get(i), info.n_layer), sum(x == i for x in where),
                              w.by_device.get(i, 0), kv.by_device.get(i, 0), c.bytes if c else 0,
                              c.why if c else "no layers here", extra.get(i, 0), total, d.margin_bytes, need,
                              d.free_bytes, verdict(need, d.free_bytes)))
    host_comp = cuda.buffers[CPU].bytes
    dev_comp = sum(u.compute_bytes for u in uses)
    worst = max(uses, key=strain)
    stage = max(uses, key=lambda u: u.compute_bytes).compute_why.split(" stage")[0]
    return Breakdown(
        weights_device_bytes=w.device_bytes, weights_host_bytes=w.host_bytes, kv_bytes=kv.bytes,
        kv_device_bytes=kv.device_bytes, kv_bytes_per_thread=kv.bytes // shape.threads, compute_bytes=dev_comp,
        compute_stage=stage, host_compute_bytes=host_comp, output_host_bytes=output_host,
        margin_bytes=sum(u.margin_bytes for u in uses), total_device_bytes=sum(u.total_bytes for u in uses),
        total_host_bytes=w.host_bytes + kv.host_bytes + host_comp + output_host + extra.get(CPU, 0),
        need_bytes=sum(u.need_bytes for u in uses), verdict=worst.verdict, backend="cuda",
        tensor_split=tuple(split), devices=tuple(uses), compute_modelled=cuda.modelled, layer_devices=tuple(where))


def _extras(devs: tuple[Device, ...], shape: Shape, extras: tuple[Extra, ...]) -> dict[int, int]:
    """device (CPU = -1) -> bytes the extra models add there."""
    out: dict[int, int] = {}
    gpu = any(d.is_gpu for d in devs)
    for e in extras:
        if e.info is None:  # projector: every tensor, on the first GPU
            where = 0 if gpu else CPU
            out[where] = out.get(where, 0) + sum(t.n_bytes for t in e.header.tensors)
            continue
        sub = replace(shape, gpu_layers=e.info.n_layer + 1 if gpu else 0, tensor_split=())
        b = breakdown(e.header, e.info, devs, sub)
        if not gpu:
            out[CPU] = out.get(CPU, 0) + b.total_device_bytes
            continue
        for i, u in enumerate(b.devices):
            out[i] = out.get(i, 0) + u.total_bytes
        out[CPU] = out.get(CPU, 0) + b.total_host_bytes
    return out


def _span(span: tuple[int, int] | None, n_layer: int) -> str:
    if span is None:
        return "none"
    lo, hi = span
    if lo == n_layer:
        return "output"
    last = min(hi, n_layer - 1)
    blocks = f"blk {lo}" if lo == last else f"blk {lo}-{last}"
    return blocks + (" + output" if hi == n_layer else "")


@dataclass(frozen=True)
class LayerRow:
    """One llama.cpp layer in the --layers view, as gguf-parser-go shows them."""

    index: int  # -1 for the input (token_embd), n_layer for the output layer
    name: str
    device: str  # "CPU", or the GPU's index
    kind: str  # "full", "sliding", "recurrent", "no cache", "input", "output"
    weights_bytes: int
    kv_bytes: int


def layer_rows(header: GGUFHeader, info: ModelInfo, devs: tuple[Device, ...], shape: Shape,
               bd: Breakdown) -> list[LayerRow]:
    gpus = [d for d in devs if d.is_gpu]
    where = list(bd.layer_devices)
    lw = layer_weights(header, info)
    kv = kv_cache(info, replace(shape, gpu_layers=shape.gpu_layers if gpus else 0), where)

    def dev(i: int, offload: bool = True) -> str:
        return "CPU" if i == CPU or not offload else (gpus[i].index or str(i))

    moved = override_places(header, shape.overrides, len(gpus))
    elsewhere: dict[int, dict[int, int]] = {}  # layer -> device -> bytes a tensor override put there
    for t in header.tensors if moved else ():
        il = tensor_layer(t.name, info.n_layer)
        if t.name in moved and il is not None and il < info.n_layer and moved[t.name] != where[il]:
            per = elsewhere.setdefault(il, {})
            per[moved[t.name]] = per.get(moved[t.name], 0) + t.n_bytes
    rows = [LayerRow(-1, "token_embd", "CPU", "input", lw.input_bytes, 0)]
    for il in range(info.n_layer):
        kind = ("recurrent" if info.recurrent else "no cache" if not kv.layers[il]
                else "sliding" if info.swa[il] else "full")
        kv_dev = dev(where[il], shape.kv_offload)
        place = dev(where[il]) + ("" if kv_dev == dev(where[il]) else f" (KV {kv_dev})")
        place += "".join(f" ({n / 2**20:.0f} MiB on {dev(d)})" for d, n in sorted(elsewhere.get(il, {}).items()))
        rows.append(LayerRow(il, f"blk.{il}", place, kind, lw.layers[il], kv.layers[il]))
    out_dev = where[info.n_layer]
    rows.append(LayerRow(info.n_layer, "output", dev(out_dev), "output",
                         lw.layers[info.n_layer] + (lw.tied_bytes if out_dev != CPU else 0), 0))
    return rows
