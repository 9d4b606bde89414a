"""The scheduler in-process (no HTTP): which free slot a request takes, and what of its prompt is not read again."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.serve.scheduler import COPY_GAIN, Scheduler
from sentiric_cli.settings import Settings

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text


def test_busy_slots_stay_together_and_a_prompt_mostly_held_goes_back_to_its_slot(micro):
    """llama.cpp decodes each run of consecutive KV streams as a graph of its own: a request runs in the lowest
    free slot, not in the one with a longer short match further up (nor in the one idle longest). A continuation
    of what that slot then holds does not read it again."""
    with Engine(Settings(context_size=512, threads=4), micro) as e:
        m = e.model
        sched = Scheduler(e, 8)
        text = [[m.bos] + m.tokenize(f"Chapter {i}. The old lighthouse keeper climbed the stairs") for i in range(3)]

        def slot_of(job) -> int:
            return next(i for i, tag in enumerate(sched.loop.tags) if tag is job)

        jobs = []

        async def ask(prompt: list[int], max_tokens: int, seen: list | None = None, grammar: str | None = None):
            job = sched.submit(Request(head=prompt, max_tokens=max_tokens, sampling=SamplingParams(grammar=grammar)))
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
            third = await ask(text[2], 4, seen)  # shares only "<bos>Chapter " with slot 2's cache
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


async def _ask(sched: Scheduler, prompt: list[int], max_tokens: int = 4, **kw) -> Record:
    job = sched.submit(Request(head=prompt, max_tokens=max_tokens, trace=True, **kw), stream=False)
    record = None
    while (ev := await job.events.get()) is not None:
        if isinstance(ev, Exception):
            raise ev
        if isinstance(ev, Record):
            record = ev
    return record


def _serve(path, settings: Settings, main) -> tuple[object, Scheduler]:
    """Run main(scheduler) on a fresh engine and scheduler; returns its result and the (stopped) scheduler."""
    with Engine(settings, path) as e:
        sched = Scheduler(e, 8)
        try:
            return asyncio.run(main(sched)), sched
        finally:
            sched.shutdown(5)


def _fresh(path, settings: Settings, prompt: list[int]) -> Record:
    return _serve(path, settings, lambda s: _ask(s, prompt))[0]


def _same_logits(a: Record, b: Record, within: float = 1e-3) -> bool:
    """Same tokens, logits apart by at most `within` of their largest: a prompt read in other chunks rounds
    differently (up to 3e-4 here), a cache missing a part of it is off by a large share."""
    return a.tokens == b.tokens and all(np.max(np.abs(x - y)) <= within * np.max(np.abs(y))
                                        for x, y in zip(a.logits, b.logits, strict=True))


def test_a_prompt_held_by_a_higher_slot_is_copied_down_to_the_lowest_free_one(micro):
    """Busy slots stay together even when the prompt's start is cached further up: that cache is copied to the
    lowest free slot (not read again), and the slot it came from keeps it."""
    settings = Settings(context_size=512, threads=4)
    with Engine(settings, micro) as e:
        m = e.model
        zebras = [m.bos] + m.tokenize("Zebras run fast across the plain. " * 3)
        keeper = [m.bos] + m.tokenize("The old lighthouse keeper climbed the stairs. " * 2)
        more = keeper + m.tokenize(" At the top he lit the lamp")
    assert len(keeper) > 2 * COPY_GAIN and len(more) < 2 * len(keeper)

    async def main(sched):
        busy = asyncio.create_task(_ask(sched, zebras[:5], 10**6, sampling=SamplingParams(grammar='root ::= "ab" root')))  # slot 0
        while not sched.loop.seqs[0]:
            await asyncio.sleep(0.001)
        await asyncio.gather(_ask(sched, zebras), _ask(sched, keeper))  # slots 1 and 2, then free
        assert sched.cached[2][:len(keeper)] == keeper
        got = await _ask(sched, more)
        held = sched.cached[1][:len(more)] == more, sched.cached[2][:len(keeper)] == keeper
        sched.loop.tags[0].cancel()
        await busy
        return got, held

    (got, held), sched = _serve(micro, settings, main)
    assert sched.counters.copied_prefixes == 1
    assert got.reused_tokens == len(keeper)  # keeper's cache, now in slot 1 beside slot 0
    assert held == (True, True)  # the new prompt ran in slot 1; slot 2 still holds keeper
    assert _same_logits(got, _fresh(micro, settings, more))


def test_a_sliding_window_cache_is_reused_only_where_it_still_holds_the_window(bundled):
    """Gemma 3 keeps 512 + ubatch positions in its sliding-window layers: a cached 4k-token prompt cannot be
    taken back to its first 1100 tokens (the window before them is gone), so it is read again; a prompt that
    goes on from near the end of a cached one is not."""
    settings = Settings(context_size=4096, threads=2)
    with Engine(settings, bundled) as e:
        m = e.model
        text = [m.bos] + m.tokenize(" ".join(f"item{i} is blue and item{i + 1} is red;" for i in range(300)))
        question = m.tokenize(" The pass key is 71423. Remember it. What is the pass key? The pass key is")
    early, late = text[:1100] + question, text[:1190] + question
    assert len(text) > 3000

    async def main(sched):
        return [await _ask(sched, p) for p in (text, early, text[:1200], late)]

    (_, early_got, _, late_got), _ = _serve(bundled, settings, main)
    assert early_got.reused_tokens == 0
    assert _same_logits(early_got, _fresh(bundled, settings, early))  # 7.8 of 30 apart when it was reused
    assert late_got.reused_tokens == 1190
    assert late_got.tokens == _fresh(bundled, settings, late).tokens


def test_a_recurrent_state_is_reused_only_by_a_prompt_that_goes_on_from_its_end(synth):
    """A recurrent state holds its last position only: a prompt sharing most but not all of the cached tokens
    is read again from the start; one that continues them is not, also when the state is in another slot and is
    copied down to the lowest free one."""
    path = synth("mamba", n_vocab=1024, n_embd=64, n_ff=128)
    settings = Settings(context_size=256, threads=2)
    with Engine(settings, path) as e:
        m = e.model
        prompt = [m.bos] + m.tokenize("hello world, this is a recurrent model speaking " * 2)
        other = prompt[:-3] + m.tokenize(" and something else")
        then = m.tokenize(" then more")

    async def main(sched):
        await _ask(sched, prompt)
        held = list(sched.cached[0])
        diverging = await _ask(sched, other)
        await _ask(sched, prompt)
        going_on = held + then
        continued = await _ask(sched, going_on)
        await asyncio.gather(_ask(sched, other), _ask(sched, prompt))  # slot 0: other; slot 1: prompt's state
        copied = await _ask(sched, going_on)  # slot 0, from slot 1's state
        return diverging, going_on, continued, copied

    (diverging, going_on, continued, copied), sched = _serve(path, settings, main)
    assert diverging.reused_tokens == 0
    assert _same_logits(diverging, _fresh(path, settings, other))
    fresh = _fresh(path, settings, going_on)
    assert continued.reused_tokens == copied.reused_tokens == len(going_on) - len(then)
    assert sched.counters.copied_prefixes == 1
    assert _same_logits(continued, fresh) and _same_logits(copied, fresh)
