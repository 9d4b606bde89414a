"""`window`, `map` and `auto`: how `sentiric run` answers one question over a document of any length.

- window: the whole document streams through one shifting window (the engine as it is): memory is
  bounded, but the answer comes from what is left in the window at the end.
- map: the document is split into passages (chunks.py), each read fresh in its own sequence, `threads` at
  a time in one context (continuous batching: a finished passage's slot takes the next one). How they are
  read and combined depends on the question's kind (kinds.py: lookup, list, yes/no, overview; mapreduce.py):
  facts come as quotes located in their passage and checked against the model's own baseline, cited by
  sentence; an overview collapses the chunks' summaries in rounds. Nothing supported: the answer says the
  document does not seem to contain it.
- auto: one read when prompt + document fit the window, map when they do not.

Yields progress (PhaseProgress) and the answer's text (engine.Piece), then one LongRecord.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.doctokens import tokenize_document
from sentiric_cli.engine.loop import run_pool
from sentiric_cli.engine.prompt import MARK, layout
from sentiric_cli.engine.types import Piece, Progress, Record, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.longdoc.mapreduce import LongRecord, MapJob, Phase
from sentiric_cli.longdoc.protocol import Protocol, protocol

STRATEGIES = ("auto", "window", "map")


@dataclass
class PhaseProgress:
    phase: str  # "read", "map", "reduce 1", ...
    done: int
    total: int
    shares: dict[str, int] | None = None  # run --backend: requests each backend has answered so far


def answer(engine: Engine, prompt: str, document: str | None, strategy: str = "auto", *, instruction: str,
           raw: bool = False, base: Request | None = None, progress=None, kind: str | None = None) -> Iterator:
    """Answer `prompt` over `document`; yields PhaseProgress and Piece events, then one LongRecord.

    base: the sampling settings and answer length of the answer. kind: the question's kind (None: from its
    wording). A bare prompt (no document) streams through the window whatever the strategy. progress(chars,
    total) reports tokenization.
    """
    if strategy not in STRATEGIES:
        raise SentiricError(f"unknown strategy {strategy!r}", f"one of {', '.join(STRATEGIES)}")
    base = base or Request(head=[])
    if not document:
        lay = layout(engine.model, prompt, None, instruction, raw, progress=progress)
        yield from _read(engine, base.reading(lay.head, lay.body, lay.tail), "window", [], [])
        return
    t0 = time.perf_counter()
    tokens = tokenize_document(engine.model, document, progress=progress)
    phases = [Phase("tokenize", len(tokens), 0, time.perf_counter() - t0)]
    window = engine.ctx.n_ctx_seq
    req = one_read(engine.model, window, prompt, tokens, strategy, instruction, raw, base)
    if req is not None:
        yield from _read(engine, req, "window" if strategy == "window" else "single", tokens, phases)
        return
    yield from _map(engine, MapJob(engine.model, window, prompt, tokens, raw, base, kind=kind), phases)


def one_read(model, window: int, prompt: str, tokens: list[int], strategy: str, instruction: str, raw: bool,
             base: Request) -> Request | None:
    """The request that reads the whole document at once, for `window`, or for `auto` when it fits; else None (map)."""
    lay = layout(model, prompt, MARK, instruction, raw)  # for its head and tail around the document
    fits = len(lay.head) + len(tokens) + len(lay.tail) + min(base.max_tokens, window // 4) <= window
    if strategy == "window" or (strategy == "auto" and fits):
        return base.reading(lay.head, tokens, lay.tail)
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
    assert record is not None  # the engine ends every sequence with its record
    phase = Phase("read", record.prompt_tokens - record.reused_tokens, record.generated_tokens, time.perf_counter() - t0)
    yield LongRecord(name, record.text, True, len(tokens), phases=[*phases, phase], finish_reason=record.finish_reason,
                     window_record=record, tokens=tokens)


def _map(engine: Engine, job: MapJob, phases: list[Phase]) -> Iterator:
    """The map-reduce through this engine's slots (drive), then the answer as one piece (short: sent whole, once
    cleaned of the listing's part labels) and the record."""
    record = yield from drive(engine, protocol(job, phases))
    yield Piece(record.answer)
    yield record


def drive(engine: Engine, steps: Protocol) -> Generator[PhaseProgress, None, LongRecord]:
    """The synchronous driver of the map-reduce protocol: each round through run_pool, progress per record."""
    return (yield from rounds(steps, lambda name, requests: run_pool(engine, requests)))


def rounds(steps: Protocol, run: Callable[[str, list[Request]], Iterable[tuple[int, Record]]],
           shares: Callable[[], dict[str, int]] | None = None) -> Generator[PhaseProgress, None, LongRecord]:
    """Drive the protocol: each round's requests through run(name, requests), which yields (index, record) in any
    order; progress per record (with shares(), who answered how many). This driver and remote.py's use it."""
    try:
        step = next(steps)
        while True:
            n = len(step.requests)
            recs: list[Record | None] = [None] * n
            yield PhaseProgress(step.name, 0, n, shares() if shares else None)
            for done, (i, rec) in enumerate(run(step.name, step.requests), 1):
                recs[i] = rec
                yield PhaseProgress(step.name, done, n, shares() if shares else None)
            step = steps.send(recs)  # type: ignore[arg-type]  # every request has its record by now
    except StopIteration as end:
        return end.value
