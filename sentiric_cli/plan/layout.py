"""Which device each layer lives on: llama.cpp's layer split (src/llama-model.cpp, load_tensors).

Layers are 0 .. n_layer - 1 and the output layer n_layer. The last `gpu_layers` of those n_layer + 1
go to the GPUs (the output layer first); the offloaded ones are cut into runs by the cumulative
`tensor_split` fractions, in float32 as llama.cpp computes them:
    device(il) = upper_bound(cumulative splits, (il - i_gpu_start) / act_gpu_layers)
With no tensor_split llama.cpp splits by each device's free memory.
"""

from __future__ import annotations

import bisect

import numpy as np

CPU = -1


def split_points(fractions: list[float]) -> list[float]:
    """Cumulative, normalised split points, as float32 values (llama.cpp sums and divides in float)."""
    acc = np.float32(0)
    points = []
    for f in fractions:
        acc = np.float32(acc + np.float32(f))
        points.append(acc)
    return [np.float32(p / acc) for p in points]


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
        x = np.float32(np.float32(il - start) / np.float32(act))
        out.append(min(bisect.bisect_right(points, x), len(fractions) - 1))
    return out


def runs(where: list[int]) -> dict[int, tuple[int, int]]:
    """device -> (first layer, last layer) it holds; the output layer is index n_layer."""
    out: dict[int, tuple[int, int]] = {}
    for il, d in enumerate(where):
        lo, _ = out.get(d, (il, il))
        out[d] = (lo, il)
    return out
