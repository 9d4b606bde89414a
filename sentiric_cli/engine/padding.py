"""Tile-friendly decode steps: pad a step's rows up to a size llama.cpp computes faster.

A decode step costs what its matrix kernels cost for that many rows, and that is not monotonic: the
CPU kernels work in tiles of rows, and rows left over go through slower paths. On the bundled model
on this project's 2-core machines, 8 rows took 42 ms and 5, 6 or 7 rows 47-54 ms (docs/benchmarks.md,
"Padded decode steps"). So a step of 6 generating sequences can run faster with 2 more rows whose
results are thrown away.

The costs differ by CPU, model, build and thread count, so they are measured, not assumed: once, when
the serving engine starts, every row count up to `cap` is timed a few times on the idle context
(StepCosts.measure). A step is padded only to a size measured clearly cheaper than its own.

The extra rows go to sequences that are idle this step, one each, at the position after whatever
they hold, and are removed from the cache after the step; the real rows' results do not depend on
them. (Rows added to a sequence already in the step would make llama.cpp split the step in two: it
computes equal numbers of rows per sequence at a time.) So a step can grow to as many rows as there
are sequences. Recurrent models are never padded: their state cannot drop positions.

What a real row computes depends on the step's row count (the kernel path), not on the other rows'
contents: a padded step of 6 + 2 rows gives the 6 real rows exactly what a step of 8 real rows gives
them (tests/test_padding.py). llama.cpp is not batch-invariant anyway: the same greedy request can
end differently alone and beside others, with or without padding.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

MARGIN = 0.95  # pad only to a size measured at least 5% cheaper: below that it is noise
EXPLORE = 8  # one padded-size decision in 8 runs unpadded, to keep measuring both
LIVE = 16  # live step times kept per (rows, padded) choice
BUDGET_S = 2.0  # most time the measurement may take at start
REPEATS = 5


@dataclass
class StepCosts:
    """Median seconds of one decode step by row count (index = rows), measured at start; empty = never pad.

    The start measurement runs on an idle context. Serving, a step also attends over every sequence's
    cache, and a padded step over the idle sequences' too (on the bundled model, 6 rows padded to 8 stayed
    faster, 7 to 8 turned slower), so the choice is checked as it runs: once both ways have LIVE recent
    step times, the lower live median wins, and one decision in EXPLORE takes the other way to keep
    its estimate current."""

    seconds: list[float] = field(default_factory=list)
    live: dict = field(default_factory=dict)  # (rows, padded) -> recent step seconds
    turns: dict = field(default_factory=dict)  # rows -> decisions made
    targets: dict = field(default_factory=dict)  # rows -> target(rows)

    @property
    def cap(self) -> int:
        return len(self.seconds) - 1

    def target(self, rows: int) -> int:
        """The row count to run a step of `rows` at: the cheapest measured size at or above it, when that is
        clearly cheaper; else `rows` itself."""
        if rows < 1 or rows >= self.cap:
            return rows
        if rows not in self.targets:  # the start-up costs do not change: work each one out once
            own = self.seconds[rows]
            best = min(range(rows, self.cap + 1), key=lambda m: (self.seconds[m], m))
            self.targets[rows] = best if self.seconds[best] < MARGIN * own else rows
        return self.targets[rows]

    def choose(self, rows: int) -> int:
        """target(), checked against the live step times (see the class docstring)."""
        m = self.target(rows)
        if m == rows:
            return rows
        padded, plain = self.live.get((rows, True), []), self.live.get((rows, False), [])
        known = len(padded) >= LIVE and len(plain) >= LIVE
        prefer = not known or statistics.median(padded) < statistics.median(plain)
        turn = self.turns[rows] = self.turns.get(rows, 0) + 1
        explore = turn % EXPLORE == 0  # the arm not preferred, to keep its live estimate current
        return m if prefer != explore else rows

    def observe(self, rows: int, padded: bool, seconds: float) -> None:
        if rows < 1 or rows >= self.cap or self.target(rows) == rows:
            return
        window = self.live.setdefault((rows, padded), [])
        window.append(seconds)
        del window[:-LIVE]

    @classmethod
    def measure(cls, ctx, batch, token: int, n_seq: int, cap: int, budget_s: float = BUDGET_S) -> StepCosts:
        """Time decode steps of 1..cap rows spread over n_seq sequences (every row with logits, as in a
        decode step), interleaved and repeated; stop early at the time budget. The cache is left empty."""
        times: dict[int, list[float]] = {n: [] for n in range(1, cap + 1)}
        start = time.perf_counter()
        try:
            _step(ctx, batch, token, n_seq, cap)  # warm-up: first graphs, buffers
            t0 = time.perf_counter()
            _step(ctx, batch, token, n_seq, 1)
            if (time.perf_counter() - t0) * cap * 3 > budget_s:  # a model too slow to measure at start
                return cls()
            for _ in range(REPEATS):
                for n in range(1, cap + 1):
                    t0 = time.perf_counter()
                    _step(ctx, batch, token, n_seq, n)
                    times[n].append(time.perf_counter() - t0)
                if time.perf_counter() - start > budget_s:
                    break
        finally:
            for s in range(n_seq):
                ctx.seq_rm(s, -1, -1)
            batch.clear()
        if min(len(v) for v in times.values()) < 3:  # too slow a model to measure at start: never pad
            return cls()
        return cls([0.0] + [statistics.median(times[n]) for n in range(1, cap + 1)])


def _step(ctx, batch, token: int, n_seq: int, rows: int) -> None:
    batch.clear()
    per = [rows // n_seq + (1 if s < rows % n_seq else 0) for s in range(n_seq)]
    for s, k in enumerate(per):
        for j in range(k):
            batch.add(token, j, s, True)
    ctx.decode(batch, prompt=False)
    for s, k in enumerate(per):
        if k:
            ctx.seq_rm(s, -1, -1)


def pad(ctx, batch, idle: list[int], rows: int, capacity: int, token: int) -> list[tuple[int, int]]:
    """Add rows to reach `rows`, one per idle sequence (not in this step), each at that sequence's next
    position: llama.cpp splits a step whose sequences have unequal row counts into several, so the extra
    rows must not go to the sequences already in it. Returns (sequence id, position) to remove after."""
    added: list[tuple[int, int]] = []
    # the shortest caches first: a step attends over the longest cache among its sequences
    for pos, seq in sorted((ctx.seq_pos_max(q) + 1, q) for q in idle):  # after what it keeps: left untouched
        if len(batch) >= rows or pos + 1 >= capacity:
            break
        batch.add(token, pos, seq, True)
        added.append((seq, pos))
    return added
