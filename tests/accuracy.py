"""The plan against llama.cpp's own buffer reports over a grid; shared by tests and `make bench`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from llama_probe import Probe

from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.plan.memory import MiB, Shape, cache_type_fits, compute_buffer, kv_cache, weights

# Compute-buffer tolerance. 2% is met by the real gemma 3 270M and by the llama family and mamba.
# On tiny synthetic gemma2/gemma3/phi3/deepseek2 graphs (8k vocabulary, so logits no longer
# dominate) the allocator's fragmentation and MLA's extra tensors are not modelled: these bounds
# are the measured worst cases, shown row by row in docs/benchmarks.md.
COMPUTE_TOL = {"gemma2": 0.03, "gemma3": 0.035, "phi3": 0.075, "deepseek2": 0.12}
DEFAULT_TOL = 0.02


@dataclass
class Row:
    model: str
    arch: str
    shape: Shape
    kv_pred: list[str]
    kv_meas: list[str]
    compute_pred: float  # MiB
    compute_meas: float
    weights_pred: int
    weights_size: int  # llama_model_size
    weights_buffer_mib: float
    n_tensors: int

    @property
    def compute_err(self) -> float:
        return self.compute_pred / self.compute_meas - 1

    @property
    def label(self) -> str:
        s = self.shape
        fa = "fa" if s.flash_attn else "no-fa"
        swa = " swa_full" if s.swa_full else ""
        return f"ctx {s.context} x{s.threads} ub {s.ubatch} {s.cache_type_k}/{s.cache_type_v} {fa}{swa}"


def grid(has_swa: bool, contexts=(512, 2048, 8192), threads=(1, 3), ubatches=(512,)) -> list[Shape]:
    knobs = [(False, "f16", "f16"), (True, "f16", "f16"), (True, "q8_0", "q8_0")]
    swa = (False, True) if has_swa else (False,)
    return [Shape(context=c, threads=t, ubatch=u, batch=max(u, 512), flash_attn=fa, cache_type_k=k, cache_type_v=v,
                  swa_full=sf)
            for c, t, u, (fa, k, v), sf in itertools.product(contexts, threads, ubatches, knobs, swa)]


def compare(path, name: str, shapes: list[Shape] | None = None, **grid_kw) -> list[Row]:
    header = read_header(path)
    info = model_info(header)
    probe = Probe(str(path), embeddings=info.no_cache)
    rows = []
    try:
        w = weights(header, info, 0)
        for shape in shapes or grid(info.has_swa, **grid_kw):
            if info.recurrent and shape.cache_type_k != "f16":
                continue  # recurrent state is f32 whatever the cache type
            if not cache_type_fits(shape.cache_type_k, info.head_k):
                continue  # llama.cpp refuses it (deepseek2's MLA key is 40 wide)
            m = probe.measure(shape)
            kv = kv_cache(info, shape)
            comp = compute_buffer(info, shape, kv)
            rows.append(Row(name, info.arch, shape, [f"{g.bytes / MiB:.2f}" for g in kv.groups],
                            [f"{x:.2f}" for x in m.kv_mib], comp.bytes / MiB, m.compute_mib,
                            w.host_bytes + w.device_bytes, m.model_size, m.model_buffer_mib, len(header.tensors)))
    finally:
        probe.close()
    return rows


def shapes_for_synth(has_swa: bool) -> list[Shape]:
    base = grid(has_swa, contexts=(256, 2048), threads=(1, 2), ubatches=(128, 512))
    return base + [replace(base[0], context=4096, threads=4)]
