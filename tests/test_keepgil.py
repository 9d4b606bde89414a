"""keepgil.py: the quick llama.cpp calls a decode step makes keep the GIL, so the event loop cannot take it from
the scheduler thread between two decodes; llama_decode lets it go."""

from __future__ import annotations

import sys
import threading
import time

from sentiric_cli.engine import keepgil as K
from sentiric_cli.engine.bindings import Batch, Context, Model
from sentiric_cli.settings import Settings


def _spinner_progress(call, n: int) -> int:
    """How far a busy Python thread counts while this thread makes `n` calls. It can only count while this thread
    lets the GIL go: no forced switch can come within the calls (they take far less than the switch interval)."""
    count, stop = [0], threading.Event()

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1
            if count[0] % 200 == 0:
                time.sleep(0)  # lets the GIL go now and then, so this thread gets it back without a forced switch

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        time.sleep(0.01)  # the spinner runs; this thread now holds the GIL again
        start = count[0]
        for _ in range(n):
            call()
        return count[0] - start
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)


def test_a_steps_quick_calls_keep_the_gil_and_its_decode_lets_it_go(micro):
    s = Settings(context_size=64, threads=2)
    model = Model(micro, s)
    ctx, batch = Context(model, s), Batch(8)
    try:
        for pos, tok in enumerate([1, 5, 9]):
            batch.add(tok, pos, 0, pos == 2)
        ctx.decode(batch)

        def step_calls() -> None:  # what a step asks between two decodes
            ctx._outputs()
            ctx._logits(2)
            ctx.seq_pos_max(0)
            ctx.seq_rm(1, 0, -1)
            K.vocab_is_eog(model.vocab, 7)
            K.token_to_piece(model.vocab, 7, b"\0" * 16, 16, 0, False)

        step_calls()  # once first: numpy makes and caches the logits row's array type on its first use
        assert _spinner_progress(step_calls, 500) == 0

        def decode() -> None:  # the one call of a step that lets the GIL go: the event loop's turn
            ctx.seq_rm(0, -1, -1)
            ctx.decode(batch)

        assert _spinner_progress(decode, 300) > 0  # so the check does see a let-go
    finally:
        batch.close()
        ctx.close()
        model.close()
