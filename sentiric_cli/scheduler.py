"""Continuous batching: one thread owns the llama.cpp context; requests reach it through a queue.

Each step builds one batch with the next token of every generating sequence plus prompt chunks of
sequences still prefilling, and calls llama_decode once (Engine.step). A request takes the lowest free
slot (a KV stream): llama.cpp decodes each run of consecutive KV streams in a step as a graph of its
own, so busy slots kept together make one pass over the weights per step instead of one per run (4 rows
in slots 1, 3, 5, 7 of the bundled model: 53 ms a step; in 0-3: 30 ms). A free slot's cache is kept:
when it starts with the same tokens as a new prompt, that shared prefix is not read again (multi-turn
chat does not re-read the history); held by another free slot, it is copied down first. Events go back
to the asking coroutine through its event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .engine import Engine, Piece, Progress, Record, Request, Sequence
from .errors import SentiricError

# a free slot holding this many more of a prompt's first tokens than the lowest free slot is copied down to it:
# the copy made the next step 1.7-3.6 ms longer on the bundled model (bench/slot_steps.py), where each token read
# adds a row to a step (8 rows: 46-51 ms, 1 row: 14 ms); on the micro model it is 0.16 ms, a handful of its steps
COPY_GAIN = 8


class QueueFull(SentiricError):
    pass


class ShuttingDown(SentiricError):
    """The server is stopping: a request that did not get a slot is answered 503."""


@dataclass
class Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    stream: bool = True  # False: no per-token events, only the final record (fewer wake-ups of the event loop)
    cancelled: bool = False
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


class Scheduler:
    def __init__(self, engine: Engine, max_queue: int = 64) -> None:
        self.engine = engine
        self.max_queue = max_queue
        n = engine.ctx.n_seq_max
        self.slots: list[tuple[Sequence, Job] | None] = [None] * n
        self.reserved: set[int] = set()  # slots held for the copies of a prompt being read (Request.n)
        self.cached: list[list[int]] = [[] for _ in range(n)]  # tokens a free slot still holds from 0
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
        if request.n > len(self.slots):
            raise SentiricError(f"n={request.n} answers need {request.n} slots; this server has {len(self.slots)}",
                                "ask for fewer, or serve with more --threads")
        loop = asyncio.get_running_loop()
        job = Job(request, loop, asyncio.Queue(), stream=stream)
        with self.cv:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down")
            taken = sum(s is not None for s in self.slots) + len(self.reserved)
            waiting = sum(j.request.n for j in self.queue) + request.n - (len(self.slots) - taken)
            if not internal and waiting > self.max_queue:
                self.counters.rejected += 1
                raise QueueFull(f"queue full ({self.max_queue} waiting)")
            self.queue.append(job)
            self.cv.notify()
        return job

    def status(self) -> dict:
        with self.cv:
            busy = sum(s is not None for s in self.slots) + len(self.reserved)
            return {"total": len(self.slots), "busy": busy, "free": len(self.slots) - busy, "queue": len(self.queue)}

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
            if time.monotonic() > self.deadline + 30:  # a decode that never returns: give up on it
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
        while True:
            with self.cv:
                while not self.stopping and not self.queue and not any(self.slots):
                    self.cv.wait()
                if self.stopping:
                    break
                if not self.accepting:  # draining: nothing waiting gets a slot any more
                    while self.queue:
                        job = self.queue.popleft()
                        self._send(job, ShuttingDown("the server is shutting down"))
                        self._send(job, None)
                self._admit()
            active = [pair for pair in self.slots if pair is not None]
            cut = self.deadline is not None and time.monotonic() >= self.deadline
            for seq, job in active:
                if (job.cancelled or cut) and not seq.done:
                    seq.finish("interrupted")
                    self.counters.cancelled += job.cancelled
            running = [seq for seq, _ in active if not seq.done]
            if running:
                try:
                    self.engine.step(running)
                except Exception as e:  # a failed decode ends the requests in it, not the server
                    for seq in running:
                        seq.events.append(e)
                        seq.finish("error")
            for seq, job in active:  # n answers: place the prompt's copies in their reserved slots
                for c in seq.forked:
                    self.reserved.discard(c.id)
                    self.cached[c.id] = []
                    self.slots[c.id] = (c, job)
                    job.running += 1
                seq.forked = []
            for slot, pair in enumerate(self.slots):
                if pair is not None:
                    self._dispatch(slot, *pair)
            self._flush()
        for slot, pair in enumerate(self.slots):
            if pair is not None:
                pair[0].finish("interrupted")
                self._dispatch(slot, *pair)
        self._flush()

    def _admit(self) -> None:
        while self.queue:
            free = [i for i, s in enumerate(self.slots) if s is None and i not in self.reserved]
            if len(free) < self.queue[0].request.n:  # in order: a request for n answers waits for n slots
                return
            job = self.queue.popleft()
            if job.cancelled:
                self._send(job, None)
                continue
            prompt = job.request.head + job.request.body + job.request.tail
            slot, reuse = self._place(free, prompt)
            try:
                seq = Sequence(self.engine, slot, job.request, reuse=reuse, keep_cache=True)
            except SentiricError as e:
                self.engine.ctx.seq_rm(slot, -1, -1)
                self.cached[slot] = []
                self._send(job, e)
                self._send(job, None)
                continue
            self.cached[slot] = []
            seq.quiet = not job.stream  # the copies made for n answers inherit it
            self.slots[slot] = (seq, job)
            job.running = 1
            seq.fork_slots = [i for i in free if i != slot][:job.request.n - 1]
            self.reserved.update(seq.fork_slots)

    def _place(self, free: list[int], prompt: list[int]) -> tuple[int, int]:
        """The slot a prompt runs in, always the lowest free one (busy slots together), and how many of its tokens
        that slot already holds. When another free slot holds a longer start of it, that cache is copied down
        first (llama_memory_seq_cp: one copy of the stream's buffer, less than reading the tokens again) and
        the other slot keeps its own for later."""
        ctx, low = self.engine.ctx, free[0]
        # the last prompt token is always decoded: it gives the logits
        keep = {i: self.engine.keepable(i, min(_shared(self.cached[i], prompt), len(prompt) - 1))
                for i in free if self.cached[i]}
        src = max(keep, key=keep.get, default=low)  # the first of equals: the lowest
        reuse = keep.get(low, 0)
        if keep.get(src, 0) - reuse >= COPY_GAIN:
            ctx.seq_rm(low, -1, -1)
            ctx.seq_cp(src, low)
            self.cached[low], reuse = self.cached[src], keep[src]
            self.counters.copied_prefixes += 1
        if reuse < len(self.cached[low]) and not ctx.seq_rm(low, reuse, -1):  # drop the rest; keep the shared prefix
            ctx.seq_rm(low, -1, -1)
            reuse = 0
        return low, reuse

    def _dispatch(self, slot: int, seq: Sequence, job: Job) -> None:
        while seq.events:
            ev = seq.events.pop(0)
            if isinstance(ev, Record):
                c = self.counters
                c.requests += 1
                c.prompt_tokens += ev.prompt_tokens
                c.generated_tokens += ev.generated_tokens
                c.shifts += ev.shifts
                c.evicted_tokens += ev.evicted_tokens
                c.reused_tokens += ev.reused_tokens
            elif isinstance(ev, Piece | Progress) and not job.stream:
                continue  # the record carries the whole text
            self._send(job, ev)
        if seq.done:
            seq.close()
            job.running -= 1
            if not job.running:
                self._send(job, None)  # end of stream
            with self.cv:
                self.slots[slot] = None
                self.cached[slot] = list(seq.toks)  # empty unless the cache was kept (no shift)
                self.reserved.difference_update(seq.fork_slots)  # done before its prompt was read: not copied

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


def _shared(cached: list[int], prompt: list[int]) -> int:
    n = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        n += 1
    return n
