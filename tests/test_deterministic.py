"""The deterministic setting (engine/deterministic.py): the same greedy answer for the same request under any load."""

from __future__ import annotations

import asyncio

import pytest
from test_scheduler import _ask

from sentiric_cli.engine.core import Engine
from sentiric_cli.serve.scheduler import Scheduler
from sentiric_cli.settings import Settings

pytestmark = pytest.mark.text

PROMPTS = ["The history of the old lighthouse begins", "In the morning the baker opened", "A list of the rivers of Europe:",
           "Once upon a time, in a small village by the sea,", "The recipe calls for three eggs and",
           "Dear committee members, I am writing to", "The first law of thermodynamics states that"]


def test_the_same_load_twice_and_the_same_request_alone_twice_give_the_same_answers(bundled):
    """Seven greedy requests at once over four slots (arrival order and slots up to the event loop), twice; then the
    first alone, twice, on a server that has served others meanwhile. Every answer to a prompt is the same, to the
    bit of every logit: under load, alone, in any slot."""
    settings = Settings(context_size=512, threads=4, deterministic=True, max_tokens=24)
    with Engine(settings, bundled) as e:
        prompts = [e.model.tokenize(p, add_special=True) for p in PROMPTS]
        sched = Scheduler(e, 16)

        async def load():
            return await asyncio.gather(*(_ask(sched, p, 24) for p in prompts))

        async def alone():
            return await _ask(sched, prompts[0], 24)

        try:
            first, second = asyncio.run(load()), asyncio.run(load())
            solo = [asyncio.run(alone()), asyncio.run(alone())]
        finally:
            sched.shutdown(5)
    for a, b in zip(first, second, strict=True):
        assert a.tokens == b.tokens
        assert all((x == y).all() for x, y in zip(a.logits, b.logits, strict=True))
    for r in solo:
        assert r.tokens == first[0].tokens
        assert all((x == y).all() for x, y in zip(r.logits, first[0].logits, strict=True))
        assert r.reused_tokens == 0  # no cache reuse: a kept prefix was computed in another step's shape
