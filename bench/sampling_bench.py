"""Greedy tokens without the sampler chain (sentiric_cli/engine/sampling.py): what choosing a token costs, and serving.

1. Per token, on the bundled model (262k-token vocabulary): llama.cpp's greedy chain and its default sampled chain
   (top-k 40, top-p, min-p, temperature) through llama_sampler_sample, against numpy's argmax of the logits row,
   one row at a time and all 8 rows of a step at once (Context.argmax).
2. The scheduler in-process (no HTTP: the step is what is measured), 1, 4 and 8 clients each sending 3 requests
   one after another (96 tokens, temperature 0), argmax and the chain interleaved, repeated: generated tokens per
   second. Padded steps off: their live choice varies from run to run, and this compares only the sampling.
   (That both ways pick the same tokens is tests/test_sampling.py's job: here the batches' make-up varies with
   timing, and llama.cpp is not batch-invariant.)

Run: .venv/bin/python bench/sampling_bench.py --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

from llama_cpp import llama_cpp as C

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from inproc import serve_clients
from report import record

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.cpupath import cpu_info
from sentiric_cli.engine.sampling import Sampler, SamplingParams
from sentiric_cli.settings import Settings

SLOTS = 8
_init = Sampler.__init__


def use_argmax(on: bool) -> None:
    def init(self, req, model):
        _init(self, req, model)
        self.greedy = self.greedy and on

    Sampler.__init__ = init


def per_token(n: int = 300) -> list[tuple[str, float]]:
    """Median microseconds to choose one token, each way, from the logits of an 8-row decode step."""
    with Engine(Settings(context_size=128, threads=SLOTS), bundled_model()) as e:
        m, b = e.model, e.batch
        b.clear()
        for s in range(SLOTS):
            toks = [m.bos] + m.tokenize(f"Chapter {s}. The old lighthouse keeper")
            for p, t in enumerate(toks):
                b.add(t, p, s, p == len(toks) - 1)
        e.ctx.decode(b)
        rows = sorted(b.outputs)
        out = []
        for name, temp in (("llama.cpp greedy chain", 0.0), ("llama.cpp sampled chain (top-k 40, temperature 0.8)", 0.8)):
            sm = Sampler(SamplingParams(temperature=temp), m)
            out.append((name, _median_us(lambda sm=sm: C.llama_sampler_sample(sm.chain, e.ctx.handle, rows[0]), n)))
            sm.close()
        out.append(("numpy argmax, one row", _median_us(lambda: int(e.ctx._logits(rows[0]).argmax()), n)))

        def step_rows() -> None:
            e.ctx._greedy = None  # as after a decode: the first row computes all 8
            for i in rows:
                e.ctx.argmax(i)
        out.append((f"numpy argmax, all {SLOTS} rows of a step, per row", _median_us(step_rows, n) / SLOTS))
    return out


def _median_us(f, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def serve_once(argmax: bool, clients: int) -> float:
    use_argmax(argmax)
    s = Settings(context_size=512, threads=SLOTS, pad_steps=False)
    engine = Engine(s, bundled_model())
    try:
        wall, generated = serve_clients(engine, s, clients)
    finally:
        engine.close()
        use_argmax(True)
    return generated / wall


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cpu = cpu_info()[0] or platform.processor()
    out = ["", "## Greedy tokens without the sampler chain (issue 13)", "",
           f"`bench/sampling_bench.py` on {cpu}, the bundled model (262,144-token vocabulary), same session. "
           "Choosing one token from a decode step's logits, median of 300:", "",
           "| how | µs per token |", "|---|---:|"]
    out += [f"| {name} | {us:.0f} |" for name, us in per_token()]
    out += ["", "The scheduler in-process (no HTTP), each client sending 3 requests one after another, 96 tokens each, "
            f"temperature 0, {SLOTS} slots, padded steps off, argmax and the chain interleaved, {a.repeats} repeats, "
            "median (min-max):", "",
            "| clients | tokens/s, argmax | tokens/s, chain | ratio argmax/chain |", "|---:|---:|---:|---:|"]
    for clients in (1, 4, 8):
        rates: dict = {True: [], False: []}
        for rep in range(a.repeats):
            for argmax in ((True, False) if rep % 2 == 0 else (False, True)):
                rates[argmax].append(serve_once(argmax, clients))
                print(clients, rep, argmax, round(rates[argmax][-1], 1), flush=True)
        ratios = [g / c for g, c in zip(rates[True], rates[False], strict=True)]
        out.append(f"| {clients} | {spread(rates[True])} | {spread(rates[False])} | "
                   f"**{statistics.median(ratios):.3f}** ({min(ratios):.3f}-{max(ratios):.3f}) |")
    record("sampling", "\n".join(out).strip())


if __name__ == "__main__":
    main()
