"""The shifting-window engine: one model, one context, `threads` sequences. Yields data, never prints.

Engine loads the model (on the CPU path a child process showed runnable: cpupath.py), makes the context and
decodes one step for a list of sequences (sequence.py); the slot loop (loop.py) drives the steps.

A sequence streams its prompt (pinned head, document, tail) through its KV window in chunks. When
the next chunk does not fit, the oldest unpinned tokens are evicted with llama_memory_seq_rm and
the rest shifted down with llama_memory_seq_add (RoPE makes this exact: attention depends only on
relative positions). Where the memory cannot shift (sliding-window caches without swa_full,
M-RoPE, recurrent state) the window is recomputed instead: the sequence is cleared and the kept
head plus the newest tokens are prefilled again. Generation past the window end shifts the same way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

from sentiric_cli.engine.bindings import Batch, Context, Model
from sentiric_cli.engine.cpupath import cpu_path, require_runnable
from sentiric_cli.engine.deterministic import FixedSteps
from sentiric_cli.engine.llamalog import log_enabled
from sentiric_cli.engine.loop import stream_many
from sentiric_cli.engine.padding import StepCosts, pad
from sentiric_cli.engine.sequence import Sequence
from sentiric_cli.engine.types import Event, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.settings import Settings


class Engine:
    def __init__(self, settings: Settings, path: Path) -> None:
        self.info = model_info(read_model(path))
        self.settings = settings
        # AMX / repacked / plain weights: whatever a child process showed survives a decode here (cpupath.py)
        self.cpu = require_runnable(cpu_path())
        if log_enabled():
            sys.stderr.write(f"sentiric: CPU path: {self.cpu.describe()}\n")
        self.model = Model(path, settings, extra_bufts=self.cpu.extra_bufts)
        try:
            self.ctx = Context(self.model, settings)
        except BaseException:
            self.model.close()
            raise
        # llama.cpp reports recurrent memory as shiftable, but removing a middle range does not undo a state
        self.shiftable = self.ctx.can_shift and self.info.can_shift_arch
        self.batch = Batch(max(self.ctx.n_batch, settings.threads))
        self.costs = StepCosts()  # decode step cost by rows: empty = steps are never padded (padding.py)
        self.draft_costs = StepCosts()  # one sequence's step by rows, for drafting (draft.py); empty = rows taken as free
        self.deterministic = settings.deterministic
        self.fixed = FixedSteps(self.ctx, self.batch, self._pad_token())  # the deterministic setting's steps
        if self.deterministic:  # the same compute threads for every step (compute_threads.ThreadTuner)
            self.ctx.tuner.enabled = False

    def measure_steps(self) -> None:
        """Measure what a decode step costs by row count, so that steps can be padded to a cheaper size
        (padding.py), and one sequence's step of 1 + draft_tokens rows for drafting. For serving several
        sequences; the context must be idle."""
        self.measure_drafts()
        n = self.ctx.n_seq_max
        if not self.settings.pad_steps or self.deterministic or n < 2 or self.info.recurrent:
            return
        try:
            self.costs = StepCosts.measure(self.ctx, self.batch, self._pad_token(), n, min(n, self.batch.capacity))
        except RuntimeError:  # a decode llama.cpp refused: padding is an optimisation, serving goes on without it
            self.costs = StepCosts()

    def measure_drafts(self) -> None:
        """What a step of 1 .. 1 + draft_tokens rows of one sequence costs (draft.choose_k); the context must be idle."""
        k = self.settings.draft_tokens
        if k <= 0 or self.deterministic or self.info.recurrent:
            return
        try:
            self.draft_costs = StepCosts.measure(self.ctx, self.batch, self._pad_token(), 1,
                                                 min(1 + k, self.batch.capacity), budget_s=3.0)
        except RuntimeError:
            self.draft_costs = StepCosts()

    def keepable(self, seq: int, n: int) -> int:
        """How many of the first `n` tokens `seq`'s cache holds a new request can keep and go on from (keep_rule)."""
        return self.keep_rule(n, self.ctx.seq_pos_min(seq), self.ctx.seq_pos_max(seq))

    def keep_rule(self, n: int, pos_min: int, pos_max: int) -> int:
        """n, or 0 where a cache holding positions pos_min..pos_max cannot go back to position n. A sliding-window
        cache has dropped the cells older than its window behind its last position; going on from n needs the n_swa
        before n (llama-server's test). A recurrent state is at its last position only. The same rule serves a
        slot's cache and one saved in host RAM (serve/hostcache.py), whose positions were noted when it was saved."""
        if n <= 0:
            return 0
        model = self.model
        if model.recurrent:
            return n if n == pos_max + 1 else 0
        if model.n_swa > 0 and pos_min > max(0, n - model.n_swa):
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
        generating: list[Sequence] = []
        reading: list[Sequence] = []
        for s in seqs:
            (generating if s.generating else reading).append(s)
        if self.deterministic:  # fixed-shape steps (deterministic.py)
            return self.fixed.step(generating, reading)
        # while others generate, a prompt is read one ubatch per step, not a whole batch: one decode of 2k prompt
        # tokens stalled every stream for seconds; a ubatch at a time costs the same compute, in slices
        budget = self.ctx.n_batch if not generating else len(generating) + self.settings.ubatch_size
        active = []
        prompt = False  # a sequence still reading its prompt is in the step
        streaming = False  # a sequence whose pieces go out as they come is in the step
        # drafting (draft.py) only for a sequence alone in its step: llama.cpp computes a step whose sequences have
        # unequal row counts in several parts, and under load the other sequences keep the batch busy anyway
        solo = len(seqs) == 1 and generating
        for s in generating + reading:  # generating sequences first: latency
            n = s.wants(budget)
            if not n:
                continue
            if s.make_room(n):
                n = s.wants(budget)  # recompute may have queued the kept tokens in front
            draft = s.draft(self.draft_costs.seconds) if solo and n == 1 else []
            if draft:
                s.window.fill_draft(self.batch, draft)
                n += len(draft)
            else:
                s.fill(self.batch, n)
            budget -= n
            active.append(s)
            prompt = prompt or not s.generating
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
                # a drafted step's rows are not one token each: the thread tuner judges steps by their sequences
                self.ctx.decode(self.batch, prompt=prompt, streaming=streaming, sequences=len(active))
                if decode_only:
                    self.costs.observe(real, bool(padded), time.perf_counter() - t0)
        finally:
            for seq_id, first in padded:  # the extra rows' cells go: the next real token takes that position
                self.ctx.seq_rm(seq_id, first, -1)
        for s in active:
            s.after_decode()

    def stream_many(self, requests: list[Request]) -> Iterator[tuple[int, Event]]:
        """Run requests together in this context (at most `threads` at once), yielding (request index, event)."""
        if len(requests) > self.ctx.n_seq_max:
            raise SentiricError(f"{len(requests)} requests for {self.ctx.n_seq_max} sequence slots",
                                "raise threads, or run them in turns")
        return stream_many(self, requests)

    def stream(self, request: Request) -> Generator[Event, None, None]:
        for _, event in self.stream_many([request]):
            yield event
