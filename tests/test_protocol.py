"""The map-reduce protocol (longdoc/protocol.py) is control flow without I/O: driven here by hand, with records made
for each round's requests, over a real tokenized document and the bundled model's tokenizer (nothing is decoded)."""

from __future__ import annotations

import pytest
from needles import QUESTION, document, sentences_for

from sentiric_cli.engine.bindings import Model
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.longdoc import NOT_FOUND, MapJob
from sentiric_cli.longdoc.protocol import protocol
from sentiric_cli.settings import Settings

KEY = 48213


def _record(model: Model, text: str, lp: float = -0.01) -> Record:
    tokens = model.tokenize(text)
    return Record(prompt_tokens=100, head_tokens=10, document_tokens=90, n_keep=10, context_size=256,
                  generated_tokens=len(tokens), finish_reason="stop", path="none", shifts=0, evicted_tokens=0,
                  evicted_spans=[], kept_spans=[], recomputed_tokens=0, reused_tokens=0, max_fill=100,
                  prefill_seconds=0.0, prefill_tokens_per_s=0.0, generation_tokens_per_s=0.0, text=text,
                  tokens=tokens, token_logprobs=[lp] * len(tokens))


@pytest.fixture(scope="module")
def job(bundled):
    model = Model(bundled, Settings())
    text, at = document(sentences_for(model, 6 * 256), 0.5, KEY, seed=5)
    job = MapJob(model, 256, QUESTION, model.tokenize(text), False, Request(head=[], max_tokens=16))
    holder = next(c.index for c in job.chunks if c.byte_start <= at < c.byte_end)
    yield model, job, holder
    model.close()


def test_a_confident_partial_answer_goes_through_one_reduce_to_the_answer_and_its_source(job):
    model, job, holder = job
    steps = protocol(job, [])
    first = next(steps)
    assert first.name == "map" and len(first.requests) == len(job.chunks) > 3
    assert all(r.sampling.temperature == 0 and r.token_logprobs and r.stop == ("\n",) for r in first.requests)
    final = steps.send([_record(model, f" {KEY}" if i == holder else " none") for i in range(len(first.requests))])
    assert final.name == "reduce 1" and len(final.requests) == 1
    listing = b"".join(model.piece(t) for t in final.requests[0].body).decode()
    assert listing == f"- {KEY} (part {holder + 1})\n"  # the confident answer, where it came from; not the "none"s
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, f" {KEY} (part {holder + 1})")])
    rec = end.value.value
    assert rec.found and rec.answer == str(KEY) and rec.cited_chunks == [holder] and rec.reduce_rounds == 1
    assert [p.name for p in rec.phases] == ["map", "reduce 1"]


def test_no_confident_partial_answer_ends_after_the_map_with_not_found(job):
    model, job, _ = job
    steps = protocol(job, [])
    first = next(steps)
    with pytest.raises(StopIteration) as end:  # a guess the excerpt does not contain has no confidence
        steps.send([_record(model, " 12345", lp=-0.01) for _ in first.requests])
    rec = end.value.value
    assert not rec.found and rec.answer == NOT_FOUND and [p.name for p in rec.phases] == ["map"]
