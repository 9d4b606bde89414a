"""The shifting-window policy as pure functions: how much to evict, how big a chunk, what was lost.

The window holds `capacity` cells. The first `n_keep` cells are pinned (BOS, the instruction and
the question); when the next chunk does not fit, the oldest unpinned tokens go. Evicting a
quarter of the unpinned window at a time (llama.cpp's server evicts half during generation,
its passkey example one batch per chunk) keeps shifts rare while losing little recent context.
"""

from __future__ import annotations

DEFAULT_DISCARD = 0.25  # share of the unpinned window evicted per shift
RECOMPUTE_DISCARD = 0.5  # recomputing re-reads the window: evict more per round so it happens less


def chunk_size(capacity: int, n_keep: int, n_batch: int, total: int) -> int:
    """Tokens decoded per prefill call. When everything fits, n_batch (as llama.cpp reads a prompt);
    else at most half the unpinned window, so a chunk never needs more than one shift."""
    if total <= capacity:
        return max(1, n_batch)
    return max(1, min(n_batch, (capacity - n_keep) // 2))


def discard(n_past: int, need: int, capacity: int, n_keep: int, fraction: float = DEFAULT_DISCARD) -> int:
    """Tokens to evict after the pinned head so `need` more fit; 0 when they fit already."""
    overflow = n_past + need - capacity
    if overflow <= 0:
        return 0
    unpinned = n_past - n_keep
    want = max(overflow, int(fraction * (capacity - n_keep)))
    return min(want, unpinned)


def spans(indices: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of input positions as half-open [start, end) spans (negative = not document)."""
    out: list[tuple[int, int]] = []
    for i in sorted(x for x in indices if x >= 0):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        elif not out or out[-1][1] < i:
            out.append((i, i + 1))
    return out


def merge(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(a + b):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out
