"""The engine's own cost per generated token: CPU time of the scheduler thread outside llama_decode.

The scheduler in-process (bench/inproc.py: no HTTP), micro model, 8 clients sending non-streamed greedy requests
of 256 tokens. Wall-clock tokens/s on a shared host moved by +-20% between runs minutes apart; the thread's CPU
time moves far less, so two versions of the engine compare by this. To compare checkouts, run it from each:

    .venv/bin/python bench/step_cpu.py                              # this tree
    ROOT=/path/to/other/checkout .venv/bin/python bench/step_cpu.py  # another one (its sentiric_cli, its bench/)

and alternate the runs. Prints the median over 4 runs, in microseconds per generated token.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("ROOT") or Path(__file__).resolve().parent.parent)
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from inproc import serve_clients
from synth import write_model

import sentiric_cli.engine.bindings as L
import sentiric_cli.serve.scheduler as S
from sentiric_cli.engine.core import Engine
from sentiric_cli.settings import Settings

spent = {"decode": 0.0, "thread": 0.0}
_decode, _run = L.Context.decode, S.Scheduler._run


def decode(self, *a, **kw):
    t = time.thread_time()
    _decode(self, *a, **kw)
    spent["decode"] += time.thread_time() - t


def run(self):
    t = time.thread_time()
    try:
        _run(self)
    finally:
        spent["thread"] = time.thread_time() - t


def main() -> None:
    assert Path(L.__file__).is_relative_to(ROOT), f"imported {L.__file__}, not {ROOT}'s"
    L.Context.decode, S.Scheduler._run = decode, run
    micro = Path(__file__).resolve().parent.parent / "build" / "micro-llama.gguf"
    if not micro.exists():
        micro.parent.mkdir(exist_ok=True)
        write_model(micro, "llama", n_layer=1, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512)
    s = Settings(context_size=512, threads=8)
    per_token = []
    with Engine(s, micro) as e:
        for _ in range(4):
            spent.update(decode=0.0, thread=0.0)
            _, generated = serve_clients(e, s, 8, per_client=4, max_tokens=256)
            per_token.append((spent["thread"] - spent["decode"]) / generated * 1e6)
    print(f"{ROOT}: {statistics.median(per_token):.2f} us per generated token "
          f"({', '.join(f'{x:.2f}' for x in per_token)})")


if __name__ == "__main__":
    main()
