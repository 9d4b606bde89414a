"""`make bench`, part 3: long documents. The needle grid with `auto` (map) and `window` side by side,
`map` against `window` wall time on one 16x document (threads 1 and 4), and a summary over 16x in bounded memory.

Bundled gemma 3 270M, window 1024. Keys and filler from tests/needles.py, with keys and seeds the tests
do not use. Appends to docs/benchmarks.md. Run: .venv/bin/python bench/longdoc_bench.py --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from needles import QUESTION, document, sentences_for
from report import record

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.cpupath import cpu_info, cpu_path
from sentiric_cli.engine.prompt import INSTRUCTION
from sentiric_cli.engine.types import Request
from sentiric_cli.longdoc import LongRecord, answer
from sentiric_cli.settings import Settings

WINDOW = 1024
LENGTHS = (2, 7, 16)
DEPTHS = (0.05, 0.3, 0.5, 0.7, 0.95)


def ask(engine: Engine, text: str, strategy: str, question: str = QUESTION) -> tuple[LongRecord, float]:
    t0 = time.perf_counter()
    rec = None
    for ev in answer(engine, question, text, strategy, instruction=INSTRUCTION, base=Request(head=[], max_tokens=24)):
        if isinstance(ev, LongRecord):
            rec = ev
    return rec, time.perf_counter() - t0


def engine(threads: int) -> Engine:
    return Engine(Settings(context_size=WINDOW, threads=threads, swa_full=True), bundled_model())


def grid() -> list[tuple[int, float, bool, bool, bool, float, float]]:
    rows = []
    with engine(2) as e:
        for times in LENGTHS:
            n = sentences_for(e.model, times * WINDOW)
            for j, depth in enumerate(DEPTHS):
                key = 20000 + (times * 7919 + j * 3571) * 13 % 79999
                text, at = document(n, depth, key, seed=100 + times)
                auto, t_auto = ask(e, text, "auto")
                window, t_window = ask(e, text, "window")
                cited = any(s <= at < e_ for s, e_ in auto.citations)
                rows.append((times, depth, str(key) in auto.answer, cited, str(key) in window.answer, t_auto, t_window))
                print(f"{times}x {depth:.2f} auto={rows[-1][2]} cited={cited} window={rows[-1][4]}", flush=True)
    return rows


def timing(repeats: int = 2) -> dict[str, list[float]]:
    """map (threads 1 and 4) against window on the same 16x document, interleaved, repeated."""
    out: dict[str, list[float]] = {"window": [], "map, threads 1": [], "map, threads 4": []}
    with engine(1) as e1, engine(4) as e4:
        text, _ = document(sentences_for(e1.model, 16 * WINDOW), 0.5, 47261, seed=99)
        for _ in range(repeats):
            out["window"].append(ask(e1, text, "window")[1])
            out["map, threads 1"].append(ask(e1, text, "map")[1])
            out["map, threads 4"].append(ask(e4, text, "map")[1])
            print({k: round(v[-1], 1) for k, v in out.items()}, flush=True)
    return out


RSS = r"""
import resource, sys
sys.path.insert(0, sys.argv[3])
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.types import Request
from sentiric_cli.longdoc import LongRecord, answer
from sentiric_cli.settings import Settings
times = int(sys.argv[1])
with Engine(Settings(context_size=1024, threads=2, swa_full=True), sys.argv[2]) as e:
    text = open(sys.argv[4]).read()
    toks = e.model.tokenize(text)
    reps = times * 1024 // len(toks) + 1
    text = (text + "\n\n") * reps
    base = Request(head=[], max_tokens=48)
    for ev in answer(e, "Summarize the document in one sentence.", text, "map", instruction="", base=base):
        if isinstance(ev, LongRecord):
            rec = ev
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(rec.chunks), rec.found, sum(p.seconds for p in rec.phases))
"""


def summary_rss(times: int) -> tuple[int, int, bool, float]:
    p = subprocess.run([sys.executable, "-c", RSS, str(times), str(bundled_model()), str(ROOT / "tests"),
                        str(ROOT / "bench" / "eval" / "docs" / "gpl-3.txt")],
                       capture_output=True, text=True, check=True)
    kib, chunks, found, seconds = p.stdout.split()
    return int(kib), int(chunks), found == "True", float(seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.parse_args()  # --help
    rows = grid()
    times = timing()
    rss = [(t, *summary_rss(t)) for t in (4, 16)]
    lines = ["", "## Long documents: map-reduce against one shifting window", "",
             f"Produced by `make bench` (`bench/longdoc_bench.py`): bundled gemma 3 270M Q4_K_M, window {WINDOW} tokens, "
             f"CPU ({os.cpu_count()} cores, {cpu_info()[0] or 'unknown CPU'}), CPU path {cpu_path().path}. Needles: "
             "`tests/needles.py` filler (plain sentences, no numbers) with one 5-digit pass key; the question "
             f"\"{QUESTION}\"; keys and filler seeds the tests do not use. `auto` picks `map` for all of these "
             "(none fits one window); `window` streams the document through one shifting window.", "",
             "### Needle grid", "",
             "| length | depth | auto (map) | cited the key's bytes | window | auto time | window time |",
             "|---:|---:|---|---|---|---:|---:|"]
    for t, d, a, c, w, ta, tw in rows:
        lines.append(f"| {t}x | {d:.0%} | {'yes' if a else 'no'} | {'yes' if c else 'no'} | {'yes' if w else 'no'} | "
                     f"{ta:.1f} s | {tw:.1f} s |")
    lines += ["", "| length | auto (map) | window |", "|---:|---:|---:|"]
    for t in LENGTHS:
        mine = [r for r in rows if r[0] == t]
        lines.append(f"| {t}x | {sum(r[2] for r in mine)}/{len(mine)} | {sum(r[4] for r in mine)}/{len(mine)} |")
    total = len(rows)
    lines += [f"| all | **{sum(r[2] for r in rows)}/{total}** ({sum(r[2] for r in rows) / total:.0%}) | "
              f"{sum(r[4] for r in rows)}/{total} ({sum(r[4] for r in rows) / total:.0%}) |", "",
              "### map against window on one 16x document (wall time, interleaved, repeated)", "",
              "| reader | runs | median | ratio to window |", "|---|---|---:|---:|"]
    w = statistics.median(times["window"])
    for name, ts in times.items():
        lines.append(f"| {name} | {', '.join(f'{x:.1f} s' for x in ts)} | {statistics.median(ts):.1f} s | "
                     f"{statistics.median(ts) / w:.2f} |")
    lines += ["", "Each document token is read once either way (map: plus the passages' overlap and the question "
              "after each passage); the rest is a few passages read again for their answer, and the check.", "",
              "### An overview question over the GPL-3 text, map (peak RSS of the whole process)", "",
              "| document | chunks | peak RSS | time | answered |", "|---:|---:|---:|---:|---|"]
    for t, kib, chunks, found, secs in rss:
        lines.append(f"| {t}x the window | {chunks} | {kib / 1024:,.0f} MiB | {secs:.1f} s | {'yes' if found else 'no'} |")
    lines += ["", f"16x / 4x peak RSS: {rss[1][1] / rss[0][1]:.3f}.", ""]
    record("longdoc", "\n".join(lines).strip())


if __name__ == "__main__":
    main()
