"""`window`, `map` and `auto`: how `sentiric run` answers one question over a document of any length.

- window: the whole document streams through one shifting window (the engine as it is): memory is
  bounded, but the answer comes from what is left in the window at the end.
- map: the document is split into chunks that fit the window (chunks.py). Each chunk is read fresh,
  with the question, in its own sequence, `threads` at a time in one context (continuous batching: a
  finished chunk's slot takes the next one). Each gives a short partial answer and a confidence from
  the model's own token probabilities (mapreduce.py). A reduce step reads the question with the
  confident partial answers (and where each came from) and writes the answer, in rounds when they do
  not fit one window. No confident partial answer: the answer says the document does not seem to
  contain it.
- auto: one read when prompt + document fit the window, map when they do not.

Yields progress (PhaseProgress) and the answer's text (engine.Piece), then one LongRecord.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from ..doctokens import tokenize_document
from ..engine import Engine, Piece, Progress, Record, Request, Sequence
from ..errors import SentiricError
from ..prompt import MARK, layout
from .mapreduce import NOT_FOUND, LongRecord, MapJob, Phase, clean, like

STRATEGIES = ("auto", "window", "map")


@dataclass
class PhaseProgress:
    phase: str  # "read", "map", "reduce 1", ...
    done: int
    total: int


def run_pool(engine: Engine, requests: list[Request]) -> Iterator[tuple[int, Record]]:
    """Read `requests` through the context's sequence slots with continuous batching; yield (index, record).

    At most n_seq_max at once; when one finishes, its slot (cleared by the engine) takes the next.
    """
    todo = deque(enumerate(requests))
    free = list(range(engine.ctx.n_seq_max))[::-1]
    active: dict[int, tuple[int, Sequence]] = {}
    try:
        while todo or active:
            while todo and free:
                i, r = todo.popleft()
                sid = free.pop()
                active[sid] = (i, Sequence(engine, sid, r))
            engine.step([s for _, s in active.values() if not s.done])
            for sid, (i, s) in list(active.items()):
                records = [e for e in s.events if isinstance(e, Record)]
                s.events.clear()
                if s.done:
                    s.close()
                    del active[sid]
                    free.append(sid)
                    yield i, records[-1]
    finally:
        for _, s in active.values():
            s.finish("interrupted")
            s.close()


def answer(engine: Engine, prompt: str, document: str | None, strategy: str = "auto", *, instruction: str,
           raw: bool = False, base: Request | None = None, progress=None) -> Iterator:
    """Answer `prompt` over `document`; yields PhaseProgress and Piece events, then one LongRecord.

    base: the sampling settings and answer length of the answer. A bare prompt (no document) streams
    through the window whatever the strategy. progress(chars, total) reports tokenization.
    """
    if strategy not in STRATEGIES:
        raise SentiricError(f"unknown strategy {strategy!r}", f"one of {', '.join(STRATEGIES)}")
    base = base or Request(head=[])
    if not document:
        lay = layout(engine.model, prompt, None, instruction, raw, progress=progress)
        yield from _read(engine, like(base, lay.head, lay.body, lay.tail), "window", [], [])
        return
    t0 = time.perf_counter()
    tokens = tokenize_document(engine.model, document, progress=progress)
    phases = [Phase("tokenize", len(tokens), 0, time.perf_counter() - t0)]
    window = engine.ctx.n_ctx_seq
    req = one_read(engine.model, window, prompt, tokens, strategy, instruction, raw, base)
    if req is not None:
        yield from _read(engine, req, "window" if strategy == "window" else "single", tokens, phases)
        return
    yield from _map(engine, MapJob(engine.model, window, prompt, tokens, raw, base), phases)


def one_read(model, window: int, prompt: str, tokens: list[int], strategy: str, instruction: str, raw: bool,
             base: Request) -> Request | None:
    """The request that reads the whole document at once, for `window`, or for `auto` when it fits; else None (map)."""
    lay = layout(model, prompt, MARK, instruction, raw)  # for its head and tail around the document
    fits = len(lay.head) + len(tokens) + len(lay.tail) + min(base.max_tokens, window // 4) <= window
    if strategy == "window" or (strategy == "auto" and fits):
        return like(base, lay.head, tokens, lay.tail)
    return None


def _read(engine: Engine, req: Request, name: str, tokens: list[int], phases: list[Phase]) -> Iterator:
    t0 = time.perf_counter()
    record = None
    events = engine.stream(req)
    ev = next(events, None)
    while ev is not None:
        if isinstance(ev, Record):
            record = ev
        try:
            if isinstance(ev, Progress):
                yield PhaseProgress("read", ev.prefilled, ev.total)
            elif isinstance(ev, Piece):
                yield ev
            ev = next(events, None)
        except KeyboardInterrupt:  # thrown in by a consumer interrupted while printing: the engine ends cleanly
            try:
                ev = events.throw(KeyboardInterrupt())
            except StopIteration:
                ev = None
    phase = Phase("read", record.prompt_tokens - record.reused_tokens, record.generated_tokens, time.perf_counter() - t0)
    yield LongRecord(name, record.text, True, len(tokens), phases=[*phases, phase], finish_reason=record.finish_reason,
                     window_record=record, tokens=tokens)


def _map(engine: Engine, job: MapJob, phases: list[Phase]) -> Iterator:
    t0 = time.perf_counter()
    read = gen = 0
    n = len(job.chunks)
    yield PhaseProgress("map", 0, n)
    for done, (i, rec) in enumerate(run_pool(engine, job.map_requests()), 1):
        job.add_partial(i, rec)
        read += rec.prompt_tokens
        gen += rec.generated_tokens
        yield PhaseProgress("map", done, n)
    phases = [*phases, Phase("map", read, gen, time.perf_counter() - t0)]
    items = job.confident()
    if not items:
        yield Piece(NOT_FOUND)
        yield job.record(NOT_FOUND, phases)
        return
    rounds = 0
    while True:
        rounds += 1
        groups = job.groups(items)
        t0 = time.perf_counter()
        yield PhaseProgress(f"reduce {rounds}", 0, len(groups))
        if len(groups) == 1:
            final = None
            for ev in engine.stream(job.reduce_request(groups[0], final=True)):
                if isinstance(ev, Record):  # a short answer: sent whole once cleaned, not token by token
                    final = ev
            text = clean(final.text)
            yield Piece(text)
            yield PhaseProgress(f"reduce {rounds}", 1, 1)
            phases.append(Phase(f"reduce {rounds}", final.prompt_tokens, final.generated_tokens,
                                time.perf_counter() - t0))
            yield job.record(text, phases, rounds, final)
            return
        merged, read, gen = [None] * len(groups), 0, 0
        for i, rec in run_pool(engine, [job.reduce_request(g, final=False) for g in groups]):
            merged[i] = job.merged(groups[i], rec)
            read += rec.prompt_tokens
            gen += rec.generated_tokens
        phases.append(Phase(f"reduce {rounds}", read, gen, time.perf_counter() - t0))
        items = [p for p in merged if p.answer] or merged
