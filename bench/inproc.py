"""The scheduler in-process, no HTTP (so the step is what is measured): clients each sending requests one after
another, as the padding and sampling benchmarks drive it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.serve.scheduler import Scheduler
from sentiric_cli.settings import Settings


def serve_clients(engine: Engine, settings: Settings, clients: int, per_client: int = 3, max_tokens: int = 96,
                  started: Callable[[], None] | None = None) -> tuple[float, int]:
    """Wall seconds and generated tokens for `clients` clients sending `per_client` non-streamed requests each
    (temperature 0). `started` runs once the scheduler is up (after its start-up step measurement)."""
    sched = Scheduler(engine, 64)
    if started:
        started()
    generated = 0

    async def client(i: int) -> None:
        nonlocal generated
        for k in range(per_client):
            head = [engine.model.bos] + engine.model.tokenize(f"Chapter {i + k}. The old lighthouse keeper climbed")
            job = sched.submit(Request.from_settings(settings, head, max_tokens=max_tokens, sampling=SamplingParams()),
                               stream=False)
            while (ev := await job.events.get()) is not None:
                if isinstance(ev, Record):
                    generated += ev.generated_tokens

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return time.perf_counter() - t0

    try:
        wall = asyncio.run(main())
    finally:
        sched.shutdown(5)
    return wall, generated
