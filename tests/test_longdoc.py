"""Long documents (issue 9): map-reduce over chunks finds a fact anywhere, cites where, and says when it can't.

All on the real bundled model (gemma 3 270M, base) with a 1024-token window: documents of 2x to 7x the
window, pass keys from needles.py. The full grid (to 16x, with the window strategy beside it) is `make bench`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from needles import QUESTION, document, documents, sentences_for
from openai import OpenAI
from test_serve import server
from waits import WAIT

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.loop import run_pool
from sentiric_cli.engine.prompt import INSTRUCTION
from sentiric_cli.engine.types import Piece, Request
from sentiric_cli.longdoc import NOT_FOUND, LongRecord, MapJob, answer
from sentiric_cli.longdoc.mapreduce import CONFIDENT, _listing
from sentiric_cli.settings import Settings

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text

WINDOW = 1024


@pytest.fixture(scope="module")
def engine(bundled):
    with Engine(Settings(context_size=WINDOW, threads=2, swa_full=True), bundled) as e:
        yield e


def ask(engine, text: str, question: str = QUESTION, strategy: str = "auto") -> tuple[LongRecord, str]:
    pieces, rec = [], None
    for ev in answer(engine, question, text, strategy, instruction=INSTRUCTION, base=Request(head=[], max_tokens=24)):
        if isinstance(ev, Piece):
            pieces.append(ev.text)
        elif isinstance(ev, LongRecord):
            rec = ev
    assert rec is not None
    return rec, "".join(pieces)


def _found_and_cited(engine, times: int, depth: float, key: int, seed: int) -> bool:
    """Whether map found the key; when it did, everything about the answer is checked: its text as streamed, the
    citation of the bytes that hold it, a partial answer per chunk, one reduce round, a confident partial answer."""
    text, at = document(sentences_for(engine.model, times * WINDOW), depth, key, seed=seed)
    rec, streamed = ask(engine, text)
    assert rec.strategy == "map" and streamed == rec.answer
    assert len(rec.partials) == len(rec.chunks) > times  # every chunk gave a partial answer
    if not (rec.found and str(key) in rec.answer):
        return False
    assert rec.citations and any(s <= at and at + 20 <= e for s, e in rec.citations), (at, rec.citations)
    assert [p.name for p in rec.phases][:2] == ["tokenize", "map"] and rec.reduce_rounds == 1
    held = [p for p in rec.partials if p.byte_span[0] <= at < p.byte_span[1]]
    assert any(str(key) in p.answer and p.confidence >= CONFIDENT for p in held)
    return True


def test_map_finds_the_key_and_cites_the_bytes_that_hold_it(engine):
    assert _found_and_cited(engine, 2, 0.3, 40617, seed=2)


def test_map_finds_late_keys_in_a_long_document_and_cites_them(engine):
    """Three 7x documents with the key late. Whether the 270M model reads one chunk's key right (73108, not 133108)
    moved with the kernels and the batch a chunk shares: the x86-64-v3 build misread this first one once the slot
    loop kept its batches in slot order (issue 23), and read the other two. So: most of them, each checked whole."""
    cases = [(0.9, 73108, 7), (0.9, 61342, 11), (0.8, 58406, 21)]
    found = [_found_and_cited(engine, 7, depth, key, seed) for depth, key, seed in cases]
    assert sum(found) >= 2, found


def test_a_key_in_the_first_middle_or_last_chunk_reaches_the_reduce_step(engine):
    keys = [(0.02, 11873), (0.5, 52904), (0.98, 86315)]
    text, ats = documents(sentences_for(engine.model, 5 * WINDOW), keys, seed=12)
    job = MapJob(engine.model, engine.ctx.n_ctx_seq, QUESTION, engine.model.tokenize(text), False,
                 Request(head=[], max_tokens=24))
    for i, rec in run_pool(engine, job.map_requests()):
        job.add_partial(i, rec)
    listing = _listing(job.confident())  # exactly what the reduce step reads
    first, last = job.chunks[0], job.chunks[-1]
    assert first.byte_start <= ats[0] < first.byte_end and last.byte_start <= ats[2] < last.byte_end
    for _, key in keys:
        assert str(key) in listing, listing


def test_two_facts_in_different_chunks_asked_together_are_both_answered(engine):
    # the 270M model often garbles one of two keys when asked for both (1 of the 3 documents tried answers
    # both; see docs/run.md): this one checks that the pipeline carries two facts to one answer
    keys = [(0.2, 31877), (0.7, 90452)]
    text, ats = documents(sentences_for(engine.model, 4 * WINDOW), keys, seed=6)
    rec, _ = ask(engine, text, "What are the two pass keys?")
    assert rec.strategy == "map" and all(str(k) in rec.answer for _, k in keys), rec.answer
    for at in ats:
        assert any(s <= at < e for s, e in rec.citations)


def test_no_confident_chunk_means_the_answer_says_so(engine):
    text, _ = document(sentences_for(engine.model, 3 * WINDOW), 0.5, 0, seed=3)
    text = text.replace("The pass key is 0. Remember it. 0 is the pass key.", "")
    rec, streamed = ask(engine, text)
    assert not rec.found and rec.answer == NOT_FOUND == streamed
    assert rec.citations == [] and all(p.confidence < CONFIDENT for p in rec.partials)


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
    assert {"chunk", "byte_span", "answer", "confidence"} <= set(ld["partials"][0])
    r = _cli("-f", str(doc), "-c", str(WINDOW), QUESTION, env={"LLM_LLAMA_SERVICE_STRATEGY": "window"})
    assert r.returncode == 0 and "shifts" in r.stderr.decode() and "map:" not in r.stderr.decode()
    r = _cli("-f", str(doc), "--strategy", "everything", QUESTION)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and "--strategy" in r.stderr.decode()


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
        plain = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert "sentiric" not in (plain.model_extra or {})  # only when asked


def test_partial_answers_that_do_not_fit_one_window_are_reduced_in_rounds(engine):
    from sentiric_cli.longdoc import Partial, Phase
    from sentiric_cli.longdoc.strategies import _map

    text, _ = document(sentences_for(engine.model, 2 * WINDOW), 0.5, 61442, seed=8)
    job = MapJob(engine.model, engine.ctx.n_ctx_seq, QUESTION, engine.model.tokenize(text), False,
                 Request(head=[], max_tokens=16))
    filler = "The grass is green and the sky is blue over the quiet hills of the valley."
    many = [Partial(i, (0, 1), (i, i + 1), f"{filler} Item {i}." if i != 7 else "The pass key is 61442.", 0.9)
            for i in range(60)]  # 60 partial answers of ~25 tokens: well over one 1024-token window
    groups = job.groups(many)
    assert len(groups) > 1 and sum(len(g) for g in groups) == 60
    job.map_requests = lambda: []  # the map is not the point here: feed the reduce directly
    job.confident = lambda: many
    events = list(_map(engine, job, [Phase("tokenize", 0, 0, 0.0)]))
    rec = events[-1]
    assert isinstance(rec, LongRecord) and rec.reduce_rounds >= 2
    assert [p.name for p in rec.phases if p.name.startswith("reduce")] == [f"reduce {i + 1}" for i in range(rec.reduce_rounds)]
