"""Prompt layout (chat template from the GGUF, or plain text) and per-token scoring."""

from __future__ import annotations

import math

import pytest

from sentiric_cli.engine.bindings import Model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.prompt import layout
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.settings import Settings

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _text(model: Model, tokens: list[int]) -> str:
    return b"".join(model.piece(t) for t in tokens).decode("utf-8", errors="replace")


def test_chat_template_from_the_gguf_wraps_question_and_document(synth):
    path = synth("llama", n_vocab=1024, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
                 **{"tokenizer.chat_template": CHATML})
    model = Model(path, Settings())
    try:
        lay = layout(model, "What is the key?", "the document text")
        head, tail = _text(model, lay.head), _text(model, lay.tail)
    finally:
        model.close()
    assert lay.templated
    assert "<|im_start|>user" in head and "Question: What is the key?" in head and head.endswith("Document:\n")
    assert tail.endswith("<|im_end|>\n<|im_start|>assistant\n") and "Question: What is the key?" in tail
    assert _text(model, lay.body) == "the document text"


def test_plain_layout_for_a_base_model_and_raw_prompts(bundled):
    model = Model(bundled, Settings())
    try:
        assert model.chat_template() is None  # the bundled model is a base model
        lay = layout(model, "What is the key?", "doc")
        assert not lay.templated and lay.head[0] == model.bos
        assert _text(model, lay.tail).endswith("Question: What is the key?\nAnswer:")
        bare = layout(model, "Once upon a time", None)
        assert bare.head == [model.bos] and _text(model, bare.body) == "Once upon a time" and bare.tail == []
    finally:
        model.close()


def test_scoring_measures_every_document_token_once_and_leaves_the_answer_alone(bundled):
    text = "The river ran north past the old mill, and the miller's daughter counted the boats. " * 30
    with Engine(Settings(context_size=256, swa_full=True), bundled) as engine:
        m = engine.model
        head, body = [m.bos], m.tokenize(text)
        runs = {}
        for score in (False, True):
            for ev in engine.stream(Request(head=head, body=body, max_tokens=6, score=score)):
                if isinstance(ev, Record):
                    runs[score] = ev
    scored = runs[True]
    assert scored.shifts > 0 and scored.scored_tokens == len(body)  # once each, shifts or not
    assert 1.0 < scored.perplexity < 20  # a repeated sentence is easy, far from uniform (262,144)
    assert math.isnan(runs[False].perplexity)
    assert scored.text == runs[False].text
