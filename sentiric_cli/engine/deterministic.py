"""The `deterministic` setting's steps: the same request gives the same greedy answer whatever else the server runs.

llama.cpp's kernels are not batch-invariant: what a row computes depends on how many rows its step has (the CPU's
matrix kernels take rows in tiles, and a row left over goes through another path) and on how a prompt was cut
into batches. Under load those change from step to step, and near-ties in the logits flip a greedy answer. So, in
this mode, a step is one of two shapes, each independent of the load:

- every generating sequence's next token, with one row per slot in slot order: an idle slot (or one still reading)
  gets a throw-away row, removed after the step, so every decode step has n_seq_max rows;
- one sequence's next prompt chunk, alone, cut where its own prompt cuts it (from position 0, chunk by chunk).

The two alternate while both have work. Beside this the engine fixes the compute threads, the scheduler reuses no
cache (a kept prefix was computed in some other step's shape), and nothing drafts. What stays: a different model,
build, CPU (kernel family), thread count or context size gives other numbers, and sampled (temperature > 0)
answers are reproducible only with a fixed seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentiric_cli.engine.bindings import Batch, Context
    from sentiric_cli.engine.sequence import Sequence


class FixedSteps:
    def __init__(self, ctx: Context, batch: Batch, pad_token: int) -> None:
        self.ctx, self.batch, self.pad_token = ctx, batch, pad_token
        self.prompt_turn = False  # alternates while sequences both generate and read

    def step(self, generating: list[Sequence], reading: list[Sequence]) -> None:
        # a generating sequence whose window was recomputed reads its kept tokens again: a prompt chunk
        rereading = [s for s in generating if len(s.window.pending) > 1]
        generating = [s for s in generating if len(s.window.pending) <= 1 and not s.done]
        reading = [s for s in reading + rereading if not s.done]
        if not generating and not reading:
            return
        self.prompt_turn = not self.prompt_turn
        if reading and (self.prompt_turn or not generating):
            self._chunk(reading[0])  # the lowest slot's prompt first: read to the end before the next one
        else:
            self._tokens(generating)

    def _chunk(self, s: Sequence) -> None:
        self.batch.clear()
        n = s.wants(self.ctx.n_batch)
        if s.make_room(n):
            n = s.wants(self.ctx.n_batch)
        s.fill(self.batch, n)
        self.ctx.decode(self.batch, prompt=True, streaming=not s.quiet)
        s.after_decode()

    def _tokens(self, generating: list[Sequence]) -> None:
        ctx, batch = self.ctx, self.batch
        batch.clear()
        by_slot = {s.id: s for s in generating}
        stepped: list[Sequence] = []
        pads: list[tuple[int, int]] = []
        for slot in range(ctx.n_seq_max):
            s = by_slot.get(slot)
            if s is not None and not (s.make_room(1) and len(s.window.pending) > 1):
                s.fill(batch, 1)
                stepped.append(s)
                continue
            # a throw-away row after whatever the slot holds (llama.cpp computes a step whose sequences have
            # unequal row counts in parts: one row each keeps it one step)
            pos = ctx.seq_pos_max(slot) + 1
            if pos < ctx.n_ctx_seq:
                batch.add(self.pad_token, pos, slot, True)
                pads.append((slot, pos))
        try:
            ctx.decode(batch, prompt=False, streaming=any(not s.quiet for s in stepped))
        finally:
            for slot, pos in pads:
                ctx.seq_rm(slot, pos, -1)
        for s in stepped:
            s.after_decode()
