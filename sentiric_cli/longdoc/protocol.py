"""The map-reduce as a protocol without I/O: rounds of requests out, records back in.

`protocol(job)` is a generator: it yields a Round (a name and its requests), is sent the Round's records (in
request order), and returns the LongRecord. It reads nothing and runs nothing itself: strategies.drive runs it
through the engine's slot loop (`sentiric run`), serve/longdoc.drive through the server's scheduler (shared with
other requests). The rounds: the map (one greedy partial answer per chunk), then reduce rounds until one
group of confident partial answers is left, whose reduce writes the answer.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

from sentiric_cli.engine.types import Record, Request
from sentiric_cli.longdoc.mapreduce import NOT_FOUND, LongRecord, MapJob, Phase, clean


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
        phases.append(Phase(name, sum(r.prompt_tokens for r in recs), sum(r.generated_tokens for r in recs),
                            time.perf_counter() - t0))

    t0 = time.perf_counter()
    recs = yield Round("map", job.map_requests())
    for i, rec in enumerate(recs):
        job.add_partial(i, rec)
    ran("map", recs, t0)
    items = job.confident()
    if not items:
        return job.record(NOT_FOUND, phases)
    rounds = 0
    while True:
        rounds += 1
        name, groups, t0 = f"reduce {rounds}", job.groups(items), time.perf_counter()
        if len(groups) == 1:
            (final,) = yield Round(name, [job.reduce_request(groups[0], final=True)])
            ran(name, [final], t0)
            return job.record(clean(final.text), phases, rounds, final)
        recs = yield Round(name, [job.reduce_request(g, final=False) for g in groups])
        ran(name, recs, t0)
        merged = [job.merged(g, r) for g, r in zip(groups, recs, strict=True)]
        items = [p for p in merged if p.answer] or merged
