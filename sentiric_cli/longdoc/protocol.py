"""The map-reduce as a protocol without I/O: rounds of requests out, records back in.

`protocol(job)` is a generator: it yields a Round (a name and its requests), is sent the Round's records (in
request order), and returns the LongRecord. It reads nothing and runs nothing itself: strategies.drive runs it
through the engine's slot loop (`sentiric run`), serve/longdoc.drive through the server's scheduler (shared with
other requests). The rounds, facts: map (every passage's relevance), read (the most relevant passages' quotes),
check (each quote with a neutral question, and after an empty excerpt; an echo's sentence also as asked), alone
(each sentence that holds the question's words, read by itself: does the reader say it answers?);
overview: map (every chunk's summary), then reduce rounds until one group is left, whose reduce writes the answer,
then the outline. mapreduce.py says why each round is there.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

from sentiric_cli.engine.types import Record, Request
from sentiric_cli.longdoc.mapreduce import LongRecord, MapJob, Phase, clean


@dataclass
class Round:
    name: str  # "map", "reduce 1", ...
    requests: list[Request]


Protocol = Generator[Round, list[Record], LongRecord]


def protocol(job: MapJob, phases: list[Phase]) -> Protocol:
    """The map-reduce over `job`: yields each Round, is sent its records, returns the LongRecord. `phases`: those
    before it (tokenize); each round's is added (tokens read and written, seconds from its yield to its records)."""
    phases = list(phases)

    def ran(name: str, recs: list[Record], t0: float) -> None:
        phases.append(Phase(name, sum(r.prompt_tokens - r.reused_tokens for r in recs),
                            sum(r.generated_tokens for r in recs), time.perf_counter() - t0))

    if job.kind == "overview":
        return (yield from _collapse(job, phases, ran))
    t0 = time.perf_counter()
    recs = yield Round("map", job.map_requests())
    job.add_map(recs)
    ran("map", recs, t0)
    chosen, t0 = job.selected(), time.perf_counter()
    recs = yield Round("read", job.read_requests(chosen))
    ran("read", recs, t0)
    if job.kind == "yesno":
        job.add_yesno(chosen, *recs)
        return job.record(phases)
    for i, rec in zip(chosen, recs, strict=True):
        job.add_read(i, rec)
    checks, t0 = job.check_requests(), time.perf_counter()
    if checks:
        recs = yield Round("check", checks)
        job.add_checks(recs)
        ran("check", recs, t0)
    job.add_held(chosen)
    alone, t0 = job.alone_requests(), time.perf_counter()
    if alone:
        recs = yield Round("alone", alone)
        job.add_alone(recs)
        ran("alone", recs, t0)
    return job.record(phases)


def _collapse(job: MapJob, phases: list[Phase], ran) -> Protocol:
    """Overview: each chunk's summary, then rounds of combining them until one group is left, whose combination
    (with the user's sampling) is the answer."""
    t0 = time.perf_counter()
    recs = yield Round("map", job.map_requests())
    job.add_map(recs)
    ran("map", recs, t0)
    items = job.summaries()
    if not items:
        return job.overview_record("", phases, 0, None)
    rounds = 0
    while True:
        rounds += 1
        name, groups, t0 = f"reduce {rounds}", job.groups(items), time.perf_counter()
        if len(groups) == 1:
            (final,) = yield Round(name, [job.reduce_request(groups[0], final=True)])
            ran(name, [final], t0)
            return job.overview_record(clean(final.text), phases, rounds, final)
        recs = yield Round(name, [job.reduce_request(g, final=False) for g in groups])
        ran(name, recs, t0)
        merged = [job.merged(g, r) for g, r in zip(groups, recs, strict=True)]
        items = [p for p in merged if p.answer] or merged
