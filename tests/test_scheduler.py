"""The scheduler in-process (no HTTP): which free slot a request takes, and what of its prompt is not read again."""

from __future__ import annotations

import asyncio

from sentiric_cli.engine import Engine, Record, Request
from sentiric_cli.scheduler import Scheduler
from sentiric_cli.settings import Settings


def test_busy_slots_stay_together_and_a_prompt_mostly_held_goes_back_to_its_slot(micro):
    """llama.cpp decodes each run of consecutive KV streams as a graph of its own: a request that no free slot
    holds half of takes the lowest free slot, not the one with a longer short match further up (nor the one idle
    longest). A continuation of a held prompt takes that prompt's slot and does not read it again."""
    with Engine(Settings(context_size=512, threads=4), micro) as e:
        m = e.model
        sched = Scheduler(e, 8)
        text = [[m.bos] + m.tokenize(f"Chapter {i}. The old lighthouse keeper climbed the stairs") for i in range(3)]

        def slot_of(job) -> int:
            return next(i for i, pair in enumerate(sched.slots) if pair is not None and pair[1] is job)

        jobs = []

        async def ask(prompt: list[int], max_tokens: int, seen: list | None = None, grammar: str | None = None):
            job = sched.submit(Request(head=prompt, max_tokens=max_tokens, temperature=0.0, grammar=grammar))
            jobs.append(job)
            got = None
            while (ev := await job.events.get()) is not None:
                if seen is not None and not seen:
                    seen.append(slot_of(job))  # its first event: it has a slot and runs
                if isinstance(ev, Record):
                    got = ev
            return got

        async def main():
            # slot 0, busy until cancelled: its grammar never lets it end
            long = asyncio.create_task(ask(text[0], 10**6, grammar='root ::= "ab" root'))
            while not jobs or not jobs[0].running:
                await asyncio.sleep(0.001)
            other = [m.bos] + m.tokenize("Zebras run fast across the plain")
            # slots 1 and 2 at once, then free: 1 holds the zebras, 2 a prompt much like the next one
            _, short = await asyncio.gather(ask(other, 4), ask(text[1], 4))
            seen: list[int] = []
            third = await ask(text[2], 4, seen)  # shares "<bos>Chapter " with slot 2's cache: no half of it
            more = await ask(text[2] + m.tokenize(" and"), 4)  # a continuation of what slot 1 now holds
            jobs[0].cancel()
            await long
            return short, third, seen[0], more

        try:
            short, third, third_slot, more = asyncio.run(main())
        finally:
            sched.shutdown(5)
    assert third_slot == 1  # the lowest free slot (the longest match, slot 2, was the choice before)
    assert third.reused_tokens < len(text[2]) // 2
    assert more.reused_tokens >= len(text[2])  # the whole earlier prompt, kept in slot 1
