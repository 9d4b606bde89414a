"""Long documents (issues 9, 24): map-reduce over passages finds a fact anywhere, cites the sentence that holds it,
and says when the document does not answer.

All on the real bundled model (gemma 3 270M, base) with a 1024-token window: pass keys from needles.py in
documents of 2x to 7x the window, and real prose (Python's license history, bench/eval/docs/). The evaluation
over real documents and every kind of question is `make bench` (bench/longdoc_eval.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from needles import QUESTION, document, documents, sentences_for
from openai import OpenAI
from templated import GEMMA, with_template
from test_serve import server
from waits import WAIT

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.loop import run_pool
from sentiric_cli.engine.prompt import INSTRUCTION
from sentiric_cli.engine.types import Piece, Request
from sentiric_cli.longdoc import NOT_FOUND, LongRecord, MapJob, answer
from sentiric_cli.settings import Settings

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text

WINDOW = 1024
HISTORY = (Path(__file__).resolve().parent.parent / "bench" / "eval" / "docs" / "python-license.txt").read_text()


@pytest.fixture(scope="module")
def engine(bundled):
    with Engine(Settings(context_size=WINDOW, threads=2, swa_full=True), bundled) as e:
        yield e


def ask(engine, text: str, question: str = QUESTION, strategy: str = "auto", kind: str | None = None,
        raw: bool = False) -> tuple[LongRecord, str]:
    pieces, rec = [], None
    for ev in answer(engine, question, text, strategy, instruction=INSTRUCTION, raw=raw, kind=kind,
                     base=Request(head=[], max_tokens=24)):
        if isinstance(ev, Piece):
            pieces.append(ev.text)
        elif isinstance(ev, LongRecord):
            rec = ev
    assert rec is not None
    return rec, "".join(pieces)


def _found_and_cited(engine, times: int, depth: float, key: int, seed: int) -> bool:
    """Whether map found the key; when it did, everything about the answer is checked: its text as streamed, the
    citation of the sentence that holds it, the rounds, the supported quote in the passage that holds it (or the
    sentence that holds the question's words)."""
    text, at = document(sentences_for(engine.model, times * WINDOW), depth, key, seed=seed)
    rec, streamed = ask(engine, text)
    assert rec.strategy == "map" and rec.kind == "lookup" and streamed == rec.answer
    assert len(rec.chunks) > times * 4  # passages, a few sentences each
    if not (rec.found and str(key) in rec.answer):
        return False
    (s, e), = rec.citations
    assert s <= at < e and e - s < 100, (at, rec.citations)  # the sentence, not the passage
    # the supported quote of the passage that holds the key; or, where no quote was supported (a kernel family may
    # read this key worse), the sentence that holds the question's words (held.py), which holds the key
    said = [p for p in rec.partials if p.byte_span[0] <= at < p.byte_span[1] and p.verdict in ("answer", "sentence")]
    assert said and str(key) in said[0].answer and 0 < said[0].confidence <= 1
    if said[0].verdict == "answer":
        # (where a sentence that holds more of the question's words beat the quote, it is read alone after the check)
        assert [p.name for p in rec.phases][:4] == ["tokenize", "map", "read", "check"] and said[0].support > 0
        assert [p.name for p in rec.phases][4:] in ([], ["alone"])
        assert said[0].confidence < 1
    else:
        assert [p.name for p in rec.phases][:3] == ["tokenize", "map", "read"] and said[0].confidence == 1.0
    return True


def test_map_finds_the_key_and_cites_the_sentence_that_holds_it(engine):
    assert _found_and_cited(engine, 2, 0.3, 40617, seed=2)


def test_map_finds_late_keys_in_a_long_document_and_cites_them(engine):
    """Three 7x documents with the key late: whether the 270M model reads a key right can move with the kernels,
    so most of them, each checked whole."""
    cases = [(0.9, 73108, 7), (0.9, 61342, 11), (0.8, 58406, 21)]
    found = [_found_and_cited(engine, 7, depth, key, seed) for depth, key, seed in cases]
    assert sum(found) >= 2, found


def test_the_passages_holding_keys_are_the_most_relevant_wherever_they_are(engine):
    """The map's relevance (the question's likelihood after a passage over its likelihood after nothing) puts the
    passages that hold a key first, in the first, middle and last part of the document."""
    keys = [(0.02, 11873), (0.5, 52904), (0.98, 86315)]
    text, ats = documents(sentences_for(engine.model, 5 * WINDOW), keys, seed=12)
    job = MapJob(engine.model, WINDOW, "What are the three pass keys?", engine.model.tokenize(text), False,
                 Request(head=[], max_tokens=24))
    assert job.kind == "list"
    recs = [None] * (len(job.chunks) + 1)
    for i, rec in run_pool(engine, job.map_requests()):
        recs[i] = rec
    job.add_map(recs)
    holders = {next(c.index for c in job.chunks if c.byte_start <= at < c.byte_end) for at in ats}
    top = sorted(range(len(job.relevance)), key=lambda i: -job.relevance[i])[:len(holders)]
    assert set(top) == holders and set(top) <= set(job.selected())
    assert min(job.relevance[i] for i in holders) > 0  # likelier after the passage than after nothing


def test_two_facts_in_different_passages_asked_together_are_listed(engine):
    """A list question: both keys, each cited, over three documents (most of them: one key misread by the 270M
    model is a model error, not the pipeline's)."""
    both = 0
    for seed in (6, 7, 8):
        keys = [(0.2, 31877 + seed), (0.7, 90452 + seed)]
        text, ats = documents(sentences_for(engine.model, 4 * WINDOW), keys, seed=seed)
        rec, _ = ask(engine, text, "What are the two pass keys?")
        assert rec.strategy == "map" and rec.kind == "list"
        if all(str(k) in rec.answer for _, k in keys):
            both += 1
            assert all(any(s <= at < e for s, e in rec.citations) for at in ats)
    assert both >= 2, both


def test_a_question_the_document_does_not_answer_is_not_found(engine):
    text, _ = document(sentences_for(engine.model, 3 * WINDOW), 0.5, 0, seed=3)
    text = text.replace("The pass key is 0. Remember it. 0 is the pass key.", "")
    rec, streamed = ask(engine, text)
    assert not rec.found and rec.answer == NOT_FOUND == streamed and rec.citations == []
    assert all(p.verdict != "answer" for p in rec.partials)


def test_real_prose_a_phrase_is_quoted_and_an_absent_fact_is_not_invented(engine):
    """Python's own license history (3x the window): the answer is a phrase of the text, cited by its sentence;
    asked what the text does not say, it says so."""
    rec, _ = ask(engine, HISTORY, "Who created Python?")
    assert rec.found and "Guido" in rec.answer.split(" (other passages say")[0]
    (s, e), *_ = rec.citations
    assert "Guido van Rossum" in HISTORY.encode()[s:e].decode()
    rec, _ = ask(engine, HISTORY, "What is Guido van Rossum's date of birth?")
    assert not rec.found and rec.answer == NOT_FOUND


def test_the_chat_template_path_reads_through_the_models_own_template(engine, bundled, tmp_path):
    """The same weights with a chat template: every read frame is one user turn of the template, and the answer turn
    starts with the examples' cue. These are base weights, not a chat model: under the template they quote the key
    for some documents and repeat the question for the others (2 of these 6 found here), never an invention: so the
    key's passage gives the key or an echo (or, where no quote was supported, the sentence that holds the question's
    words answers: held.py), and some key is found and cited by its sentence."""
    path = with_template(bundled, tmp_path / "gemma-chat.gguf", GEMMA)
    found = 0
    with Engine(Settings(context_size=WINDOW, threads=2, swa_full=True), path) as chat:
        cue = chat.model.tokenize("Answer:", add_special=False)
        turn = chat.model.tokenize("<start_of_turn>", add_special=False, parse_special=True)
        for seed, key in ((9, 27182), (3, 31415), (5, 16180), (11, 44721), (13, 57721), (17, 69314)):
            text, at = document(sentences_for(chat.model, 3 * WINDOW), 0.6, key, seed=seed)
            job = MapJob(chat.model, WINDOW, QUESTION, chat.model.tokenize(text), False,
                         Request(head=[], max_tokens=24))
            head = b"".join(chat.model.piece(t) for t in job.head).decode()
            assert job.templated and turn[0] in job.head and "user\nAnswer each question" in head
            assert turn[0] in job.tail and job.tail[-len(cue):] == cue
            rec, _ = ask(chat, text)
            over_key = [p for p in rec.partials if p.byte_span[0] <= at < p.byte_span[1]]
            assert over_key and all(p.verdict in ("answer", "unsupported", "echo", "sentence") for p in over_key), over_key
            if rec.found and str(key) in rec.answer:
                found += 1
                assert any(s <= at < e and e - s < 100 for s, e in rec.citations)
    assert found >= 1


def test_auto_reads_once_when_it_fits_and_window_streams(engine):
    text, _ = document(sentences_for(engine.model, WINDOW // 2), 0.5, 31337, seed=1)
    rec, _ = ask(engine, text)
    assert rec.strategy == "single" and "31337" in rec.answer and rec.window_record.shifts == 0
    long_text, _ = document(sentences_for(engine.model, 3 * WINDOW), 0.2, 31337, seed=1)
    rec, _ = ask(engine, long_text, strategy="window")
    assert rec.strategy == "window" and rec.window_record.shifts > 0  # one window, shifting: the old behaviour


def _cli(*args: str, env: dict | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLM_LLAMA_SERVICE_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "sentiric_cli", "run", *args], input=stdin, capture_output=True,
                          env=environ | {"COLUMNS": "200"}, timeout=WAIT)


def test_run_strategy_flag_json_record_and_environment(engine, tmp_path):
    text, at = document(sentences_for(engine.model, 3 * WINDOW), 0.6, 90210, seed=2)
    doc = tmp_path / "doc.txt"
    doc.write_text(text)
    r = _cli("-f", str(doc), "-c", str(WINDOW), "-t", "2", "--strategy", "map", "--json", QUESTION)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["strategy"] == "map" and "90210" in out["answer"] and out["threads"] == 2
    ld = out["longdoc"]
    assert any(s <= at < e for s, e in ld["citations"]) and ld["partials"] and ld["phases"]
    assert {"chunk", "byte_span", "answer", "confidence", "relevance", "support", "verdict", "evidence",
            "evidence_span"} <= set(ld["partials"][0]) and ld["kind"] == "lookup"
    r = _cli("-f", str(doc), "-c", str(WINDOW), QUESTION, env={"LLM_LLAMA_SERVICE_STRATEGY": "window"})
    assert r.returncode == 0 and "shifts" in r.stderr.decode() and "map (" not in r.stderr.decode()
    r = _cli("-f", str(doc), "--strategy", "everything", QUESTION)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and "--strategy" in r.stderr.decode()
    r = _cli("-f", str(doc), "--kind", "everything", QUESTION)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and "--kind" in r.stderr.decode()


def test_the_api_extension_round_trips_through_the_openai_client(engine):
    text, at = document(sentences_for(engine.model, 3 * WINDOW), 0.4, 58213, seed=4)
    with server("--threads", "2", "--context", str(WINDOW)) as (url, proc, banner):
        cpu_line = proc.stderr.readline()  # the start-up summary's line after the plan (issue 8)
        assert cpu_line.startswith("sentiric: CPU path: ") and ("repack" in cpu_line or "AMX" in cpu_line
                                                                or "plain" in cpu_line), cpu_line
        c = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=WAIT)
        extra = {"sentiric": {"document": text, "strategy": "map"}}
        r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTION}], max_tokens=24,
                                      temperature=0, extra_body=extra)
        assert "58213" in r.choices[0].message.content and r.choices[0].finish_reason == "stop"
        rec = r.model_extra["sentiric"]
        assert rec["strategy"] == "map" and any(s <= at < e for s, e in rec["citations"])
        assert r.usage.prompt_tokens > 3 * WINDOW  # every chunk read counts
        chunks = list(c.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTION}],
                                                max_tokens=24, temperature=0, extra_body=extra, stream=True))
        assert "58213" in "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].model_extra["sentiric"]["citations"] == rec["citations"]
        done = c.completions.create(model="x", prompt=QUESTION, max_tokens=24, temperature=0, extra_body=extra)
        assert "58213" in done.choices[0].text and done.model_extra["sentiric"]["found"]
        assert rec["kind"] == "lookup"
        listed = c.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTION}], max_tokens=24,
                                           extra_body={"sentiric": {**extra["sentiric"], "kind": "list"}})
        assert listed.model_extra["sentiric"]["kind"] == "list" and "58213" in listed.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as bad:
            c.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTION}], max_tokens=24,
                                      extra_body={"sentiric": {**extra["sentiric"], "kind": "poem"}})
        assert "kind" in str(bad.value)
        plain = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert "sentiric" not in (plain.model_extra or {})  # only when asked


def test_summaries_that_do_not_fit_one_window_are_collapsed_in_rounds(engine):
    from sentiric_cli.longdoc import Partial, Phase
    from sentiric_cli.longdoc.strategies import _map

    text, _ = document(sentences_for(engine.model, 2 * WINDOW), 0.5, 61442, seed=8)
    job = MapJob(engine.model, engine.ctx.n_ctx_seq, "What is this document about?", engine.model.tokenize(text),
                 False, Request(head=[], max_tokens=16))
    assert job.kind == "overview"
    filler = "The grass is green and the sky is blue over the quiet hills of the valley."
    many = [Partial(i, (0, 1), (i, i + 1), f"{filler} Item {i}." if i != 7 else "The pass key is 61442.", 0.9)
            for i in range(60)]  # 60 partial answers of ~25 tokens: well over one 1024-token window
    groups = job.groups(many)
    assert len(groups) > 1 and sum(len(g) for g in groups) == 60
    job.map_requests = lambda: []  # the map is not the point here: feed the reduce directly
    job.summaries = lambda: many
    events = list(_map(engine, job, [Phase("tokenize", 0, 0, 0.0)]))
    rec = events[-1]
    assert isinstance(rec, LongRecord) and rec.reduce_rounds >= 2
    assert [p.name for p in rec.phases if p.name.startswith("reduce")] == [f"reduce {i + 1}" for i in range(rec.reduce_rounds)]
