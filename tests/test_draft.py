"""Prompt-lookup drafting (engine/draft.py): proposals from the request's own text, checked in one decode, the
same answer as without them."""

from __future__ import annotations

import numpy as np
import pytest

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.draft import Acceptance, Lookup, choose_k, expected_tokens
from sentiric_cli.engine.padding import StepCosts
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.settings import Settings

PARAGRAPH = ("The lighthouse keeper climbed the one hundred and twelve stairs every evening at dusk, carrying a can of "
             "oil and a rag, and he polished the great lens until it shone like a second moon over the harbour. ")
QUOTE = "Repeat the paragraph exactly.\n\nParagraph: " + PARAGRAPH + "\n\nRepeated paragraph: "


def test_the_longest_earlier_match_proposes_what_followed_it():
    lk = Lookup([5, 1, 2, 3, 4, 9, 1, 2, 7, 8])
    lk.push(1)
    lk.push(2)  # the history ends "1 2": last seen before at index 6, followed by 7 8
    assert lk.propose(3) == [7, 8, 1]
    lk.push(3)  # "1 2 3" occurred once, at the start: the longer match wins over "2 3"
    assert lk.propose(2) == [4, 9]
    assert Lookup([1, 2, 3]).propose(4) == []  # nothing repeats yet
    lk.push(42)
    assert lk.propose(4) == []  # "3 42" never occurred


def test_a_deterministic_server_never_drafts_whatever_a_request_asks():
    assert Request.from_settings(Settings(draft_tokens=8), [1], [2]).draft == 8
    assert Request.from_settings(Settings(draft_tokens=8), [1], [2], draft=3).draft == 3  # a request's own setting
    assert Request.from_settings(Settings(draft_tokens=8, deterministic=True), [1], [2], draft=3).draft == 0


def test_the_draft_length_follows_measured_step_costs_and_the_acceptance_rate():
    flat = [0.0] + [0.01] * 9  # rows cost nothing extra (a memory-bound step): draft as long as it pays
    steep = [0.0] + [0.01 * r for r in range(1, 10)]  # every row costs a step: never worth it
    assert choose_k(flat, 0.9, 8) == 8
    assert choose_k(steep, 0.9, 8) == 0
    assert choose_k(flat, 0.05, 8) <= 1  # rarely kept: one row at most
    assert choose_k([], 0.9, 5) == 5  # not measured: rows taken as free
    assert choose_k(flat, 0.9, 0) == 0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    acc = Acceptance()
    assert acc.rate == 0.5
    acc.observe(4, 4)
    acc.observe(4, 1)
    assert acc.drafted == 8 and acc.accepted == 5 and acc.rate == pytest.approx(6 / 8)


def _answer(engine: Engine, prompt: str, sampling: SamplingParams = SamplingParams(), max_tokens: int = 40) -> Record:
    toks = engine.model.tokenize(prompt, add_special=True)
    req = Request.from_settings(engine.settings, toks, max_tokens=max_tokens, sampling=sampling, trace=True)
    return [e for e in engine.stream(req) if isinstance(e, Record)][-1]


def _same_or_near_tie(a: Record, b: Record, within: float = 0.05) -> bool:
    """The same tokens, or the first difference at a near-tie of b's two best logits: a draft's rows are computed
    in a step of several rows, which rounds differently from a step of one (llama.cpp is not batch-invariant)."""
    for i, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=False)):
        if x != y:
            top = np.sort(b.logits[i])[-2:]
            return float(top[1] - top[0]) <= within * float(np.abs(top[1]))
    return len(a.tokens) == len(b.tokens)


@pytest.mark.text
def test_a_quoting_answer_is_the_same_with_drafts_in_fewer_steps(bundled):
    with Engine(Settings(context_size=1024, threads=1, draft_tokens=8), bundled) as e:
        e.draft_costs = StepCosts()  # rows taken as free: drafts whatever this machine's step costs
        drafted = _answer(e, QUOTE)
    with Engine(Settings(context_size=1024, threads=1, draft_tokens=0), bundled) as e:
        plain = _answer(e, QUOTE)
    assert "lighthouse keeper climbed" in plain.text  # the model does quote it
    assert drafted.drafted_tokens >= drafted.accepted_tokens >= len(drafted.tokens) // 2
    assert _same_or_near_tie(drafted, plain), (drafted.text, plain.text)


@pytest.mark.text
def test_sampled_answers_draw_the_same_tokens_with_drafts(bundled):
    """Each row is sampled in order with the same random draws as one step each: with a fixed seed the answer is
    the one drafting off gives, and the refused drafts are the sampler's own choices, not the draft's."""
    sampling = SamplingParams(temperature=0.7, seed=1234)
    with Engine(Settings(context_size=1024, threads=1, draft_tokens=8), bundled) as e:
        e.draft_costs = StepCosts()
        drafted = _answer(e, QUOTE, sampling)
    with Engine(Settings(context_size=1024, threads=1), bundled) as e:
        plain = _answer(e, QUOTE, sampling)
    assert drafted.accepted_tokens > 0
    assert _same_or_near_tie(drafted, plain), (drafted.text, plain.text)


@pytest.mark.text
def test_refused_drafts_leave_no_cells_behind(bundled):
    """Every refused draft's cell is removed: the cache holds exactly the prompt and the answer's decoded tokens
    (a later request reusing the slot's cache reads the right cells)."""
    with Engine(Settings(context_size=1024, threads=1, draft_tokens=8), bundled) as e:
        e.draft_costs = StepCosts()
        toks = e.model.tokenize(QUOTE, add_special=True)
        from sentiric_cli.engine.sequence import Sequence

        seq = Sequence(e, 0, Request.from_settings(e.settings, toks, max_tokens=30), keep_cache=True)
        while not seq.done:
            e.step([seq])
        rec = [x for x in seq.take_events() if isinstance(x, Record)][-1]
        held = e.ctx.seq_pos_max(0) + 1
        assert held == len(seq.cached_tokens) == len(toks) + rec.generated_tokens - 1  # the last token: never decoded
        assert rec.accepted_tokens <= rec.drafted_tokens
