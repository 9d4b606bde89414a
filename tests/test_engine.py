"""The shifting-window engine against the real llama.cpp: parity, exact shifts, bounded memory, pass keys."""

from __future__ import annotations

from collections import deque
from dataclasses import is_dataclass

import numpy as np
import pytest

from sentiric_cli.engine.bindings import Batch, Context, Model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.logprobs import log_softmax
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.engine.sequence import Sequence
from sentiric_cli.engine.types import Piece, Record, Request
from sentiric_cli.settings import Settings

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text

TEXT = "In the beginning the river ran north past the old mill, and the miller's daughter counted the boats. "
FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 400)
KEY = "71432"


def answer(engine: Engine, request: Request) -> tuple[str, Record]:
    text, record = "", None
    for ev in engine.stream(request):
        if isinstance(ev, Piece):
            text += ev.text
        elif isinstance(ev, Record):
            record = ev
    assert record is not None and record.text == text
    return text, record


# --------------------------------------------------------------------------- parity with llama-cpp-python

@pytest.mark.parametrize("which", ["bundled", "llama"])
def test_prompt_that_fits_gives_llama_cpp_python_greedy_tokens(which, bundled, synth):
    from llama_cpp import Llama

    path = bundled if which == "bundled" else synth("llama", n_vocab=1024, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)
    # llama-cpp-python's Llama() defaults: n_ctx 512, n_batch = n_ubatch = 512, no flash attention, swa_full
    settings = Settings(context_size=512, batch_size=512, ubatch_size=512, flash_attn=False, swa_full=True, cpu_threads=1)
    llm = Llama(model_path=str(path), n_ctx=512, n_batch=512, n_ubatch=512, n_threads=1, n_threads_batch=1,
                flash_attn=False, verbose=False)
    prompt = llm.tokenize((TEXT * 2).encode(), add_bos=True, special=False)
    theirs = []
    for tok in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
        if llm.token_eos() == tok or len(theirs) == 24:
            break
        theirs.append(tok)
    expected = llm.detokenize(theirs).decode("utf-8", errors="replace")
    llm.close()
    with Engine(settings, path) as engine:
        text, record = answer(engine, Request(head=prompt[:1], body=prompt[1:], max_tokens=24))
    assert record.path == "none" and record.shifts == 0
    assert len(theirs) > 0
    assert text == expected


# --------------------------------------------------------------------------- shifts are exact

def _last_logits(ctx: Context, batch: Batch, toks: list[int], chunk: int, start: int = 0, delta: int = 0) -> np.ndarray:
    """Prefill toks[:-1] from position `start` in `chunk`-token batches, shift by `delta`, decode the last token."""
    ctx.seq_rm(0, -1, -1)
    body, pos = toks[:-1], start
    for i in range(0, len(body), chunk):
        batch.clear()
        for t in body[i:i + chunk]:
            batch.add(t, pos, 0, False)
            pos += 1
        ctx.decode(batch)
    if delta:
        ctx.seq_add(0, start, -1, delta)
        pos += delta
    batch.clear()
    batch.add(toks[-1], pos, 0, True)
    ctx.decode(batch)
    return ctx.logits(0)


@pytest.mark.parametrize("which", ["bundled", "llama"])
@pytest.mark.parametrize("flash_attn", [False, True])
def test_shift_gives_the_unshifted_logits_within_llama_cpp_noise(which, flash_attn, bundled, synth):
    path = bundled if which == "bundled" else synth("llama", n_vocab=1024, n_embd=256, n_head=8, n_head_kv=2, n_ff=768)
    s = Settings(context_size=2048, swa_full=True, flash_attn=flash_attn, batch_size=512, ubatch_size=512)
    model = Model(path, s)
    ctx, batch = Context(model, s), Batch(512)
    try:
        toks = ([model.bos] + model.tokenize(TEXT * 4))[:200]
        n = len(toks) - 1
        ref = _last_logits(ctx, batch, toks, n)
        # llama.cpp's own noise: the same prompt in other batch splits, and at another absolute position
        noise = max(float(np.abs(ref - _last_logits(ctx, batch, toks, c)).max()) for c in (64, 7, 1))
        noise = max(noise, float(np.abs(ref - _last_logits(ctx, batch, toks, n, start=1000)).max()))
        up = _last_logits(ctx, batch, toks, n, start=0, delta=1000)  # prefilled at 0.., shifted up
        down = _last_logits(ctx, batch, toks, n, start=5000, delta=-5000)  # prefilled high, shifted down
    finally:
        batch.close()
        ctx.close()
        model.close()
    for shifted in (up, down):
        assert int(shifted.argmax()) == int(ref.argmax())
        # the documented bound: llama.cpp's own noise (x1.25 for other CPUs' kernels), measured above
        assert float(np.abs(shifted - ref).max()) <= 1.25 * noise + 1e-3, (float(np.abs(shifted - ref).max()), noise)


def test_recompute_fallback_reads_like_a_fresh_prefill(bundled):
    """Sliding-window cache without swa_full cannot shift: the engine recomputes, with the same result.

    The window must exceed the sliding window (512) + ubatch, or the SWA cache is full-size anyway."""
    s = Settings(context_size=1024, swa_full=False, batch_size=256, ubatch_size=256, max_tokens=6)
    with Engine(s, bundled) as engine:
        assert not engine.shiftable
        m = engine.model
        head = [m.bos] + m.tokenize("Read the text and continue it.\n\n")
        body = m.tokenize(FILLER[:9000])
        tail = m.tokenize("\n\nThe last sentence above was:")
        text, record = answer(engine, Request(head=head, body=body, tail=tail, max_tokens=6))
        assert record.path == "recompute" and record.recomputed_tokens > 0 and record.shifts > 0
        # the window it ended with, prefilled fresh in one go, must answer the same
        (start, end), = record.kept_spans
        fresh, fresh_record = answer(engine, Request(head=head, body=body[start:end], tail=tail, max_tokens=6))
    assert fresh_record.path == "none"
    assert text == fresh


# --------------------------------------------------------------------------- long documents, bounded memory

def test_document_ten_times_the_context_completes_within_the_window(bundled):
    s = Settings(context_size=512, swa_full=True)
    with Engine(s, bundled) as engine:
        m = engine.model
        body = m.tokenize(FILLER * 2)[: 10 * 512]
        head = [m.bos] + m.tokenize("Summarize the text.\n")
        text, r = answer(engine, Request(head=head, body=body, tail=m.tokenize("\nSummary:"), max_tokens=8))
    assert r.document_tokens == 10 * 512 and r.path == "shift"
    assert r.max_fill <= 512  # the cache never holds more than the context
    assert r.shifts >= 9
    covered = sum(e - s for s, e in r.evicted_spans) + sum(e - s for s, e in r.kept_spans)
    assert r.evicted_spans[0][0] == 0 and covered == len(body)  # evicted + kept = the whole document, no overlap
    assert r.evicted_tokens == sum(e - s for s, e in r.evicted_spans)
    assert text.strip()


# --------------------------------------------------------------------------- pass keys

def _passkey_request(m: Model, where: float, n_filler: int) -> tuple[Request, tuple[int, int]]:
    filler = m.tokenize(FILLER)[:n_filler]
    cut = int(len(filler) * where)
    key = m.tokenize(f" The pass key is {KEY}. Remember it. {KEY} is the pass key. ")
    body = filler[:cut] + key + filler[cut:]
    head = [m.bos] + m.tokenize("There is a pass key hidden in this text. Find it and memorize it.\n")
    tail = m.tokenize("\nWhat is the pass key? The pass key is")
    # 16 tokens: with weights used as stored (plain kernels, AVX2 and AVX-512 alike) the model first restates the
    # instruction (" hidden in this text. 71432. ...") where repacked kernels answer " 71432." at once (issue 22)
    return Request(head=head, body=body, tail=tail, max_tokens=16), (cut, cut + len(key))


def test_pass_key_in_the_window_is_found_and_an_evicted_one_is_reported(bundled):
    with Engine(Settings(context_size=512, swa_full=True), bundled) as engine:
        # keys 75..300 tokens before the end of a 1,500-token text, read through a 512-token window
        for where in (0.8, 0.85, 0.9, 0.95):
            req, key_span = _passkey_request(engine.model, where, 1500)
            text, r = answer(engine, req)
            assert r.shifts > 0
            assert any(s <= key_span[0] and key_span[1] <= e for s, e in r.kept_spans)
            assert KEY in text, (where, text)
        req, key_span = _passkey_request(engine.model, 0.05, 3000)  # near the start: evicted
        text, r = answer(engine, req)
        assert any(s <= key_span[0] and key_span[1] <= e for s, e in r.evicted_spans)  # the engine never pretends
        assert KEY not in text


# --------------------------------------------------------------------------- sequences side by side

def test_sequences_shifting_at_different_moments_do_not_disturb_each_other(bundled):
    """Each sequence gives what it gives alone, within llama.cpp's own noise. A token decoded beside other
    sequences' prompt chunks takes the matrix-matrix kernels, so the last bits differ, and where the top two
    candidates are a near tie the greedy token may flip (seen on some CPUs' kernels at the very first token); from
    there the two runs read different text. So the runs are compared token by token up to and including the first
    token where they differ: there the two next-token distributions must still be the same within the noise, which
    is what makes the flip a near tie and not a disturbance.

    The noise: the same sequence alone, computed in 64-token ubatches instead of 512 (same shifts), pooled over the
    three sequences. Measured as the KL divergence of the next-token distributions, which the probable tokens
    (what a sampler sees) dominate. The largest log-probability gap over every token with log p > -20, the old
    measure, is set by the tail: on an AVX-512 build one token's gap reached 1.6x the noise's largest (issue 22).
    Noise per token is heavy-tailed (one token 1.7x the baseline's largest, there), hence the 10x headroom; a
    sequence whose cache another one's shift disturbed reads other text: a divergence of order 1, not 0.01."""
    def requests(m: Model) -> list[Request]:
        reqs = [_passkey_request(m, 0.8, n)[0] for n in (700, 1100, 1500)]  # shifts come at different steps
        for r in reqs:
            r.trace = True
        return reqs

    with Engine(Settings(context_size=512, threads=3, swa_full=True), bundled) as engine:
        together = {i: ev for i, ev in engine.stream_many(requests(engine.model)) if isinstance(ev, Record)}
        alone = [answer(engine, r)[1] for r in requests(engine.model)]
    with Engine(Settings(context_size=512, threads=3, swa_full=True, ubatch_size=64), bundled) as engine:
        resplit = [answer(engine, r)[1] for r in requests(engine.model)]
    assert len({r.shifts for r in together.values()}) == 3
    assert all(r.max_fill <= 512 for r in together.values())
    noise = max(d for solo, other in zip(alone, resplit, strict=True) for d in _divergences(solo, other))
    for i, solo in enumerate(alone):
        assert resplit[i].shifts == solo.shifts and together[i].shifts == solo.shifts
        worst = max(_divergences(solo, together[i]))
        assert worst <= 10 * noise, (i, worst, noise)


def _divergences(a: Record, b: Record) -> list[float]:
    """Per generated token, up to and including the first where the runs differ: the KL divergence of the two
    next-token distributions (the larger direction)."""
    n = next((k for k, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=False)) if x != y), None)
    upto = min(len(a.logits), len(b.logits)) if n is None else n + 1
    return [_kl(a.logits[k], b.logits[k]) for k in range(upto)]


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    la, lb = log_softmax(a).astype(np.float64), log_softmax(b).astype(np.float64)
    return max(float((np.exp(la) * (la - lb)).sum()), float((np.exp(lb) * (lb - la)).sum()))


def test_a_prompt_read_beside_generating_requests_goes_a_ubatch_per_step(synth):
    """Continuous batching must not stall the streams: while one request generates, another's long prompt is
    read in ubatch-sized steps, each with the generating request's next token, not in one big decode."""
    from sentiric_cli.engine.sequence import Sequence

    s = Settings(threads=2, context_size=2048, batch_size=2048, ubatch_size=256)
    with Engine(s, synth("llama")) as engine:
        talking = Sequence(engine, 0, Request(head=[1], body=[5, 6, 7], max_tokens=50))
        while not talking.generating:
            engine.step([talking])
        reading = Sequence(engine, 1, Request(head=[1], body=[(i % 400) + 3 for i in range(1500)], max_tokens=2))
        sizes = []
        while not reading.generating:
            before = talking.tally.generated
            engine.step([talking, reading])
            sizes.append(len(engine.batch))
            assert talking.tally.generated == before + 1  # a token for the generating request in every step
        assert max(sizes) <= 1 + 256 and len(sizes) >= 1500 // 256
        for q in (talking, reading):
            q.finish("interrupted")
            q.close()


def test_thread_tuner_leaves_a_core_only_when_the_step_is_cheap():
    from sentiric_cli.engine.compute_threads import BIG_STEP_S, CHEAP_S_PER_TOKEN, WINDOW, ThreadTuner

    t = ThreadTuner(4, fixed=False)
    for _ in range(WINDOW):
        t.observe(CHEAP_S_PER_TOKEN / 10 * 8, 8, 4, prompt=False)  # 8 tokens at a tenth of the bound each
    assert t.spare and t.threads(8, prompt=False) == 3 and t.threads(8, prompt=True) == 3
    assert t.threads(int(BIG_STEP_S / t.per_token) + 1, prompt=True) == 4  # reading a real prompt gets every core
    assert t.threads(int(BIG_STEP_S / t.per_token) + 1, prompt=False) == 3
    assert t.threads(8, prompt=False, streaming=False) == 4  # nothing streams: the spare core would idle
    for _ in range(WINDOW):
        t.observe(CHEAP_S_PER_TOKEN * 3 * 8 * 4 / 3, 8, 3, prompt=False)  # expensive, measured on 3 threads
    assert not t.spare and t.threads(8, prompt=False) == 4
    fixed = ThreadTuner(4, fixed=True)
    for _ in range(WINDOW):
        fixed.observe(1e-6, 8, 4, prompt=False)
    assert not fixed.spare
    one_core = ThreadTuner(1, fixed=False)
    for _ in range(WINDOW):
        one_core.observe(1e-6, 8, 1, prompt=False)
    assert one_core.threads(8, prompt=False) == 1


def test_a_cheap_model_leaves_a_core_and_the_bundled_one_does_not(micro, bundled):
    from sentiric_cli.engine.compute_threads import compute_threads

    cores = compute_threads(0)
    with Engine(Settings(context_size=512, threads=4), micro) as e:
        reqs = [Request(head=e.model.tokenize(f"Chapter {i}."), body=[], tail=[], max_tokens=64) for i in range(4)]
        list(e.stream_many(reqs))
        assert e.ctx.n_threads == (cores - 1 if cores > 1 else 1)
        assert (e.ctx.pool.current if e.ctx.pool else e.ctx.n_threads) == e.ctx.n_threads
        # non-streamed requests (the server's quiet sequences): no per-token work for a spare core
        quiet = [Sequence(e, i, Request(head=e.model.tokenize(f"Part {i}."), max_tokens=16), quiet=True)
                 for i in range(4)]
        while not all(q.done for q in quiet):
            e.step([q for q in quiet if not q.done])
        assert e.ctx.n_threads == cores and (e.ctx.tuner.spare or cores == 1)  # cheap still, yet every core
        for q in quiet:
            q.close()
    with Engine(Settings(context_size=512, threads=1), bundled) as e:
        list(e.stream_many([Request(head=e.model.tokenize("Once upon a time"), body=[], tail=[], max_tokens=48)]))
        assert e.ctx.n_threads == cores and not e.ctx.tuner.spare


def test_a_quiet_sequence_decodes_its_text_once_and_it_is_the_streamed_text(micro):
    """A non-streamed sequence without stop strings decodes its text once, at the end (TextStream.lazy), not token by
    token. The text is the streamed one: byte tokens that are not UTF-8 replaced alike, a character split over two
    tokens joined, an answer ended by a grammar (and an end-of-generation token) alike."""
    with Engine(Settings(context_size=256, threads=1), micro) as e:
        m = e.model

        def run(req: Request, quiet: bool):
            s = Sequence(e, 0, req, quiet=quiet)
            while not s.done:
                e.step([s])
            s.close()
            return s.text.lazy, s.take_events()[-1]

        reqs = [Request(head=[m.bos] + m.tokenize(f"Part {i}: "), max_tokens=48) for i in range(4)]
        reqs.append(Request(head=[m.bos] + m.tokenize("Say: "), max_tokens=48,
                            sampling=SamplingParams(grammar='root ::= "h\u00e9llo"')))
        texts = []
        for req in reqs:
            (lazy, quiet), (eager, streamed) = run(req, True), run(req, False)
            assert lazy and not eager
            assert quiet.text == streamed.text and quiet.tokens == streamed.tokens
            assert quiet.finish_reason == streamed.finish_reason
            texts.append(quiet.text)
        assert any("\ufffd" in t for t in texts[:-1])  # random weights: some byte tokens are no UTF-8
        assert texts[-1] == "h\u00e9llo" and quiet.finish_reason == "stop" and m.is_eog(quiet.tokens[-1])
        assert not run(Request(head=[m.bos], max_tokens=8, stop=("x",)), True)[0]  # a stop string reads the text


def _mutable_fields(obj) -> dict:
    names = getattr(type(obj), "__slots__", None) or vars(obj)
    return {n: getattr(obj, n) for n in names
            if isinstance(getattr(obj, n), list | dict | set | deque | bytearray) or is_dataclass(getattr(obj, n))}


def test_a_fork_is_a_new_sequence_sharing_nothing_mutable_with_its_prompt(micro):
    """Request.n: the prompt is read once and copied (Sequence.fork). Every part of a sequence that holds state (its
    window, token chooser, text, tally) is a new object in the copy, and so is each list, dict or record inside them:
    a field added to one of them that the fork would share fails here."""
    with Engine(Settings(context_size=256, threads=3), micro) as e:
        m = e.model
        req = Request(head=[m.bos] + m.tokenize("Once upon a time"), max_tokens=6, token_logprobs=True, top_logprobs=2,
                      sampling=SamplingParams(temperature=1.0, seed=3), n=3)
        first = Sequence(e, 0, req, copies=[1, 2])
        while not first.generating:
            e.step([first])
        forks = first.take_forks()
        assert [(c.id, c.index, c.req.sampling.seed, c.req.n) for c in forks] == [(1, 1, 4, 1), (2, 2, 5, 1)]
        for c in forks:
            for part in ("window", "chooser", "text", "tally"):
                mine, theirs = getattr(first, part), getattr(c, part)
                assert mine is not theirs, part
                shared = [n for n, v in _mutable_fields(mine).items() if _mutable_fields(theirs)[n] is v]
                assert not shared, f"{part}: {shared} shared with the fork"
            assert c.window.toks == first.window.toks and c.window.stats.reused == len(first.window.toks)
        seqs = [first, *forks]
        while not all(s.done for s in seqs):
            e.step([s for s in seqs if not s.done])
        records = [next(ev for ev in s.take_events() if isinstance(ev, Record)) for s in seqs]
        for s in seqs:
            s.close()
    assert [r.index for r in records] == [0, 1, 2] and all(r.generated_tokens >= 1 for r in records)
    assert all(len(r.token_logprobs) == len(r.tokens) for r in records)
