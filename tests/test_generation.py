"""Generation: past the window's end, recurrent models, stop strings, seeds."""

from __future__ import annotations

import pytest

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.engine.types import Piece, Record, Request
from sentiric_cli.settings import Settings

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text


def run(engine: Engine, request: Request) -> Record:
    pieces, record = [], None
    for ev in engine.stream(request):
        if isinstance(ev, Piece):
            pieces.append(ev.text)
        elif isinstance(ev, Record):
            record = ev
    assert record is not None and "".join(pieces) == record.text
    return record


def test_generation_past_the_window_shifts_too(bundled):
    with Engine(Settings(context_size=256, swa_full=True), bundled) as engine:
        m = engine.model
        r = run(engine, Request(head=[m.bos], body=m.tokenize("Once upon a time"), max_tokens=400,
                                sampling=SamplingParams(temperature=0.8, seed=7, repeat_penalty=1.1)))
    assert r.generated_tokens > 256  # seed 7 writes past the window (no early end of text)
    assert r.shifts > 0 and r.path == "shift" and r.max_fill <= 256


def test_recurrent_model_recomputes_instead_of_shifting(synth):
    path = synth("mamba", n_vocab=1024, n_embd=64, n_ff=128)
    with Engine(Settings(context_size=256), path) as engine:
        assert engine.ctx.can_shift and not engine.shiftable  # llama.cpp says yes; a state cannot drop a middle
        m = engine.model
        body = m.tokenize("hello world " * 300)
        r = run(engine, Request(head=[m.bos], body=body, max_tokens=4))
    assert r.path == "recompute" and r.recomputed_tokens > 0 and r.max_fill <= 256
    assert r.evicted_tokens + sum(e - s for s, e in r.kept_spans) == len(body)


def test_stop_strings_end_the_answer_before_the_stop_text(bundled):
    with Engine(Settings(context_size=512), bundled) as engine:
        m = engine.model
        head = [m.bos] + m.tokenize("Count: one, two, three, four, five, six, seven, eight,")
        free = run(engine, Request(head=head, max_tokens=12))
        assert "," in free.text
        stop = free.text[free.text.index(","):][:2]
        cut = run(engine, Request(head=head, max_tokens=12, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    assert stop not in cut.text


def test_same_seed_same_sample_and_temperature_zero_is_deterministic(bundled):
    with Engine(Settings(context_size=512), bundled) as engine:
        m = engine.model
        head = [m.bos] + m.tokenize("The weather today")
        a, b, c = (run(engine, Request(head=head, max_tokens=16, sampling=SamplingParams(temperature=1.0, seed=s)))
                   for s in (1, 1, 2))
        g1, g2 = (run(engine, Request(head=head, max_tokens=16)) for _ in range(2))
    assert a.tokens == b.tokens and a.tokens != c.tokens
    assert g1.tokens == g2.tokens


def test_token_logprobs_are_the_sampled_tokens_log_probabilities(bundled):
    from sentiric_cli.engine.logprobs import log_softmax

    with Engine(Settings(context_size=256), bundled) as engine:
        m = engine.model
        req = dict(head=[m.bos], body=m.tokenize("The capital of France is"), max_tokens=6)
        traced = run(engine, Request(**req, trace=True))
        light = run(engine, Request(**req, token_logprobs=True))
    assert light.tokens == traced.tokens and len(light.token_logprobs) == len(light.tokens)
    expected = [float(log_softmax(row)[t]) for row, t in zip(traced.logits, traced.tokens, strict=True)]
    assert all(abs(a - b) < 1e-6 for a, b in zip(light.token_logprobs, expected, strict=True))
    assert all(lp <= 0 for lp in light.token_logprobs) and light.logits == []  # one float per token, no rows kept
