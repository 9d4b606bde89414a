"""The shifting-window engine: one model, one context, `threads` sequences. Yields data, never prints.

A sequence streams its prompt (pinned head, document, tail) through its KV window in chunks. When
the next chunk does not fit, the oldest unpinned tokens are evicted with llama_memory_seq_rm and
the rest shifted down with llama_memory_seq_add (RoPE makes this exact: attention depends only on
relative positions). Where the memory cannot shift (sliding-window caches without swa_full,
M-RoPE, recurrent state) the window is recomputed instead: the sequence is cleared and the kept
head plus the newest tokens are prefilled again. Generation past the window end shifts the same way.
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import shift
from .errors import SentiricError
from .llama import Batch, Context, Model
from .logprobs import LogprobLog, TokenLogprob, log_softmax
from .padding import StepCosts, pad
from .plan.modelinfo import model_info
from .plan.shards import read_model
from .sampling import Sampler
from .settings import Settings

HEAD, TAIL, GENERATED = -1, -2, -3  # sources of tokens that are not part of the document


@dataclass
class Request:
    head: list[int]  # pinned: BOS, instruction, question
    body: list[int] = field(default_factory=list)  # the document, streamed through the window
    tail: list[int] = field(default_factory=list)  # question again + answer cue
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int = -1
    n_keep: int = -1  # pinned tokens from the start; -1 = the whole head
    shift_discard: float = shift.DEFAULT_DISCARD
    trace: bool = False  # keep the logits each token was sampled from (tests compare runs with them)
    score: bool = False  # measure each document token's log-likelihood as it is read (perplexity)
    token_logprobs: bool = False  # keep each sampled token's log-probability (one float each: confidence)
    top_logprobs: int = -1  # >= 0: each sampled token's log-probability and this many alternatives (Piece/Record.logprobs)
    grammar: str | None = None  # GBNF: output constrained by llama.cpp's grammar sampler (structured output, tool calls)
    n: int = 1  # answers to the same prompt: the prompt is read once, then copied into n - 1 more slots (Sequence.fork)

    @classmethod
    def from_settings(cls, s: Settings, head: list[int], body: list[int] = (), tail: list[int] = (), **kw) -> Request:
        values = dict(max_tokens=s.max_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                      repeat_penalty=s.repeat_penalty, seed=s.seed, n_keep=s.n_keep, shift_discard=s.shift_discard)
        values.update(kw)
        return cls(list(head), list(body), list(tail), **values)


@dataclass
class Piece:
    text: str
    index: int = 0  # which of the request's n answers
    logprobs: list[TokenLogprob] | None = None  # with Request.top_logprobs: the tokens this text came from


@dataclass
class Progress:
    prefilled: int  # prompt tokens read so far (re-reads by the recompute path not counted)
    total: int
    shifts: int
    tokens_per_s: float


@dataclass
class Record:
    prompt_tokens: int
    head_tokens: int
    document_tokens: int
    n_keep: int
    context_size: int  # cells in this sequence's window
    generated_tokens: int
    finish_reason: str  # "stop", "length" or "interrupted"
    path: str  # "none" (it fit), "shift" or "recompute"
    shifts: int
    evicted_tokens: int
    evicted_spans: list[tuple[int, int]]  # document token positions [start, end) no longer in the window
    kept_spans: list[tuple[int, int]]  # document token positions still in the window at the end
    recomputed_tokens: int
    reused_tokens: int  # prompt tokens found already in the slot's cache (a shared prefix), not read again
    max_fill: int  # the window's largest fill, in cells
    prefill_seconds: float
    prefill_tokens_per_s: float
    generation_tokens_per_s: float
    text: str = ""
    tokens: list[int] = field(default_factory=list)  # generated token ids
    logits: list = field(default_factory=list)  # with Request.trace: the logits behind each sampled token
    scored_tokens: int = 0  # with Request.score: document tokens predicted from the window before them
    nll: float = 0.0  # their summed negative log-likelihood (nats)
    token_logprobs: list[float] = field(default_factory=list)  # with Request.token_logprobs, per generated token
    logprobs: list[TokenLogprob] = field(default_factory=list)  # with Request.top_logprobs, per generated token
    index: int = 0  # which of the request's n answers

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.scored_tokens) if self.scored_tokens else float("nan")


class Sequence:
    """One request's life in one KV stream: prefill in chunks, shift or recompute, generate."""

    def __init__(self, engine: Engine, seq_id: int, req: Request, reuse: int = 0, keep_cache: bool = False) -> None:
        self.e, self.id, self.req, self.keep_cache = engine, seq_id, req, keep_cache
        self.capacity = engine.ctx.n_ctx_seq
        prompt = [(t, HEAD) for t in req.head] + [(t, i) for i, t in enumerate(req.body)] + [(t, TAIL) for t in req.tail]
        self.n_keep = len(req.head) if req.n_keep < 0 else min(req.n_keep, len(prompt))
        if self.n_keep >= self.capacity - 1:
            raise SentiricError(f"the pinned head ({self.n_keep} tokens) leaves no room in a {self.capacity}-token window",
                                "shorten the instruction/question, raise context_size, or lower n_keep")
        self.pending: deque[tuple[int, int]] = deque(prompt)
        self.prompt_total = len(prompt)
        self.chunk = shift.chunk_size(self.capacity, self.n_keep, engine.ctx.n_batch, len(prompt) + req.max_tokens)
        self.toks: list[int] = []
        self.srcs: list[int] = []
        for _ in range(reuse):  # already in this slot's cache (the caller trimmed it to this): not read again
            tok, src = self.pending.popleft()
            self.toks.append(tok)
            self.srcs.append(src)
        self.reused = len(self.toks)
        self.sampler = Sampler(req, engine.model)
        self.index = 0
        self.quiet = False  # True: no Piece/Progress events (a non-streamed request wants only the record)
        self.fork_slots: list[int] = []  # reserved slots that get a copy of this prompt's cache (Request.n)
        self.forked: list[Sequence] = []  # the copies made, for the scheduler to place
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.sent = "", 0
        self.lazy_text = False  # set at the first token (_sample)
        self.events: list = []
        self.done = False
        self.logit_index: int | None = None
        self.generated = self.shifts = self.recomputed = 0
        self.prefilled = self.max_fill = self.reused
        self.path = "none"
        self.evicted: list[tuple[int, int]] = []
        self.evicted_count = 0
        self.t0 = time.perf_counter()
        self.t_prefill: float | None = None
        self.finish_reason = ""
        self.tokens: list[int] = []
        self.trace: list = []
        self.lps: list[float] = []
        self.top = LogprobLog(max(req.top_logprobs, 0))
        self.top_sent = 0
        self.to_score: list[tuple[int, int]] = []  # (batch index, next document token) for this step
        self.scored_src, self.scored, self.nll = -1, 0, 0.0

    @property
    def n_past(self) -> int:
        return len(self.toks)

    @property
    def generating(self) -> bool:
        return self.t_prefill is not None

    def wants(self, budget: int) -> int:
        return 0 if self.done else min(len(self.pending), self.chunk, budget)

    def make_room(self, n: int) -> bool:
        """Evict after the pinned head so n more tokens fit: shift in place, or clear and re-read.
        True when it did (a re-read queues the kept tokens in front: wants() changes)."""
        if len(self.toks) + n <= self.capacity:  # the usual case, asked once per token: answered first
            return False
        fraction = self.req.shift_discard if self.e.shiftable else max(self.req.shift_discard, shift.RECOMPUTE_DISCARD)
        d = shift.discard(self.n_past, n, self.capacity, self.n_keep, fraction)
        if not d:
            return False
        k = self.n_keep
        gone = self.srcs[k:k + d]
        self.evicted = shift.merge(self.evicted, shift.spans(gone))
        self.evicted_count += sum(1 for s in gone if s >= 0)
        self.shifts += 1
        ctx = self.e.ctx
        if self.e.shiftable:
            if not ctx.seq_rm(self.id, k, k + d):
                raise RuntimeError("llama.cpp refused to remove part of the sequence")
            ctx.seq_add(self.id, k + d, self.n_past, -d)
            del self.toks[k:k + d]
            del self.srcs[k:k + d]
            self.path = "shift"
            return True
        kept = list(zip(self.toks[:k] + self.toks[k + d:], self.srcs[:k] + self.srcs[k + d:], strict=True))
        ctx.seq_rm(self.id, -1, -1)
        self.toks, self.srcs = [], []
        self.pending.extendleft(reversed(kept))
        self.recomputed += len(kept)
        self.path = "recompute"
        return True

    def fill(self, batch: Batch, n: int) -> None:
        if n == 1 and self.t_prefill is not None and len(self.pending) == 1:  # generating: the token just sampled
            tok, src = self.pending.popleft()
            self.logit_index = batch.add(tok, len(self.toks), self.id, True)
            self.toks.append(tok)
            self.srcs.append(src)
            if len(self.toks) > self.max_fill:
                self.max_fill = len(self.toks)
            return
        self.logit_index = None
        self.to_score = []
        for k in range(n):
            tok, src = self.pending.popleft()
            last = k == n - 1 and not self.pending
            nxt = self.pending[0] if self.pending else None
            # score each document token once, from the window that precedes it (not again on a recompute)
            score = self.req.score and nxt is not None and nxt[1] > self.scored_src
            i = batch.add(tok, self.n_past, self.id, last or score)
            if score:
                self.to_score.append((i, nxt[0]))
                self.scored_src = nxt[1]
            self.toks.append(tok)
            self.srcs.append(src)
            if last:
                self.logit_index = i
        if not self.generating:  # pending = re-reads queued by a recompute + the unread rest: re-reads don't count
            self.prefilled = max(self.prefilled, self.prompt_total - len(self.pending))
        self.max_fill = max(self.max_fill, self.n_past)

    def after_decode(self) -> None:
        if self.to_score:
            for i, nxt in self.to_score:
                self.nll -= float(log_softmax(self.e.ctx.logits(i))[nxt])
                self.scored += 1
            self.to_score = []
        if self.logit_index is None:
            if self.quiet:
                return
            elapsed = time.perf_counter() - self.t0
            done = self.prefilled
            self.events.append(Progress(done, self.prompt_total, self.shifts, done / elapsed if elapsed else 0.0))
            return
        if self.t_prefill is None:
            for i, slot in enumerate(self.fork_slots, 1):  # the prompt is read: copy it, sample the same logits
                self.forked.append(self.fork(slot, i))
            self.fork_slots = []
        self._sample(self.logit_index)

    def fork(self, slot: int, index: int) -> Sequence:
        """Answer `index` of the same request in `slot`: the prompt's cache is copied (llama_memory_seq_cp, applied
        by llama.cpp before the next decode), not read again; call right after the prompt's last decode."""
        self.e.ctx.seq_cp(self.id, slot)
        c = copy.copy(self)
        c.id, c.index = slot, index
        c.req = dataclasses.replace(self.req, n=1, seed=self.req.seed + index if self.req.seed >= 0 else -1)
        c.sampler = Sampler(c.req, self.e.model)
        c.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        c.pending, c.toks, c.srcs, c.evicted = deque(self.pending), list(self.toks), list(self.srcs), list(self.evicted)
        c.top, c.top_sent = LogprobLog(self.top.k), 0
        c.events, c.tokens, c.trace, c.lps, c.to_score, c.forked, c.fork_slots = [], [], [], [], [], [], []
        c.reused = len(c.toks)  # copied, not read
        c._sample(self.logit_index)
        return c

    def _sample(self, idx: int) -> None:
        req, ctx, model = self.req, self.e.ctx, self.e.model  # once per token per sequence: locals, not lookups
        if req.trace:
            self.trace.append(ctx.logits(idx))
        tok = self.sampler.sample(ctx, idx)
        self.tokens.append(tok)
        if req.token_logprobs:
            self.lps.append(float(log_softmax(ctx.logits(idx))[tok]))
        if req.top_logprobs >= 0 and not model.is_eog(tok):
            self.top.add(ctx.logits(idx), tok, len(self.text))
        if self.t_prefill is None:
            self.t_prefill = time.perf_counter()
            # nothing reads the text before the end (no stream, no stop strings, no text offsets for logprobs):
            # it is decoded once in finish(), not token by token (a decode, a concatenation and a scan each)
            self.lazy_text = self.quiet and not req.stop and req.top_logprobs < 0
            self.events.append(Progress(self.prompt_total, self.prompt_total, self.shifts,
                                        self.prompt_total / max(self.t_prefill - self.t0, 1e-9)))
        if model.is_eog(tok):
            return self.finish("stop")
        self.generated += 1
        if not self.lazy_text:
            self.text += self.decoder.decode(model.piece(tok))
            if self._emit():
                return self.finish("stop")
        if self.generated >= self.req.max_tokens:
            return self.finish("length")
        self.pending.append((tok, GENERATED))

    def _emit(self) -> bool:
        """Send new text, holding back what could be the start of a stop string. True when one matched."""
        if not self.req.stop:
            self._send(len(self.text))
            return False
        for s in self.req.stop:
            hit = self.text.find(s, max(self.sent - len(s), 0))
            if hit >= 0:
                self.text = self.text[:hit]
                self._send(len(self.text))
                return True
        hold = max((len(s) - 1 for s in self.req.stop), default=0)
        self._send(len(self.text) - hold)
        return False

    def _send(self, upto: int) -> None:
        if upto > self.sent and self.quiet:  # nobody reads the pieces: the record carries the text
            self.sent = upto
        elif upto > self.sent:
            lps = None
            if self.req.top_logprobs >= 0:  # the tokens this text came from (those starting before its end)
                end = self.top.before(upto, lo=self.top_sent)
                lps, self.top_sent = self.top.entries(self.top_sent, end), end
            self.events.append(Piece(self.text[self.sent:upto], self.index, lps))
            self.sent = upto

    def finish(self, reason: str) -> None:
        if self.done:
            return
        if self.lazy_text:  # the generated tokens, an end-of-generation token left out (it has no text)
            piece = self.e.model.piece
            self.text = self.decoder.decode(b"".join(piece(t) for t in self.tokens[:self.generated]), final=True)
        else:
            self.text += self.decoder.decode(b"", final=True)
        if reason != "stop":  # cut on length: a held-back start of a stop string is not part of the answer
            self.text = self.text[:len(self.text) - _partial_stop(self.text, self.req.stop)]
        self._send(len(self.text))
        self.done, self.finish_reason = True, reason
        if not (self.keep_cache and self.path == "none"):  # a shifted window is no prefix of anything
            self.e.ctx.seq_rm(self.id, -1, -1)
            self.toks = []
        self.events.append(self.record())

    def record(self) -> Record:
        now = time.perf_counter()
        t_pre = (self.t_prefill or now) - self.t0
        t_gen = now - (self.t_prefill or now)
        return Record(
            prompt_tokens=self.prompt_total, head_tokens=len(self.req.head), document_tokens=len(self.req.body),
            n_keep=self.n_keep, context_size=self.capacity, generated_tokens=self.generated,
            finish_reason=self.finish_reason, path=self.path, shifts=self.shifts, evicted_tokens=self.evicted_count,
            evicted_spans=list(self.evicted), kept_spans=shift.spans(self.srcs),
            recomputed_tokens=self.recomputed, reused_tokens=self.reused, max_fill=self.max_fill,
            prefill_seconds=t_pre, prefill_tokens_per_s=(self.prompt_total - self.reused) / t_pre if t_pre else 0.0,
            generation_tokens_per_s=self.generated / t_gen if t_gen > 0 else 0.0, text=self.text,
            tokens=list(self.tokens), logits=self.trace, scored_tokens=self.scored, nll=self.nll,
            token_logprobs=list(self.lps), logprobs=self.top.entries(0, self.top.before(len(self.text))),
            index=self.index)

    def close(self) -> None:
        self.sampler.close()


class Engine:
    def __init__(self, settings: Settings, path: Path) -> None:
        self.info = model_info(read_model(path))
        self.settings = settings
        self.model = Model(path, settings)
        try:
            self.ctx = Context(self.model, settings)
        except BaseException:
            self.model.close()
            raise
        # llama.cpp reports recurrent memory as shiftable, but removing a middle range does not undo a state
        self.shiftable = self.ctx.can_shift and self.info.can_shift_arch
        self.batch = Batch(max(self.ctx.n_batch, settings.threads))
        self.costs = StepCosts()  # decode step cost by rows: empty = steps are never padded (padding.py)

    def measure_steps(self) -> None:
        """Measure what a decode step costs by row count, so that steps can be padded to a cheaper size
        (padding.py). For serving several sequences; the context must be idle."""
        n = self.ctx.n_seq_max
        if not self.settings.pad_steps or n < 2 or self.info.recurrent:
            return
        try:
            self.costs = StepCosts.measure(self.ctx, self.batch, self._pad_token(), n, min(n, self.batch.capacity))
        except RuntimeError:  # a decode llama.cpp refused: padding is an optimisation, serving goes on without it
            self.costs = StepCosts()

    def keepable(self, seq: int, n: int) -> int:
        """How many of the first `n` tokens `seq`'s cache holds a new request can keep and go on from: n, or 0 where
        the memory cannot go back to position n. A sliding-window cache has dropped the cells older than its window
        behind its last position; going on from n needs the n_swa before n (llama-server's test). A recurrent
        state is at its last position only."""
        if n <= 0:
            return 0
        ctx, model = self.ctx, self.model
        if model.recurrent:
            return n if n == ctx.seq_pos_max(seq) + 1 else 0
        if model.n_swa > 0 and ctx.seq_pos_min(seq) > max(0, n - model.n_swa):
            return 0
        return n

    def _pad_token(self) -> int:
        return self.model.bos if self.model.bos >= 0 else 0

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()
        self.model.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def step(self, seqs: list[Sequence]) -> None:
        """One llama_decode for every active sequence: one token per generating one, prompt chunks for the rest."""
        self.batch.clear()
        generating, reading = [], []
        for s in seqs:
            (generating if s.t_prefill is not None else reading).append(s)
        # while others generate, a prompt is read one ubatch per step, not a whole batch: one decode of 2k prompt
        # tokens stalled every stream for seconds; a ubatch at a time costs the same compute, in slices
        budget = self.ctx.n_batch if not generating else len(generating) + self.settings.ubatch_size
        active = []
        prompt = False  # a sequence still reading its prompt is in the step
        streaming = False  # a sequence whose pieces go out as they come is in the step
        for s in generating + reading:  # generating sequences first: latency
            n = s.wants(budget)
            if not n:
                continue
            if s.make_room(n):
                n = s.wants(budget)  # recompute may have queued the kept tokens in front
            s.fill(self.batch, n)
            budget -= n
            active.append(s)
            prompt = prompt or s.t_prefill is None
            streaming = streaming or not s.quiet
            if budget <= 0:
                break
        padded: list[tuple[int, int]] = []
        real = len(self.batch)
        decode_only = bool(active) and real == len(active) and not prompt
        if decode_only:
            rows = self.costs.choose(real)  # a row count the kernels run faster (padding.py)
            if rows > real:
                busy = {s.id for s in seqs}
                idle = [i for i in range(self.ctx.n_seq_max) if i not in busy]
                padded = pad(self.ctx, self.batch, idle, rows, self.ctx.n_ctx_seq, self._pad_token())
        try:
            if active:
                t0 = time.perf_counter()
                self.ctx.decode(self.batch, prompt=prompt, streaming=streaming)
                if decode_only:
                    self.costs.observe(real, bool(padded), time.perf_counter() - t0)
        finally:
            for seq_id, first in padded:  # the extra rows' cells go: the next real token takes that position
                self.ctx.seq_rm(seq_id, first, -1)
        for s in active:
            s.after_decode()

    def stream_many(self, requests: list[Request]) -> Iterator[tuple[int, Piece | Progress | Record]]:
        """Run requests together in this context (at most `threads` at once), yielding (request index, event)."""
        if len(requests) > self.ctx.n_seq_max:
            raise SentiricError(f"{len(requests)} requests for {self.ctx.n_seq_max} sequence slots",
                                "raise threads, or run them in turns")
        seqs: list[Sequence] = []
        try:
            for i, r in enumerate(requests):
                seqs.append(Sequence(self, i, r))
            while not all(s.done for s in seqs):
                try:
                    self.step([s for s in seqs if not s.done])
                except KeyboardInterrupt:  # Ctrl-C inside llama_decode: end every sequence with what it has
                    _interrupt(seqs)
                for i, s in enumerate(seqs):
                    while s.events:
                        try:
                            yield i, s.events.pop(0)
                        except KeyboardInterrupt:  # thrown in by a consumer interrupted while printing
                            _interrupt(seqs)
        finally:
            _interrupt(seqs)  # no-op for finished sequences; frees their slots when the consumer walks away
            for s in seqs:
                s.close()

    def stream(self, request: Request) -> Iterator[Piece | Progress | Record]:
        for _, event in self.stream_many([request]):
            yield event


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the start of a stop string."""
    return max((k for s in stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), default=0)


def _interrupt(seqs: list[Sequence]) -> None:
    for s in seqs:
        s.finish("interrupted")
