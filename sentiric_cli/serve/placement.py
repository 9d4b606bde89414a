"""Where a prompt runs, as a pure function of what the free slots hold: tested without a model.

A request takes the lowest free slot (busy slots together: llama.cpp decodes each run of consecutive KV streams in
a step as a graph of its own). A free slot's cache is kept: when it starts with the same tokens as a new prompt,
that shared prefix is not read again. When another free slot holds a longer start of it, that cache is copied
down to the lowest one first (llama_memory_seq_cp: one copy of the stream's buffer, less than reading the tokens
again) and the other slot keeps its own for later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# a free slot holding this many more of a prompt's first tokens than the lowest free slot is copied down to it:
# the copy made the next step 1.7-3.6 ms longer on the bundled model (bench/slot_steps.py), where each token read
# adds a row to a step (8 rows: 46-51 ms, 1 row: 14 ms); on the micro model it is 0.16 ms, a handful of its steps
COPY_GAIN = 8


@dataclass(frozen=True)
class Placement:
    slot: int  # always the lowest free slot
    reuse: int  # prompt tokens the slot holds (after the copy, if any): not read again
    copy_from: int | None = None  # a free slot whose cache is copied to `slot` first


def shared(cached: list[int], prompt: list[int]) -> int:
    """How many first tokens the two have in common."""
    n = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        n += 1
    return n


def place(free: list[int], cached: dict[int, list[int]], prompt: list[int],
          keepable: Callable[[int, int], int] = lambda slot, n: n) -> Placement:
    """free: free slots, lowest first; cached: tokens each free slot still holds from position 0; keepable(slot, n):
    how many of n shared tokens that slot's memory can go on from (Engine.keepable: a sliding window or a recurrent
    state may not go back)."""
    low = free[0]
    # the last prompt token is always decoded: it gives the logits
    keep = {i: keepable(i, min(shared(cached[i], prompt), len(prompt) - 1)) for i in free if cached.get(i)}
    src = max(keep, key=lambda i: keep[i], default=low)  # the first of equals: the lowest
    reuse = keep.get(low, 0)
    if keep.get(src, 0) - reuse >= COPY_GAIN:
        return Placement(low, keep[src], src)
    return Placement(low, reuse)
