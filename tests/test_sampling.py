"""Sampling (sampling.py): greedy tokens taken as the logits' argmax are llama.cpp's greedy sampler's tokens."""

from __future__ import annotations

import pytest
from llama_cpp import llama_cpp as C

from sentiric_cli.engine.bindings import Batch, Context, Model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.sampling import Sampler, SamplingParams
from sentiric_cli.engine.sequence import prompt_end
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.settings import Settings

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text


def _greedy_chain():
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
    return chain


@pytest.mark.parametrize("scored", [False, True], ids=["one-output-row-per-sequence", "many-output-rows"])
def test_argmax_of_each_output_row_is_the_greedy_samplers_token(bundled, scored):
    """A batch of 3 sequences with output rows scattered in it (every row with `scored`: more rows than
    sequences, the one-row-at-a-time path); each row's argmax is the token llama.cpp's greedy sampler picks."""
    s = Settings(context_size=128, threads=3)
    model = Model(bundled, s)
    ctx, batch, chain = Context(model, s), Batch(128), _greedy_chain()
    try:
        texts = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time there"]
        rows = []
        for seq, text in enumerate(texts):
            toks = [model.bos] + model.tokenize(text)
            for pos, t in enumerate(toks):
                out = scored or pos == len(toks) - 1
                i = batch.add(t, pos, seq, out)
                if out:
                    rows.append(i)
        ctx.decode(batch)
        assert len(rows) == (len(batch) if scored else 3)
        picked = [ctx.argmax(i) for i in rows]
        assert picked == [C.llama_sampler_sample(chain, ctx.handle, i) for i in rows]
        assert picked == [int(ctx.logits(i).argmax()) for i in rows]
        assert len(set(picked)) > 1  # the rows are told apart, not one row read three times
    finally:
        C.llama_sampler_free(chain)
        batch.close()
        ctx.close()
        model.close()


def test_only_a_chain_that_would_be_greedy_alone_is_skipped(bundled):
    with Engine(Settings(context_size=128), bundled) as engine:
        cases = {"temperature 0": (SamplingParams(), True),
                 "temperature 0.7": (SamplingParams(temperature=0.7), False),
                 "repeat penalty": (SamplingParams(repeat_penalty=1.1), False),
                 "presence penalty": (SamplingParams(presence_penalty=0.5), False),
                 "frequency penalty": (SamplingParams(frequency_penalty=-0.5), False),
                 "logit bias": (SamplingParams(logit_bias=((5, -1.0),)), False),
                 "grammar": (SamplingParams(grammar='root ::= "yes" | "no"'), False)}
        for name, (req, greedy) in cases.items():
            sampler = Sampler(req, engine.model)
            assert sampler.greedy is greedy, name
            assert (sampler._chain is None) is greedy, name  # a greedy request makes no chain (argmax serves it)
            sampler.close()
            sampler.close()  # twice: no double free


def test_the_penalties_see_the_prompts_end():
    """The last penalty_last_n prompt tokens, taken from the tail, the document and the head in that order."""
    req = Request([1, 2], [3, 4, 5], [6])
    assert prompt_end(req, 0) == [] and prompt_end(req, 1) == [6] and prompt_end(req, 4) == [3, 4, 5, 6]
    assert prompt_end(req, 5) == [2, 3, 4, 5, 6] and prompt_end(req, 100) == [1, 2, 3, 4, 5, 6]


def test_greedy_generation_is_the_same_through_the_chain(bundled, monkeypatch):
    """4 sequences generating together: the argmax path gives the very tokens llama.cpp's chain gives."""

    def generate() -> list[list[int]]:
        with Engine(Settings(context_size=256, threads=4, pad_steps=False), bundled) as engine:
            m = engine.model
            reqs = [Request(head=[m.bos] + m.tokenize(f"Story {i}: the lighthouse keeper"), max_tokens=24)
                    for i in range(4)]
            return [ev.tokens for _, ev in engine.stream_many(reqs) if isinstance(ev, Record)]

    fast = generate()
    real_init = Sampler.__init__

    def chain_only(self, req, model, recent=()):
        real_init(self, req, model, recent)
        self.greedy = False

    monkeypatch.setattr(Sampler, "__init__", chain_only)
    assert generate() == fast
    assert len(fast) == 4 and all(len(t) == 24 for t in fast)
