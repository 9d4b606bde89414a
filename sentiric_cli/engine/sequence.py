"""One request's life in one KV stream: prefill in chunks, shift or recompute, generate.

A Sequence is made of the parts that own its state: the KV window (window.KVWindow: prompt queue, cells,
shifting), the token chooser (sampling.TokenChooser: sampler, logprobs), the text (text.TextStream: decoding,
stop strings) and the tally behind its Record. Others read it through its methods; only the engine's
step (fill, after_decode) and the slot loop (take_events, take_forks) drive it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sentiric_cli.engine.draft import HISTORY, Acceptance, Lookup, choose_k
from sentiric_cli.engine.logprobs import TokenLogprob, entry, log_softmax
from sentiric_cli.engine.sampling import TokenChooser
from sentiric_cli.engine.text import TextStream
from sentiric_cli.engine.types import GENERATED, HEAD, TAIL, Event, Piece, Progress, Record, Request
from sentiric_cli.engine.window import KVWindow

if TYPE_CHECKING:
    from sentiric_cli.engine.bindings import Batch
    from sentiric_cli.engine.core import Engine


@dataclass
class Tally:
    """What a Record reports beyond the window: time, answer tokens, the document's likelihood."""
    t0: float = field(default_factory=time.perf_counter)
    t_prefill: float | None = None  # when the first token was sampled: the prompt is read
    generated: int = 0
    scored: int = 0
    nll: float = 0.0
    prompt_lps: list[TokenLogprob] = field(default_factory=list)  # with Request.prompt_logprobs


class Sequence:
    """One request in one slot. quiet: no Piece/Progress events (a caller that wants only the record).
    copies: slots reserved for the request's other n - 1 answers, filled by fork() once the prompt is read."""

    def __init__(self, engine: Engine, seq_id: int, req: Request, reuse: int = 0, keep_cache: bool = False,
                 quiet: bool = False, copies: list[int] | None = None) -> None:
        self.e, self.id, self.req, self.keep_cache, self.quiet = engine, seq_id, req, keep_cache, quiet
        prompt = [(t, HEAD) for t in req.head] + [(t, i) for i, t in enumerate(req.body)] + [(t, TAIL) for t in req.tail]
        self.window = KVWindow(engine.ctx, seq_id, engine.shiftable, prompt, len(req.head), req.n_keep,
                               req.shift_discard, req.max_tokens, reuse, req.score)
        self.index = 0
        self.copies = list(copies or [])
        self._forked: list[Sequence] = []
        self._events: list[Event | Exception] = []
        self.done = False
        self.generating = False  # the prompt is read: one token per step from now on
        self.finish_reason = ""
        self.tally = Tally()
        self.make_room = self.window.make_room  # asked once per token per step: no frame of our own
        self._start_answer()

    def _start_answer(self) -> None:
        req = self.req
        self.chooser = TokenChooser(req.sampling, self.e.model, req.trace, req.token_logprobs, req.top_logprobs,
                                    prompt_end(req, req.sampling.penalty_last_n) if req.sampling.penalized else ())
        top = self.chooser.top if req.top_logprobs >= 0 else None
        self.text = TextStream(req.stop, top, None if self.quiet else self._piece)
        self.lookup: Lookup | None = None  # prompt-lookup drafting's index, made at the first step that drafts
        self.acceptance = Acceptance()

    def _piece(self, text: str, logprobs: list[TokenLogprob] | None) -> None:
        self._events.append(Piece(text, self.index, logprobs))

    # ---- read by the loop and the scheduler

    @property
    def cached_tokens(self) -> list[int]:
        """The tokens this slot's cache still holds from position 0 (empty once cleared)."""
        return list(self.window.toks)

    def take_events(self) -> list[Event | Exception]:
        out, self._events = self._events, []
        return out

    def take_forks(self) -> list[Sequence]:
        out, self._forked = self._forked, []
        return out

    def fail(self, error: Exception) -> None:
        """A decode failed: the error goes out as an event, then the record."""
        self._events.append(error)
        self.finish("error")

    # ---- driven by Engine.step

    def wants(self, budget: int) -> int:
        if self.done:
            return 0
        w = self.window
        return min(len(w.pending), w.chunk, budget)

    def fill(self, batch: Batch, n: int) -> None:
        w = self.window
        if n == 1 and self.generating and len(w.pending) == 1:  # generating: the token just sampled
            w.fill_one(batch)
        else:
            w.fill(batch, n, reading=not self.generating)

    def draft(self, seconds: list[float]) -> list[int]:
        """Tokens to check in this step beside the one just sampled (draft.py); [] for none. `seconds`: a step's
        cost by row count, one sequence's rows (Engine.draft_costs)."""
        req, w = self.req, self.window
        if req.draft <= 0 or self.e.model.recurrent:  # a recurrent state cannot drop the refused tokens
            return []
        k_max = min(req.draft, w.capacity - len(w.toks) - 1, self.e.batch.capacity - 1,
                    req.max_tokens - self.tally.generated)
        if k_max <= 0:
            return []
        if self.lookup is None:  # the prompt's end and the answer so far (the token just sampled included)
            self.lookup = Lookup(prompt_end(req, HISTORY) + self.chooser.tokens[:self.tally.generated])
        found = self.lookup.propose(k_max)
        return found[:choose_k(seconds, self.acceptance.rate, len(found))] if found else []

    def after_decode(self) -> None:
        w = self.window
        if w.to_score:
            t = self.tally
            k = self.req.prompt_logprobs
            for i, nxt in w.to_score:
                lp = log_softmax(self.e.ctx.logits(i))
                t.nll -= float(lp[nxt])
                t.scored += 1
                if k >= 0:
                    t.prompt_lps.append(entry(lp, nxt, k))
            w.to_score = []
        if w.logit_index is None:
            if not self.quiet:
                elapsed = time.perf_counter() - self.tally.t0
                done = w.stats.prefilled
                self._events.append(Progress(done, w.prompt_total, w.stats.shifts, done / elapsed if elapsed else 0.0))
            return
        if not self.generating:
            for i, slot in enumerate(self.copies, 1):  # the prompt is read: copy it, sample the same logits
                self._forked.append(self.fork(slot, i))
            self.copies = []
        if w.draft_rows:
            self._verify()
        else:
            self._sample(w.logit_index)

    def _verify(self) -> None:
        """A step with a draft: sample its rows in order, as one step each would have, while the sampler chooses the
        drafted token; the cells after the last one chosen go."""
        w = self.window
        rows = w.draft_rows
        base = len(w.toks) - len(rows)  # the cell of the token sampled last step
        drafted = w.toks[base + 1:]
        kept = 0
        for j, row in enumerate(rows):
            self._sample(row)
            if self.done or j >= len(drafted) or w.pending[-1][0] != drafted[j]:
                break
            w.pending.pop()  # chosen as drafted: its cell is in the cache already
            kept += 1
        w.keep(base + 1 + kept)
        self.acceptance.observe(len(drafted), kept)

    def fork(self, slot: int, index: int) -> Sequence:
        """Answer `index` of the same request in `slot`: the prompt's cache is copied (llama_memory_seq_cp, applied
        by llama.cpp before the next decode), not read again; call right after the prompt's last decode."""
        self.e.ctx.seq_cp(self.id, slot)
        c = Sequence.__new__(Sequence)
        c.e, c.id, c.keep_cache, c.quiet, c.index = self.e, slot, self.keep_cache, self.quiet, index
        c.req = replace(self.req, n=1, sampling=self.req.sampling.for_answer(index))  # the same prompt lists: not copied
        c.window = self.window.copy_to(slot)
        c.copies, c._forked, c._events, c.done, c.generating, c.finish_reason = [], [], [], False, False, ""
        c.make_room = c.window.make_room
        c.tally = Tally(t0=self.tally.t0, scored=self.tally.scored, nll=self.tally.nll)
        c._start_answer()
        c._sample(self.window.logit_index)
        return c

    def _sample(self, idx: int | None) -> None:
        assert idx is not None
        t, w, model = self.tally, self.window, self.e.model
        tok = self.chooser.choose(self.e.ctx, idx, len(self.text.text))
        if not self.generating:
            self.generating = True
            t.t_prefill = time.perf_counter()
            self._events.append(Progress(w.prompt_total, w.prompt_total, w.stats.shifts,
                                         w.prompt_total / max(t.t_prefill - t.t0, 1e-9)))
        if model.is_eog(tok):
            return self.finish("stop")
        t.generated += 1
        if not self.text.lazy and self.text.add(model.piece(tok)):  # lazy: decoded once, at the end
            return self.finish("stop")
        if t.generated >= self.req.max_tokens:
            return self.finish("length")
        w.pending.append((tok, GENERATED))
        if self.lookup is not None:
            self.lookup.push(tok)

    def finish(self, reason: str) -> None:
        if self.done:
            return
        piece = self.e.model.piece
        # the generated tokens; an end-of-generation token left out (it has no text)
        self.text.finish([piece(t) for t in self.chooser.tokens[:self.tally.generated]] if self.text.lazy else [],
                         stopped=reason == "stop")
        self.done, self.finish_reason = True, reason
        if not (self.keep_cache and self.window.stats.path == "none"):  # a shifted window is no prefix of anything
            self.window.clear()
        self._events.append(self.record())

    def record(self) -> Record:
        now = time.perf_counter()
        t, w, st, c, req = self.tally, self.window, self.window.stats, self.chooser, self.req
        t_pre = (t.t_prefill or now) - t.t0
        t_gen = now - (t.t_prefill or now)
        text = self.text.text
        return Record(
            prompt_tokens=w.prompt_total, head_tokens=len(req.head), document_tokens=len(req.body),
            n_keep=w.n_keep, context_size=w.capacity, generated_tokens=t.generated,
            finish_reason=self.finish_reason, path=st.path, shifts=st.shifts, evicted_tokens=st.evicted_count,
            evicted_spans=list(st.evicted), kept_spans=w.kept_spans(),
            recomputed_tokens=st.recomputed, reused_tokens=st.reused, max_fill=st.max_fill,
            prefill_seconds=t_pre, prefill_tokens_per_s=(w.prompt_total - st.reused) / t_pre if t_pre else 0.0,
            generation_tokens_per_s=t.generated / t_gen if t_gen > 0 else 0.0, text=text,
            tokens=list(c.tokens), logits=c.trace, scored_tokens=t.scored, nll=t.nll, prompt_logprobs=list(t.prompt_lps),
            token_logprobs=list(c.lps), logprobs=c.top.entries(0, c.top.before(len(text))),
            index=self.index, stop_string=self.text.matched, drafted_tokens=self.acceptance.drafted,
            accepted_tokens=self.acceptance.accepted)

    def close(self) -> None:
        self.chooser.close()


def prompt_end(req: Request, n: int) -> list[int]:
    """The last `n` tokens of the request's prompt (head, body, tail), without joining a long document."""
    if n <= 0:
        return []
    out = list(req.tail[-n:])
    for part in (req.body, req.head):
        if len(out) >= n:
            break
        out = list(part[max(0, len(part) - (n - len(out))):]) + out
    return out
