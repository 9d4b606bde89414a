"""Padded decode steps (sentiric_cli/engine/padding.py): what a step costs by row count, and serving with and without.

1. The start-up measurement on the bundled model: median decode step by row count (one row per sequence).
2. The scheduler in-process (no HTTP: the step is what is measured), 5, 6 and 7 clients each sending 3
   requests one after another (96 tokens, temperature 0), pad_steps on and off interleaved, repeated:
   wall time, and the median step time of the decode-only steps by rows, padded or not.

Run: .venv/bin/python bench/padding_bench.py --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from inproc import serve_clients
from report import record

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.cpupath import cpu_info
from sentiric_cli.settings import Settings

SLOTS = 8


def serve_once(pad: bool, clients: int) -> tuple[float, dict]:
    s = Settings(context_size=512, threads=SLOTS, pad_steps=pad)
    engine = Engine(s, bundled_model())
    steps: dict = defaultdict(list)
    real = engine.ctx.decode

    def timed(batch, prompt=True, **kw):
        t0 = time.perf_counter()
        real(batch, prompt, **kw)
        if not prompt:
            steps[len(batch)].append(time.perf_counter() - t0)

    def started() -> None:  # after the start-up measurement: only serving steps are counted
        engine.ctx.decode = timed

    try:
        wall, _ = serve_clients(engine, s, clients, started=started)
    finally:
        engine.close()
    return wall, steps


def spread(xs: list[float], scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(xs) * scale)} ({fmt.format(min(xs) * scale)}-{fmt.format(max(xs) * scale)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with Engine(Settings(context_size=512, threads=SLOTS), bundled_model()) as e:
        e.measure_steps()
        costs = e.costs
    out = ["", "## Padded decode steps (issue 13)", "",
           f"`bench/padding_bench.py` on {cpu_info()[0] or platform.processor()}, {SLOTS} slots, the bundled "
           "model, measured in the same session as the rows below. Start-up measurement (median ms per decode step, "
           "one row per sequence) and where each row count is padded to:", "",
           "| rows | " + " | ".join(str(n) for n in range(1, costs.cap + 1)) + " |",
           "|---|" + "---:|" * costs.cap,
           "| ms | " + " | ".join(f"{x * 1000:.1f}" for x in costs.seconds[1:]) + " |",
           "| run as | " + " | ".join(str(costs.target(n)) for n in range(1, costs.cap + 1)) + " |", "",
           "The scheduler in-process (no HTTP), each client sending 3 requests one after another, 96 tokens each, "
           f"pad_steps on and off interleaved, {a.repeats} repeats, median (min-max):", "",
           "| clients | wall, padding on | wall, off | ratio off/on | decode steps (rows: median ms), on | same, off |",
           "|---:|---:|---:|---:|---|---|"]
    for clients in (5, 6, 7):
        walls: dict = {True: [], False: []}
        steps: dict = {True: defaultdict(list), False: defaultdict(list)}
        for rep in range(a.repeats):
            for pad in ((True, False) if rep % 2 == 0 else (False, True)):
                w, st = serve_once(pad, clients)
                walls[pad].append(w)
                for n, ts in st.items():
                    steps[pad][n] += ts
                print(clients, rep, pad, round(w, 2), flush=True)
        ratios = [off / on for on, off in zip(walls[True], walls[False], strict=True)]

        def cell(d: dict) -> str:
            return ", ".join(f"{n}: {statistics.median(ts) * 1000:.0f} ({len(ts)})" for n, ts in sorted(d.items())
                             if len(ts) >= 10)
        out.append(f"| {clients} | {spread(walls[True])} s | {spread(walls[False])} s | "
                   f"**{statistics.median(ratios):.2f}** ({min(ratios):.2f}-{max(ratios):.2f}) | "
                   f"{cell(steps[True])} | {cell(steps[False])} |")
    out += ["", "Rows counted with the padding; (n) = steps seen. A row count is padded only where the start-up "
            "measurement says so and the live step times agree (padding.py)."]
    record("padding", "\n".join(out).strip(), {str(k): v for k, v in walls.items()})


if __name__ == "__main__":
    main()
