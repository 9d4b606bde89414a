"""Continuous batching: one thread owns the llama.cpp context; requests reach it through a queue.

The scheduler is policy and a bridge: admission (queue limit, n slots for n answers, draining), placement
(placement.py: the lowest free slot, busy slots together: 4 rows in slots 1, 3, 5, 7 of the bundled model took
53 ms a step, in 0-3 30 ms; a kept prefix not read again, so multi-turn chat does not re-read the history), the
prefix cache (what each free slot holds), and the hand-over of events to each request's asyncio loop. The steps
themselves are the engine's slot loop (engine/loop.py), the same one `sentiric run` uses.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.loop import SlotLoop
from sentiric_cli.engine.sequence import Sequence
from sentiric_cli.engine.types import Piece, Progress, Record, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.serve.hostcache import HostCache, Saved
from sentiric_cli.serve.placement import COPY_GAIN, place


class Busy(Exception):
    """Not the client's mistake: the server cannot take the request now (429 or 503)."""


class QueueFull(Busy):
    """Every slot is busy and `max_queue` requests wait: answered 429 with Retry-After."""


class ShuttingDown(Busy):
    """The server is stopping: a request that did not get a slot is answered 503."""


@dataclass
class Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    stream: bool = True  # False: no per-token events, only the final record (fewer wake-ups of the event loop)
    cancelled: bool = False
    internal: bool = False  # a long-document request's chunk: its cache is not worth saving to host RAM
    running: int = 0  # its sequences in slots (n answers: one, then n once the prompt is read and copied)
    submitted: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        """Called from the event loop when the client goes away: the slot is freed at the next step."""
        self.cancelled = True


@dataclass
class Counters:
    requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    shifts: int = 0
    evicted_tokens: int = 0
    reused_tokens: int = 0
    rejected: int = 0
    cancelled: int = 0
    copied_prefixes: int = 0  # prompts whose cached start was copied from another slot to the lowest free one
    drafted_tokens: int = 0  # prompt-lookup drafting: tokens proposed, and those the model confirmed
    accepted_tokens: int = 0
    saved_bytes: int = 0  # bytes of slot caches saved to host RAM (cache_ram), all told


class Scheduler:
    def __init__(self, engine: Engine, max_queue: int = 64) -> None:
        self.engine = engine
        self.max_queue = max_queue
        n = engine.ctx.n_seq_max
        self.loop: SlotLoop[Job] = SlotLoop(engine, errors_end_sequences=True)  # a failed decode ends its requests
        self.cached: list[list[int]] = [[] for _ in range(n)]  # tokens a free slot still holds from 0
        # whether that cache may go to host RAM when the slot is taken: not a long document's chunk, which no later
        # prompt starts with (saving it cost a copy of its whole cache and pushed conversations out of the budget)
        self.saveable: list[bool] = [False] * n
        s = engine.settings
        # deterministic: no cache reuse of any kind, a kept prefix was computed in another batch shape (core.py)
        self.reuse = not s.deterministic
        self.host = HostCache(s.cache_ram * 1024 * 1024) if s.cache_ram > 0 and self.reuse else None
        self.queue: deque[Job] = deque()
        self.outbox: dict[asyncio.AbstractEventLoop, list] = {}  # events not yet handed to their loop
        self.waking: set[asyncio.AbstractEventLoop] = set()  # loops with a _deliver already scheduled
        self.out_lock = threading.Lock()
        self.cv = threading.Condition()
        self.counters = Counters()
        self.accepting = True
        self.stopping = False
        self.deadline: float | None = None  # draining: running requests are cut at this time.monotonic()
        self.thread = threading.Thread(target=self._run, name="sentiric-scheduler", daemon=True)
        self.measured = threading.Event()
        self.thread.start()
        self.measured.wait()  # ready once the step costs are known (a couple of seconds at most)

    # ---- called from the event loop

    def submit(self, request: Request, stream: bool = True, internal: bool = False) -> Job:
        """Queue a request. At most `max_queue` requests wait beyond those a free slot takes (0: no waiting).
        internal: part of an accepted long-document request (a chunk), which keeps at most `threads` of them in
        flight: not counted against the queue limit, or a long document would 429 itself."""
        total = len(self.loop.seqs)
        if request.n > total:
            raise SentiricError(f"n={request.n} answers need {request.n} slots; this server has {total}",
                                "ask for fewer, or serve with more --threads")
        loop = asyncio.get_running_loop()
        job = Job(request, loop, asyncio.Queue(), stream=stream, internal=internal)
        with self.cv:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down")
            waiting = sum(j.request.n for j in self.queue) + request.n - (total - self.loop.busy())
            if not internal and waiting > self.max_queue:
                self.counters.rejected += 1
                raise QueueFull(f"queue full ({self.max_queue} waiting)")
            self.queue.append(job)
            self.cv.notify()
        return job

    def status(self) -> dict:
        with self.cv:
            total, busy = len(self.loop.seqs), self.loop.busy()
            return {"total": total, "busy": busy, "free": total - busy, "queue": len(self.queue)}

    def drain(self, timeout: float) -> None:
        """Stop accepting: waiting requests are answered 503 now, running ones get `timeout` seconds to finish and
        are then cut (their streams end with a finish_reason). Safe from a signal handler; a second call does
        not extend the deadline."""
        self.accepting = False
        if self.deadline is None:
            self.deadline = time.monotonic() + timeout
        with self.cv:
            self.cv.notify()

    def shutdown(self, timeout: float) -> None:
        """Drain (if not draining already), wait for the cut, stop the thread: `timeout` plus one step at most."""
        self.drain(timeout)
        while self.status()["busy"] or self.status()["queue"]:
            if self.deadline is not None and time.monotonic() > self.deadline + 30:  # a decode that never returns: give up on it
                break
            time.sleep(0.02)
        with self.cv:
            self.stopping = True
            self.cv.notify()
        self.thread.join(timeout=30)

    # ---- the scheduler thread

    def _run(self) -> None:
        # on this thread, the one that decodes from now on: llama.cpp's OpenMP build keeps a team of compute
        # threads per calling thread, and a second team left waiting cost 20% of every later step
        try:
            self.engine.measure_steps()
        finally:
            self.measured.set()
        loop = self.loop
        while True:
            with self.cv:
                while not self.stopping and not self.queue and not loop.busy():
                    self.cv.wait()
                if self.stopping:
                    break
                if not self.accepting:  # draining: nothing waiting gets a slot any more
                    while self.queue:
                        job = self.queue.popleft()
                        self._send(job, ShuttingDown("the server is shutting down"))
                        self._send(job, None)
                self._admit()
            cut = self.deadline is not None and time.monotonic() >= self.deadline
            for seq, job in loop.occupied():
                if (job.cancelled or cut) and not seq.done:
                    seq.finish("interrupted")
                    self.counters.cancelled += job.cancelled
            for seq, job in loop.step():
                self._dispatch(seq, job)
            self._flush()
        loop.interrupt()
        for seq, job in loop.occupied():
            self._dispatch(seq, job)
        self._flush()

    def _admit(self) -> None:
        loop = self.loop
        while self.queue:
            free = loop.free()
            if len(free) < self.queue[0].request.n:  # in order: a request for n answers waits for n slots
                return
            job = self.queue.popleft()
            if job.cancelled:
                self._send(job, None)
                continue
            req = job.request
            # a scored request reuses at most its head: each body token is scored as it is read, and one found in
            # the cache would be read by no one
            slot, reuse = self._place(free, req.head if req.score else req.head + req.body + req.tail)
            try:
                # quiet: a non-streamed request wants only the record (the copies made for n answers inherit it)
                seq = Sequence(self.engine, slot, job.request, reuse=reuse, keep_cache=self.reuse, quiet=not job.stream,
                               copies=[i for i in free if i != slot][:job.request.n - 1])
            except SentiricError as e:
                self.engine.ctx.seq_rm(slot, -1, -1)
                self.cached[slot] = []
                self._send(job, e)
                self._send(job, None)
                continue
            self.cached[slot] = []
            job.running = job.request.n  # its copies take their reserved slots once the prompt is read
            loop.place(seq, job)

    def _place(self, free: list[int], prompt: list[int]) -> tuple[int, int]:
        """The slot a prompt runs in and how many of its tokens that slot holds (placement.py), made true in the
        cache: a longer prefix copied down from another free slot, or restored from host RAM (hostcache.py), the rest
        of the slot's old cache dropped (saved to host RAM first, when it is worth keeping)."""
        ctx = self.engine.ctx
        if not self.reuse:
            low = free[0]
            ctx.seq_rm(low, -1, -1)
            self.cached[low] = []
            return low, 0
        p = place(free, {i: self.cached[i] for i in free}, prompt, self.engine.keepable)
        hit = self.host.best(prompt, self._keep_saved) if self.host is not None else None
        if hit is not None and hit[1] - p.reuse >= COPY_GAIN:  # a restore costs a copy of the bytes, as seq_cp does
            return self._restore(p.slot, hit[0], hit[1])
        low, reuse = p.slot, p.reuse
        self._save(low, 0 if p.copy_from is not None else reuse)
        if p.copy_from is not None:
            ctx.seq_rm(low, -1, -1)
            ctx.seq_cp(p.copy_from, low)
            self.cached[low] = self.cached[p.copy_from]
            self.counters.copied_prefixes += 1
        return low, self._trim(low, reuse)

    def _trim(self, slot: int, reuse: int) -> int:
        """Drop what `slot` holds past `reuse` tokens; the tokens kept (0 when llama.cpp could not cut there)."""
        if reuse < len(self.cached[slot]) and not self.engine.ctx.seq_rm(slot, reuse, -1):
            self.engine.ctx.seq_rm(slot, -1, -1)
            return 0
        return reuse

    def _keep_saved(self, s: Saved, n: int) -> int:
        return self.engine.keep_rule(n, s.pos_min, s.pos_max)

    def _save(self, slot: int, keep: int) -> None:
        """Save what `slot` holds to host RAM before all but its first `keep` tokens go, when that is a prefix worth
        keeping (at least COPY_GAIN tokens more than stays)."""
        toks = self.cached[slot]
        if self.host is None or not self.saveable[slot] or len(toks) - keep < COPY_GAIN:
            return
        ctx = self.engine.ctx
        data = ctx.state_save(slot)
        if data is None:
            return
        s = Saved(list(toks), data, ctx.seq_pos_min(slot), ctx.seq_pos_max(slot))
        if self.host.put(s, self._keep_saved):
            self.counters.saved_bytes += s.size

    def _restore(self, slot: int, key: int, n: int) -> tuple[int, int]:
        """Put a cache saved in host RAM into `slot` (what the slot held saved first), trimmed to `n` tokens."""
        assert self.host is not None
        self._save(slot, 0)
        s = self.host.take(key)
        if not self.engine.ctx.state_load(slot, s.data):  # llama.cpp could not take it back: read the prompt
            self.cached[slot] = []
            return slot, 0
        self.cached[slot] = s.tokens
        n = self._trim(slot, n)
        self.host.tally.hits += n > 0
        self.host.tally.restored_tokens += n
        return slot, n

    def _dispatch(self, seq: Sequence, job: Job) -> None:
        for ev in seq.take_events():
            if isinstance(ev, Record):
                c = self.counters
                c.requests += 1
                c.prompt_tokens += ev.prompt_tokens
                c.generated_tokens += ev.generated_tokens
                c.shifts += ev.shifts
                c.evicted_tokens += ev.evicted_tokens
                c.reused_tokens += ev.reused_tokens
                c.drafted_tokens += ev.drafted_tokens
                c.accepted_tokens += ev.accepted_tokens
            elif isinstance(ev, Piece | Progress) and not job.stream:
                continue  # the record carries the whole text
            self._send(job, ev)
        if seq.done:
            job.running -= 1 + len(seq.copies)  # copies it reserved but never made (done before its prompt was read)
            if job.running <= 0:
                self._send(job, None)  # end of stream
            with self.cv:
                self.cached[seq.id] = seq.cached_tokens  # empty unless the cache was kept (no shift)
                self.saveable[seq.id] = not job.internal
                self.loop.release(seq)

    def _send(self, job: Job, event) -> None:
        """Queue an event for its job's event loop; delivered by _flush, at most one wake-up per loop at a time."""
        with self.out_lock:
            self.outbox.setdefault(job.loop, []).append((job, event))

    def _flush(self) -> None:
        """Wake each event loop that has events, unless a wake-up is already on its way (it takes the new ones
        too). Waking a loop costs a write to its self-pipe and a GIL hand-over: once per token per request
        was 13% of a step on a small model; now it is at most once per step."""
        with self.out_lock:
            wake = [loop for loop in self.outbox if loop not in self.waking]
            self.waking.update(wake)
        for loop in wake:
            try:
                loop.call_soon_threadsafe(self._deliver, loop)
            except RuntimeError:  # the event loop is gone (server stopped)
                with self.out_lock:
                    self.outbox.pop(loop, None)
                    self.waking.discard(loop)

    def _deliver(self, loop) -> None:
        """On the event loop: hand every waiting event to its job."""
        with self.out_lock:
            batch = self.outbox.pop(loop, [])
            self.waking.discard(loop)
        for job, event in batch:
            job.events.put_nowait(event)


