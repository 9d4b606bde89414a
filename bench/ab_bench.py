"""Two trees of sentiric side by side on one machine: a change against the commit before it (issue 23: "within
noise of before"). Serve overhead (the micro and the bundled model, `overhead_bench.load`: clients sending
completions one after another) and long-document wall time (`sentiric run --strategy map` and `window` over a
needle document), every measurement alternating between the two trees, repeated: median (min-max) and the
ratio's median (min-max) over the pairs.

    git worktree add /tmp/base <commit>
    .venv/bin/python bench/ab_bench.py --base /tmp/base [--repeats 5]

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


def serve_ab(trees: dict[str, Path], repeats: int) -> tuple[list[str], dict]:
    micro = ROOT / "build" / "micro-llama.gguf"
    if not micro.exists():
        micro.parent.mkdir(exist_ok=True)
        write_model(micro, "llama", n_layer=1, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512)
    rows, data = [], {}
    for name, model, clients, max_tokens, per_client in (("micro", micro, (1, 8), 128, 16),
                                                          ("bundled", bundled_model(), (1, 4), 64, 4)):
        servers = {k: serve(t, model) for k, t in trees.items()}
        try:
            res: dict = {}
            for rep, k, (stream, c) in interleaved(repeats, list(trees), [(s, c) for s in (False, True) for c in clients]):
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
    ap.add_argument("--only", choices=("serve", "longdoc"))
    a = ap.parse_args()
    trees = {"this tree": ROOT, "base": a.base.resolve()}
    base_commit = subprocess.run(["git", "-C", str(a.base), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()
    lines = [f"This tree against commit {base_commit}, runs alternating between them, {a.repeats} repeats: median "
             "(min-max); the ratio is this tree's over the base's per pair (above 1: this tree is faster).", ""]
    data: dict = {"base": base_commit}
    if a.only != "longdoc":
        rows, data["serve"] = serve_ab(trees, a.repeats)
        lines += ["Serve, 8 slots of 512 tokens, tokens/s (`overhead_bench.load`: micro 16 x 128 tokens per client, "
                  "bundled 4 x 64):", "", "| model | mode | clients | this tree | base | ratio |",
                  "|---|---|---:|---:|---:|---:|", *rows, ""]
    if a.only != "serve":
        rows, data["longdoc"] = longdoc_ab(trees, a.repeats)
        lines += ["Long documents, the bundled model, an 8x-window needle document (window 1024), wall time of the "
                  "whole command (load included):", "", "| command | this tree | base | ratio |", "|---|---:|---:|---:|",
                  *rows, ""]
    record("ab", "\n".join(lines), data, title="A change against the commit before it")


if __name__ == "__main__":
    main()
