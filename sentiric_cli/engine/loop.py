"""The slot loop: sequences in a context's slots, one decode step for all of them, events out, slots freed.

Every driver of the engine goes through it: `Engine.stream_many` (a few requests at once), the long-document
pool (`run_pool`: a queue of requests through the slots) and the server's scheduler (admission and placement
are its policy; the loop only runs what it placed). A Ctrl-C inside a step ends every sequence with what it has;
a sequence left when the loop closes is ended and its slot freed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from sentiric_cli.engine.sequence import Sequence
from sentiric_cli.engine.types import Event, Record, Request

if TYPE_CHECKING:
    from sentiric_cli.engine.core import Engine

T = TypeVar("T")  # what a slot's sequence belongs to: a request's index, a server job


class SlotLoop(Generic[T]):
    def __init__(self, engine: Engine, errors_end_sequences: bool = False) -> None:
        """errors_end_sequences: a failed decode ends the sequences in the step with the error as an event (a server
        goes on); else it is raised."""
        self.engine = engine
        self.errors_end_sequences = errors_end_sequences
        self.seqs: list[Sequence | None] = [None] * engine.ctx.n_seq_max
        self.tags: list[T | None] = [None] * engine.ctx.n_seq_max
        self.reserved: set[int] = set()  # slots held for the copies of a prompt being read (Request.n)
        self.active: list[tuple[Sequence, T]] = []  # the placed sequences, in slot order (read once per step)

    def free(self) -> list[int]:
        """Free slots, lowest first: busy slots kept together decode as one graph (scheduler.py)."""
        return [i for i, s in enumerate(self.seqs) if s is None and i not in self.reserved]

    def busy(self) -> int:
        return sum(s is not None for s in self.seqs) + len(self.reserved)

    def place(self, seq: Sequence, tag: T) -> None:
        self.seqs[seq.id], self.tags[seq.id] = seq, tag
        self.active.append((seq, tag))
        # in slot order, as a step's batch then lists them: in placing order (slots reused out of order) the micro
        # model's 8-client steps took 25% longer in llama_decode itself (in-process, the scheduler thread profiled)
        self.active.sort(key=lambda pair: pair[0].id)
        self.reserved.update(seq.copies)

    def occupied(self) -> list[tuple[Sequence, T]]:
        return list(self.active)

    def step(self) -> list[tuple[Sequence, T]]:
        """One decode of every unfinished sequence; copies made for n answers take their reserved slots. Returns
        every placed sequence (finished ones too): the caller takes their events, then release()s the done."""
        running = [s for s, _ in self.active if not s.done]
        if running:
            try:
                self.engine.step(running)
            except KeyboardInterrupt:  # Ctrl-C inside llama_decode: end every sequence with what it has
                self.interrupt()
            except Exception as e:
                if not self.errors_end_sequences:
                    raise
                for s in running:
                    s.fail(e)
        if self.reserved:  # copies of a prompt wait for its read: place those made in this step
            for s, tag in list(self.active):
                for c in s.take_forks():
                    self.reserved.discard(c.id)
                    self.place(c, tag)
        return list(self.active)

    def release(self, seq: Sequence) -> None:
        """Free a finished sequence's slot (and the slots it reserved but never copied to)."""
        seq.close()
        self.seqs[seq.id] = self.tags[seq.id] = None
        self.active = [(s, t) for s, t in self.active if s is not seq]
        self.reserved.difference_update(seq.copies)

    def interrupt(self) -> None:
        for s, _ in self.active:
            s.finish("interrupted")

    def close(self) -> None:
        """End what is still running and free every slot (a consumer that walked away, an error)."""
        for s, _ in list(self.active):
            s.finish("interrupted")
            self.release(s)


def stream_many(engine: Engine, requests: list[Request]) -> Iterator[tuple[int, Event]]:
    """Run requests together (each in its own slot, all at once), yielding (request index, event) as they come."""
    loop: SlotLoop[int] = SlotLoop(engine)
    try:
        for i, r in enumerate(requests):
            loop.place(Sequence(engine, i, r), i)
        while loop.busy():
            for s, i in loop.step():
                while events := s.take_events():  # an interrupt while yielding adds the record
                    for ev in events:
                        try:
                            yield i, ev  # type: ignore[misc]  # no error events: errors raise here
                        except KeyboardInterrupt:  # thrown in by a consumer interrupted while printing
                            loop.interrupt()
                if s.done:
                    loop.release(s)
    finally:
        loop.close()


def run_pool(engine: Engine, requests: Iterable[Request]) -> Iterator[tuple[int, Record]]:
    """Read `requests` through the context's slots with continuous batching; yield (index, record) as each ends.
    At most n_seq_max at once; a finished one's slot (cleared) takes the next."""
    todo = deque(enumerate(requests))
    loop: SlotLoop[int] = SlotLoop(engine)
    try:
        while todo or loop.busy():
            for slot in loop.free():
                if not todo:
                    break
                i, r = todo.popleft()
                loop.place(Sequence(engine, slot, r, quiet=True), i)
            for s, i in loop.step():
                records = [e for e in s.take_events() if isinstance(e, Record)]
                if s.done:
                    loop.release(s)
                    yield i, records[-1]
    finally:
        loop.close()
