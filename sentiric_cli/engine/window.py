"""A sequence's KV window: the shifting-window policy as pure functions (how much to evict, how big a chunk, what was
lost), and KVWindow, which applies it to one sequence's cells in a llama.cpp context.

The window holds `capacity` cells. The first `n_keep` cells are pinned (BOS, the instruction and
the question); when the next chunk does not fit, the oldest unpinned tokens go. Evicting a
quarter of the unpinned window at a time (llama.cpp's server evicts half during generation,
its passkey example one batch per chunk) keeps shifts rare while losing little recent context.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sentiric_cli.errors import SentiricError

if TYPE_CHECKING:
    from sentiric_cli.engine.bindings import Batch, Context

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


@dataclass
class WindowStats:
    """What a window went through, for the Record: how it read, shifted and evicted."""
    reused: int = 0  # prompt tokens found in the slot's cache (a shared prefix), not read
    prefilled: int = 0  # prompt tokens read so far (re-reads by the recompute path not counted)
    max_fill: int = 0  # the largest fill, in cells
    shifts: int = 0
    recomputed: int = 0  # tokens read again by the recompute path
    evicted_count: int = 0  # document tokens evicted
    evicted: list[tuple[int, int]] = field(default_factory=list)  # their positions, as [start, end) spans
    path: str = "none"  # "none" (it fit), "shift" or "recompute"


class KVWindow:
    """One sequence's prompt queue and the tokens in its KV cells: read in chunks, shift or recompute, score.

    `pending` holds (token, source) pairs still to decode: the prompt, then each sampled token; `toks`/`srcs`
    mirror the cells (source: document position, or HEAD/TAIL/GENERATED). A fork is a copy (copy_to)."""

    # the fields, by name: an attribute not listed cannot be set, and one copy_to does not set fails when read (no
    # field is silently shared with a fork)
    __slots__ = ("ctx", "id", "shiftable", "fraction", "score", "capacity", "n_keep", "pending", "prompt_total", "chunk",
                 "toks", "srcs", "stats", "logit_index", "to_score", "scored_src", "draft_rows")

    def __init__(self, ctx: Context, seq_id: int, shiftable: bool, prompt: list[tuple[int, int]], head: int,
                 n_keep: int, discard: float, max_tokens: int, reuse: int = 0, score: bool = False) -> None:
        self.ctx, self.id, self.shiftable, self.fraction, self.score = ctx, seq_id, shiftable, discard, score
        self.capacity = ctx.n_ctx_seq
        self.n_keep = head if n_keep < 0 else min(n_keep, len(prompt))
        if self.n_keep >= self.capacity - 1:
            raise SentiricError(f"the pinned head ({self.n_keep} tokens) leaves no room in a {self.capacity}-token window",
                                "shorten the instruction/question, raise context_size, or lower n_keep")
        self.pending: deque[tuple[int, int]] = deque(prompt)
        self.prompt_total = len(prompt)
        self.chunk = chunk_size(self.capacity, self.n_keep, ctx.n_batch, len(prompt) + max_tokens)
        self.toks: list[int] = []
        self.srcs: list[int] = []
        for _ in range(reuse):  # already in this slot's cache (the caller trimmed it to this): not read again
            tok, src = self.pending.popleft()
            self.toks.append(tok)
            self.srcs.append(src)
        self.stats = WindowStats(reused=len(self.toks), prefilled=len(self.toks), max_fill=len(self.toks))
        self.logit_index: int | None = None
        self.to_score: list[tuple[int, int]] = []  # (batch index, next document token) for this step
        self.scored_src = -1
        self.draft_rows: list[int] = []  # this step's rows: the sampled token's, then one per drafted token (draft.py)

    def copy_to(self, seq_id: int) -> KVWindow:
        """The same window in another sequence (the caller copied the cells: llama_memory_seq_cp). Every field is
        set here by name: a field added to __init__ and not here fails loudly in the copy, not shared silently."""
        c = KVWindow.__new__(KVWindow)
        c.ctx, c.id, c.shiftable, c.fraction, c.score = self.ctx, seq_id, self.shiftable, self.fraction, self.score
        c.capacity, c.n_keep, c.prompt_total, c.chunk = self.capacity, self.n_keep, self.prompt_total, self.chunk
        c.pending, c.toks, c.srcs = deque(self.pending), list(self.toks), list(self.srcs)
        c.stats = replace(self.stats, evicted=list(self.stats.evicted), reused=len(c.toks))  # copied, not read
        c.logit_index, c.to_score, c.scored_src = self.logit_index, [], self.scored_src
        c.draft_rows = []
        return c

    def make_room(self, n: int) -> bool:
        """Evict after the pinned head so n more tokens fit: shift in place, or clear and re-read.
        True when it did (a re-read queues the kept tokens in front: wants() changes)."""
        if len(self.toks) + n <= self.capacity:  # the usual case, asked once per token: answered first
            return False
        fraction = self.fraction if self.shiftable else max(self.fraction, RECOMPUTE_DISCARD)
        d = discard(len(self.toks), n, self.capacity, self.n_keep, fraction)
        if not d:
            return False
        k, st = self.n_keep, self.stats
        gone = self.srcs[k:k + d]
        st.evicted = merge(st.evicted, spans(gone))
        st.evicted_count += sum(1 for s in gone if s >= 0)
        st.shifts += 1
        ctx = self.ctx
        if self.shiftable:
            if not ctx.seq_rm(self.id, k, k + d):
                raise RuntimeError("llama.cpp refused to remove part of the sequence")
            ctx.seq_add(self.id, k + d, len(self.toks), -d)
            del self.toks[k:k + d]
            del self.srcs[k:k + d]
            st.path = "shift"
            return True
        kept = list(zip(self.toks[:k] + self.toks[k + d:], self.srcs[:k] + self.srcs[k + d:], strict=True))
        ctx.seq_rm(self.id, -1, -1)
        self.toks, self.srcs = [], []
        self.pending.extendleft(reversed(kept))
        st.recomputed += len(kept)
        st.path = "recompute"
        return True

    def fill_one(self, batch: Batch) -> None:
        """Generating: the token just sampled, with logits."""
        tok, src = self.pending.popleft()
        self.logit_index = batch.add(tok, len(self.toks), self.id, True)
        self.toks.append(tok)
        self.srcs.append(src)
        if len(self.toks) > self.stats.max_fill:
            self.stats.max_fill = len(self.toks)

    def fill_draft(self, batch: Batch, draft: list[int]) -> None:
        """Generating: the token just sampled and a draft of the next ones (draft.py), each with logits. The draft's
        cells stay only as far as the sampler confirms them (keep)."""
        tok, src = self.pending.popleft()
        pos = len(self.toks)
        rows = [batch.add(tok, pos, self.id, True)]
        rows += [batch.add(t, pos + 1 + j, self.id, True) for j, t in enumerate(draft)]
        self.toks += [tok, *draft]
        self.srcs += [src] * (1 + len(draft))  # generated, as the sampled token
        self.logit_index, self.draft_rows = rows[0], rows
        self.stats.max_fill = max(self.stats.max_fill, len(self.toks))

    def keep(self, n: int) -> None:
        """Keep the first n cells (a draft's refused tokens go: their cells were written by this step)."""
        self.draft_rows = []
        if n < len(self.toks):
            self.ctx.seq_rm(self.id, n, -1)
            del self.toks[n:]
            del self.srcs[n:]

    def fill(self, batch: Batch, n: int, reading: bool) -> None:
        """n queued tokens into the batch; logits for the last one (and, scoring, for each document token's
        predecessor). `reading`: still in the prompt, so `prefilled` counts."""
        self.logit_index = None
        self.to_score = []
        pending, toks, srcs = self.pending, self.toks, self.srcs
        for k in range(n):
            tok, src = pending.popleft()
            last = k == n - 1 and not pending
            nxt = pending[0] if pending else None
            # score each document token once, from the window that precedes it (not again on a recompute)
            score = self.score and nxt is not None and nxt[1] > self.scored_src
            i = batch.add(tok, len(toks), self.id, last or score)
            if score and nxt is not None:
                self.to_score.append((i, nxt[0]))
                self.scored_src = nxt[1]
            toks.append(tok)
            srcs.append(src)
            if last:
                self.logit_index = i
        st = self.stats
        if reading:  # pending = re-reads queued by a recompute + the unread rest: re-reads don't count
            st.prefilled = max(st.prefilled, self.prompt_total - len(pending))
        st.max_fill = max(st.max_fill, len(toks))

    def clear(self) -> None:
        """Free the cells (a shifted window is no prefix of anything: nothing to keep)."""
        self.ctx.seq_rm(self.id, -1, -1)
        self.toks = []

    def kept_spans(self) -> list[tuple[int, int]]:
        return spans(self.srcs)
