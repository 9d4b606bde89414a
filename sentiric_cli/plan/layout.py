"""Which device each layer lives on: llama.cpp's layer split (src/llama-model.cpp, load_tensors).

Layers are 0 .. n_layer - 1 and the output layer n_layer. The last `gpu_layers` of those n_layer + 1
go to the GPUs (the output layer first); the offloaded ones are cut into runs by the cumulative
`tensor_split` fractions, in float32 as llama.cpp computes them:
    device(il) = upper_bound(cumulative splits, (il - i_gpu_start) / act_gpu_layers)
With no tensor_split llama.cpp splits by each device's free memory.
"""

from __future__ import annotations

import bisect
import re
import struct

from sentiric_cli.gguf.header import GGUFHeader

CPU = -1


_F32 = struct.Struct("<f")


def f32(x: float) -> float:
    """x rounded to float32. One double operation on float32 operands, then this, is the float32 result
    (a double holds more than 2 x 24 + 2 bits), so llama.cpp's float arithmetic is reproduced without numpy."""
    return _F32.unpack(_F32.pack(x))[0]


def split_points(fractions: list[float]) -> list[float]:
    """Cumulative, normalised split points, as float32 values (llama.cpp sums and divides in float)."""
    acc = 0.0
    points = []
    for f in fractions:
        acc = f32(acc + f32(f))
        points.append(acc)
    return [f32(p / acc) for p in points]


def layer_devices(n_layer: int, gpu_layers: int, fractions: list[float]) -> list[int]:
    """Device index (into `fractions`) of each of the n_layer + 1 layers; CPU = -1."""
    if not fractions or gpu_layers <= 0:
        return [CPU] * (n_layer + 1)
    if sum(fractions) <= 0:
        raise ValueError("tensor_split must have a positive entry")
    start = max(n_layer + 1 - gpu_layers, 0)
    act = min(gpu_layers, n_layer + 1)
    points = split_points(fractions)
    out = []
    for il in range(n_layer + 1):
        if il < start or il - start >= act:
            out.append(CPU)
            continue
        x = f32(f32(il - start) / f32(act))
        out.append(min(bisect.bisect_right(points, x), len(fractions) - 1))
    return out


def runs(where: list[int]) -> dict[int, tuple[int, int]]:
    """device -> (first layer, last layer) it holds; the output layer is index n_layer."""
    out: dict[int, tuple[int, int]] = {}
    for il, d in enumerate(where):
        lo, _ = out.get(d, (il, il))
        out[d] = (lo, il)
    return out


def override_device(buffer: str, n_gpus: int) -> int:
    """A tensor override's buffer type as a device: CPU (or CUDA_Host, pinned RAM) -> CPU, CUDAn -> GPU n."""
    if buffer in ("CPU", "CUDA_Host"):
        return CPU
    m = re.fullmatch(r"(?:CUDA|ROCm|Vulkan)(\d+)", buffer)
    if not m:
        raise ValueError(f"tensor override buffer {buffer!r} is not one llama.cpp names: CPU, CUDA0, CUDA1 ...")
    index = int(m.group(1))
    if index >= n_gpus:
        raise ValueError(f"tensor override buffer {buffer!r}: this plan has {n_gpus} GPU(s)"
                         + (f", CUDA0 to CUDA{n_gpus - 1}" if n_gpus else ""))
    return index


def override_places(header: GGUFHeader, overrides: tuple[str, ...], n_gpus: int) -> dict[str, int]:
    """Tensor name -> device for every tensor an override matches. As llama_model_loader does: each
    PATTERN=BUFFER in order, regex_search on the name, the first match wins."""
    rules = []
    for entry in overrides:
        pattern, _, buffer = entry.partition("=")
        rules.append((re.compile(pattern), override_device(buffer, n_gpus)))
    out: dict[str, int] = {}
    for t in header.tensors if rules else ():
        for rx, dev in rules:
            if rx.search(t.name):
                out[t.name] = dev
                break
    return out
