"""Padded decode steps (padding.py): when they pad, that the real rows are unaffected, and the caches after."""

from __future__ import annotations

import numpy as np
import pytest

from sentiric_cli.engine.bindings import Batch, Context, Model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.padding import StepCosts, pad
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.settings import Settings

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text


def test_pads_only_to_a_clearly_cheaper_size():
    costs = StepCosts([0.0, 10, 20, 30, 40, 50, 60, 70, 45])
    assert [costs.target(n) for n in range(1, 9)] == [1, 2, 3, 4, 8, 8, 8, 8]
    assert StepCosts([0.0, 10, 20, 30, 29]).target(3) == 3  # 29 is within the 5% margin of 30: noise
    assert StepCosts([0.0, 10, 20, 30, 40]).target(2) == 2  # costs that only grow: never pad
    assert StepCosts().target(5) == 5  # not measured: never pad


def test_live_step_times_overrule_the_start_measurement():
    costs = StepCosts([0.0, 10, 20, 30, 40, 50, 60, 70, 45])
    picks = [costs.choose(6) for _ in range(16)]
    assert picks.count(8) == 14 and picks.count(6) == 2  # padded, and one decision in 8 the other way
    for _ in range(16):  # serving, padded steps turn out slower than plain ones
        costs.observe(6, True, 0.080)
        costs.observe(6, False, 0.060)
    picks = [costs.choose(6) for _ in range(16)]
    assert picks.count(6) == 14 and picks.count(8) == 2  # plain now, still trying padded now and then
    for _ in range(16):  # and the other way round again
        costs.observe(6, True, 0.040)
    assert costs.choose(6) == 8 or costs.choose(6) == 8
    costs.observe(4, True, 1.0)  # a row count that is never padded keeps no live times
    assert (4, True) not in costs.live


def _prefill(ctx, batch, model, seqs, texts):
    for s, text in zip(seqs, texts, strict=True):
        toks = [model.bos] + model.tokenize(text)
        batch.clear()
        for i, t in enumerate(toks):
            batch.add(t, i, s, i == len(toks) - 1)
        ctx.decode(batch)
    return {s: ctx.seq_pos_max(s) + 1 for s in seqs}


def test_padding_rows_leave_the_real_rows_and_the_idle_caches_as_they_were(bundled):
    """6 real rows padded with 2 throw-away rows compute exactly what 6 real rows beside 2 real ones do, and
    the idle sequences' caches (a cached prompt in one of them) are as before the step."""
    s = Settings(context_size=256, threads=8)
    model = Model(bundled, s)
    ctx, batch = Context(model, s), Batch(256)
    try:
        texts = [f"Chapter {i}. The keeper climbed the stairs and" for i in range(8)]
        pos = _prefill(ctx, batch, model, range(8), texts)
        nxt = {i: model.tokenize(" the")[0] for i in range(8)}

        def step(real, extra):
            batch.clear()
            idx = {i: batch.add(nxt[i], pos[i], i, True) for i in real}
            added = extra(batch)
            ctx.decode(batch, prompt=False)
            out = {i: ctx.logits(j) for i, j in idx.items()}
            for i in real:
                ctx.seq_rm(i, pos[i], -1)
            return out, added

        before = {i: (ctx.seq_pos_min(i), ctx.seq_pos_max(i)) for i in (6, 7)}
        padded, added = step(range(6), lambda b: pad(ctx, b, [6, 7], 8, ctx.n_ctx_seq, model.bos))
        assert added == [(6, pos[6]), (7, pos[7])]
        for seq, first in added:
            ctx.seq_rm(seq, first, -1)
        assert {i: (ctx.seq_pos_min(i), ctx.seq_pos_max(i)) for i in (6, 7)} == before
        eight, _ = step(range(8), lambda b: [])
        six, _ = step(range(6), lambda b: [])
        for i in range(6):
            np.testing.assert_array_equal(padded[i], eight[i])  # the row count decides, not the other rows
        # (and six alone may differ from eight in the last bits: llama.cpp is not batch-invariant)
        assert all(int(six[i].argmax()) == int(eight[i].argmax()) for i in range(6))
    finally:
        batch.close()
        ctx.close()
        model.close()


def test_the_engine_pads_steps_and_every_request_completes(bundled):
    s = Settings(context_size=256, threads=8, max_tokens=12)
    with Engine(s, bundled) as e:
        e.costs = StepCosts([0.0, 1, 2, 3, 4, 5, 9, 9, 1])  # pad every step of 5 to 7 rows to 8
        steps = []
        real_decode = e.ctx.decode
        e.ctx.decode = lambda b, prompt=True, **kw: (steps.append((len(b), prompt)), real_decode(b, prompt, **kw))[1]
        reqs = [Request.from_settings(s, [e.model.bos] + e.model.tokenize(f"Story {i}: once upon a time"),
                                      max_tokens=12) for i in range(6)]
        records = {i: ev for i, ev in e.stream_many(reqs) if isinstance(ev, Record)}
        assert sorted(records) == list(range(6))
        assert all(r.generated_tokens == 12 or r.finish_reason == "stop" for r in records.values())
        assert (8, False) in steps, steps  # decode-only steps of 6 ran as 8
        assert all(e.ctx.seq_pos_max(i) == -1 for i in (6, 7))  # the idle slots hold nothing afterwards


@pytest.mark.parametrize("threads", [1, 4])
def test_measured_costs_cover_every_row_count(bundled, threads):
    s = Settings(context_size=256, threads=threads)
    with Engine(s, bundled) as e:
        e.measure_steps()
        if threads == 1:
            assert e.costs.cap == -1  # one sequence: nothing to pad with
        else:
            assert e.costs.cap == threads and all(x > 0 for x in e.costs.seconds[1:])
        assert all(e.ctx.seq_pos_max(i) == -1 for i in range(threads))  # measured on an idle context, left so


def test_a_model_too_slow_to_measure_is_never_padded(bundled):
    s = Settings(context_size=256, threads=4)
    with Engine(s, bundled) as e:
        costs = StepCosts.measure(e.ctx, e.batch, e.model.bos, 4, 4, budget_s=1e-6)
        assert costs.cap == -1 and costs.target(3) == 3
        assert all(e.ctx.seq_pos_max(i) == -1 for i in range(4))
