"""What a decode step costs by which slots are in it, and what copying a slot's cache adds (in-process, no HTTP).

llama.cpp decodes each run of consecutive KV streams in a step as a graph of its own; this measures one generated
token per busy slot for several layouts of the same number of busy slots, then a 1-row step with and without a
pending cross-stream copy (llama_memory_seq_cp, done by llama.cpp at the next decode), the cost the scheduler pays to
keep busy slots together (docs/serve.md, "Prefix reuse"). Layouts and the copy alternate; median (min-max) of
--repeats steps each.

    .venv/bin/python bench/slot_steps.py [--model PATH] [--context 4096] [--append docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from overhead_bench import publish

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.cpupath import cpu_info
from sentiric_cli.settings import Settings

SLOTS = 8
LAYOUTS = [(0,), (0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 2, 4), (0, 1, 2, 7), (1, 3, 5, 7), (0, 2, 5, 7),
           tuple(range(SLOTS))]
PROMPT = 64  # tokens each slot holds before the steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--context", type=int, default=4096, help="tokens per slot")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    path = a.model or bundled_model()
    with Engine(Settings(context_size=a.context, threads=SLOTS), path) as e:
        ctx, b, tok = e.ctx, e.batch, e.model.bos if e.model.bos >= 0 else 0
        pos = [0] * SLOTS

        def step(slots: tuple[int, ...]) -> float:
            b.clear()
            for s in slots:
                b.add(tok, pos[s], s, True)
                pos[s] += 1
            t = time.perf_counter()
            ctx.decode(b, prompt=False, streaming=False)
            return (time.perf_counter() - t) * 1000

        for s in range(SLOTS):  # every slot holds a prompt, as after earlier requests
            b.clear()
            for i in range(PROMPT):
                b.add(tok, i, s, i == PROMPT - 1)
            ctx.decode(b)
            pos[s] = PROMPT

        def reset() -> None:  # keep the windows from filling: back to the prompt
            for s in range(SLOTS):
                ctx.seq_rm(s, PROMPT, -1)
                pos[s] = PROMPT

        def copy_step(copy: bool) -> float:
            if copy:  # slot 0 takes slot 5's cache, as the scheduler does for a prompt slot 5 holds
                ctx.seq_rm(0, -1, -1)
                ctx.seq_cp(5, 0)
                pos[0] = pos[5]
            return step((0,))

        for layout in LAYOUTS:  # warm-up
            step(layout)
        times: dict = {}
        for r in range(a.repeats):
            reset()
            cases = [*LAYOUTS, "plain", "copy"]
            for case in (cases if r % 2 == 0 else cases[::-1]):
                ms = copy_step(case == "copy") if isinstance(case, str) else step(case)
                times.setdefault(case, []).append(ms)

    def cell(v: list[float]) -> str:
        return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"

    def runs(layout: tuple[int, ...]) -> int:
        return 1 + sum(1 for x, y in zip(layout, layout[1:], strict=False) if y != x + 1)

    rows = [f"| {', '.join(map(str, k))} | {len(k)} | {runs(k)} | {cell(v)} |"
            for k, v in times.items() if not isinstance(k, str)]
    text = "\n".join([
        "## Slot layout and copying a cache (issue 13)", "",
        f"`bench/slot_steps.py` on {cpu_info()[0] or 'unknown CPU'} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d')}: {path.name}, {SLOTS} slots of {a.context} tokens, one generated token per "
        f"busy slot, {a.repeats} steps each, median (min-max) ms.", "",
        "| busy slots | rows | runs of consecutive slots | ms per step |", "|---|---:|---:|---:|", *rows, "",
        f"A 1-row step: {cell(times['plain'])} ms; the same step with a pending copy of a slot's cache into it "
        f"(llama_memory_seq_cp): {cell(times['copy'])} ms.", ""])
    publish("slot_steps", text, {" ".join(map(str, k)) if not isinstance(k, str) else k: v for k, v in times.items()})


if __name__ == "__main__":
    main()
