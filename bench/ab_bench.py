"""Two trees of sentiric side by side on one machine: a change against the commit before it (issue 23: "within
noise of before"). Serve overhead (the micro and the bundled model, `overhead_bench.load`: clients sending
completions one after another), the scheduler in-process (no HTTP: where the step's own cost shows), and
long-document wall time (`sentiric run --strategy map` and `window` over a needle document), every measurement
alternating between the two trees, repeated: median (min-max) and the ratio's median (min-max) over the pairs.

    git worktree add /tmp/base <commit>
    .venv/bin/python bench/ab_bench.py --base /tmp/base [--repeats 5] [--only serve|inproc|longdoc]

Each tree runs in its own processes with its own sources (PYTHONPATH, outside this checkout, so the editable
install does not shadow it); both use this venv's llama.cpp build.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from needles import document, sentences_for
from overhead_bench import load, ready, stop
from report import record
from serve_bench import free_port
from synth import write_model

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.bindings import Model
from sentiric_cli.settings import Settings


def env_for(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree)}


def serve(tree: Path, model: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "sentiric_cli", "serve", "--model", str(model), "--port", str(port), "--threads", "8",
           "--context", "512"]
    proc = subprocess.Popen(cmd, cwd=tempfile.gettempdir(), env=env_for(tree), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return ready(proc, port, f"sentiric from {tree}")


def interleaved(repeats: int, kinds: list[str], cases: list) -> Iterator[tuple[int, str, object]]:
    """(repeat, kind, case): every case on each kind in turn, the order of the kinds swapped every repeat."""
    for rep in range(repeats):
        for case in cases:
            for k in kinds if rep % 2 == 0 else kinds[::-1]:
                yield rep, k, case


def spread(xs: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}-{max(xs):{fmt}})"


def ratio(new: list[float], base: list[float], higher_is_better: bool) -> str:
    rs = [(n / b if higher_is_better else b / n) for n, b in zip(new, base, strict=True)]
    return f"**{statistics.median(rs):.2f}** ({min(rs):.2f}-{max(rs):.2f})"


def micro_model() -> Path:
    micro = ROOT / "build" / "micro-llama.gguf"
    if not micro.exists():
        micro.parent.mkdir(exist_ok=True)
        write_model(micro, "llama", n_layer=1, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512)
    return micro


def serve_ab(trees: dict[str, Path], repeats: int) -> tuple[list[str], dict]:
    micro = micro_model()
    rows, data = [], {}
    for name, model, clients, max_tokens, per_client in (("micro", micro, (1, 8), 128, 16),
                                                          ("bundled", bundled_model(), (1, 4), 64, 4)):
        res: dict = {}
        cases = [(s, c) for s in (False, True) for c in clients]
        for rep in range(repeats):
            # new servers every repeat: one instance's luck (its start-up step measurements, where its threads land)
            # biased every pair of a run the same way (micro, 8 clients: 0.90 in one run, 0.99-1.02 in fresh ones)
            servers = {k: serve(t, model) for k, t in trees.items()}
            try:
                for _, k, (stream, c) in interleaved(1, list(trees) if rep % 2 == 0 else list(trees)[::-1], cases):
                    r = load(servers[k][1], c, per_client, max_tokens, stream)
                    res.setdefault((stream, c, k), []).append(r["tok_s"])
                    print(name, rep, stream, c, k, round(r["tok_s"]), flush=True)
            finally:
                stop(servers)
        for stream in (False, True):
            for c in clients:
                new, base = res[(stream, c, "this tree")], res[(stream, c, "base")]
                data[f"{name} {'stream' if stream else 'whole'} {c}"] = {"this tree": new, "base": base}
                rows.append(f"| {name} | {'stream' if stream else 'whole'} | {c} | {spread(new)} | {spread(base)} | "
                            f"{ratio(new, base, True)} |")
    return rows, data


# the scheduler in-process (no HTTP: the step's own cost shows), micro model, non-streamed greedy requests of 128
# tokens, 16 per client; run in each tree's own process. Imports for both layouts: before issue 23 the scheduler
# was sentiric_cli.scheduler and the request types sentiric_cli.engine's.
INPROC = r"""
import asyncio, sys, time
from pathlib import Path
try:
    from sentiric_cli.engine.core import Engine
    from sentiric_cli.engine.types import Request
    from sentiric_cli.serve.scheduler import Scheduler
except ImportError:
    from sentiric_cli.engine import Engine, Request
    from sentiric_cli.scheduler import Scheduler
from sentiric_cli.settings import Settings
clients = int(sys.argv[2])
with Engine(Settings(context_size=512, threads=8), Path(sys.argv[1])) as e:
    sched = Scheduler(e, 64)
    async def client(i):
        n = 0
        for k in range(16):
            head = [e.model.bos] + e.model.tokenize(f"Chapter {i + k}. The old lighthouse keeper climbed")
            job = sched.submit(Request(head=head, max_tokens=128), stream=False)
            while (ev := await job.events.get()) is not None:
                n += getattr(ev, "generated_tokens", 0)
        return n
    async def main():
        t0 = time.perf_counter()
        n = sum(await asyncio.gather(*(client(i) for i in range(clients))))
        return n / (time.perf_counter() - t0)
    print(asyncio.run(main()))
    sched.shutdown(5)
"""


def inproc_ab(trees: dict[str, Path], repeats: int) -> tuple[list[str], dict]:
    micro = micro_model()
    rows, data = [], {}
    for clients in (1, 8):
        rates: dict[str, list[float]] = {}
        for rep, k, _ in interleaved(repeats, list(trees), [None]):
            out = subprocess.run([sys.executable, "-c", INPROC, str(micro), str(clients)], cwd=tempfile.gettempdir(),
                                 env=env_for(trees[k]), check=True, capture_output=True, text=True).stdout
            rates.setdefault(k, []).append(float(out.strip().splitlines()[-1]))
            print("inproc", clients, rep, k, round(rates[k][-1]), flush=True)
        new, base = rates["this tree"], rates["base"]
        data[f"inproc {clients}"] = rates
        rows.append(f"| {clients} | {spread(new)} | {spread(base)} | {ratio(new, base, True)} |")
    return rows, data


def longdoc_ab(trees: dict[str, Path], repeats: int) -> tuple[list[str], dict]:
    model = Model(bundled_model(), Settings())
    text, _ = document(sentences_for(model, 8 * 1024), 0.6, 48213, seed=77)
    model.close()
    doc = Path(tempfile.mkdtemp()) / "doc.txt"
    doc.write_text(text)
    rows, data = [], {}
    for strategy, threads in (("map", 4), ("window", 1)):
        times: dict[str, list[float]] = {}
        for rep, k, _ in interleaved(repeats, list(trees), [None]):
            cmd = [sys.executable, "-m", "sentiric_cli", "run", "What is the pass key?", "--file", str(doc),
                   "--strategy", strategy, "--threads", str(threads), "--context", "1024", "-n", "24", "--json"]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=tempfile.gettempdir(), env=env_for(trees[k]), check=True, capture_output=True)
            times.setdefault(k, []).append(time.perf_counter() - t0)
            print(strategy, rep, k, round(times[k][-1], 2), flush=True)
        new, base = times["this tree"], times["base"]
        data[f"run --strategy {strategy}"] = times
        rows.append(f"| `run --strategy {strategy} --threads {threads}` | {spread(new, '.1f')} s | {spread(base, '.1f')} s | "
                    f"{ratio(new, base, False)} |")
    return rows, data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="a worktree of the commit to compare against")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=("serve", "inproc", "longdoc"))
    a = ap.parse_args()
    trees = {"this tree": ROOT, "base": a.base.resolve()}
    base_commit = subprocess.run(["git", "-C", str(a.base), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()
    lines = [f"This tree against commit {base_commit}, runs alternating between them, {a.repeats} repeats: median "
             "(min-max); the ratio is this tree's over the base's per pair (above 1: this tree is faster).", ""]
    data: dict = {"base": base_commit}
    if a.only in (None, "serve"):
        rows, data["serve"] = serve_ab(trees, a.repeats)
        lines += ["Serve, 8 slots of 512 tokens, tokens/s (`overhead_bench.load`: micro 16 x 128 tokens per client, "
                  "bundled 4 x 64):", "", "| model | mode | clients | this tree | base | ratio |",
                  "|---|---|---:|---:|---:|---:|", *rows, ""]
    if a.only in (None, "inproc"):
        rows, data["inproc"] = inproc_ab(trees, a.repeats)
        lines += ["The scheduler in-process (no HTTP), micro model, 8 slots, 16 non-streamed greedy requests of 128 tokens "
                  "per client, tokens/s:", "", "| clients | this tree | base | ratio |", "|---:|---:|---:|---:|",
                  *rows, ""]
    if a.only in (None, "longdoc"):
        rows, data["longdoc"] = longdoc_ab(trees, a.repeats)
        lines += ["Long documents, the bundled model, an 8x-window needle document (window 1024), wall time of the "
                  "whole command (load included):", "", "| command | this tree | base | ratio |", "|---|---:|---:|---:|",
                  *rows, ""]
    record("ab", "\n".join(lines), data, title="A change against the commit before it")


if __name__ == "__main__":
    main()
