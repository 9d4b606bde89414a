"""`make bench`, part 6 (issue 13): sentiric serve's per-step overhead against llama-server, side by side.

Two models: a micro synthetic one (1 layer, n_embd 64: the model step costs almost nothing, so what shows is the
server around it) and the bundled gemma 3 270M. Both servers run at once on the same CPU path with 8 slots of
512 tokens (2560 for the time-to-first-token run); the runs alternate between them and repeat (median, spread).
Streaming and not. Then time to first token of a 2k-token prompt while 3 other requests generate, and the
longest gap in those requests' streams meanwhile (continuous batching must not stall them).

Run: .venv/bin/python bench/overhead_bench.py --append docs/benchmarks.md [--repeats 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from report import record
from serve_bench import LLAMA_SERVER, free_port, run_clients
from synth import write_model

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.cpupath import cpu_info, cpu_path

SLOTS = 8
# another llama-server binary (bench/gpu_run.sh: a CUDA build made on the GPU machine); then nothing is built here
SERVER = Path(os.environ.get("LLAMA_SERVER") or LLAMA_SERVER)
EXTRA = {"sentiric": [], "llama-server": []}  # --sentiric-args / --server-args
PROMPTS = [f"Chapter {i}. The old lighthouse keeper climbed the stairs and" for i in range(16)]
_fresh = itertools.count(1000)  # --fresh: a prompt no request sent before (no slot holds it for either server)


def start(kind: str, model: Path, ctx: int, extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    no_repack = [] if cpu_path().extra_bufts else ["--no-repack"]
    cmd = {"sentiric": [sys.executable, "-m", "sentiric_cli", "serve", "--model", str(model), "--port", str(port),
                        "--threads", str(SLOTS), "--context", str(ctx), *EXTRA["sentiric"], *extra],
           "llama-server": [str(SERVER), "-m", str(model), "--port", str(port), "-np", str(SLOTS),
                            "-c", str(ctx * SLOTS), "-t", str(os.cpu_count() or 1), "--threads-http", "32", "--log-disable",
                            *no_repack, *EXTRA["llama-server"]]}[kind]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return ready(proc, port, kind)


def stop(servers: dict[str, tuple[subprocess.Popen, str]]) -> None:
    for proc, _ in servers.values():
        proc.terminate()
        proc.wait(timeout=60)


def ready(proc: subprocess.Popen, port: int, what: str) -> tuple[subprocess.Popen, str]:
    """The server's process and URL once it answers /v1/models (a minute at most)."""
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def one(http: httpx.Client, url: str, prompt: str, max_tokens: int, stream: bool) -> tuple[float, int]:
    try:
        return _one(http, url, prompt, max_tokens, stream)
    except httpx.RemoteProtocolError:  # a kept-alive connection the server closed meanwhile (llama-server does)
        return _one(http, url, prompt, max_tokens, stream)


def _one(http: httpx.Client, url: str, prompt: str, max_tokens: int, stream: bool) -> tuple[float, int]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    t0 = time.perf_counter()
    if not stream:
        r = http.post(f"{url}/v1/completions", json=body)
        r.raise_for_status()
        return time.perf_counter() - t0, r.json()["usage"]["completion_tokens"]
    n = 0
    with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                n += bool(json.loads(line[6:])["choices"][0].get("text"))
    return time.perf_counter() - t0, n


def load(url: str, clients: int, per_client: int, max_tokens: int, stream: bool, fresh: bool = False) -> dict:
    def prompt(i: int, k: int) -> str:
        return PROMPTS[0].replace("0", str(next(_fresh)), 1) if fresh else PROMPTS[(i + k) % len(PROMPTS)]

    def client(i: int) -> list[tuple[float, int]]:
        with httpx.Client(timeout=600) as http:
            return [one(http, url, prompt(i, k), max_tokens, stream) for k in range(per_client)]

    return run_clients(clients, client)


def ttft(url: str, long_prompt: str) -> dict:
    """Time to first token of a 2k-token prompt while 3 other requests stream; their longest gap meanwhile."""
    gaps: list[float] = []
    started = cf.Future()

    def background(i: int) -> None:
        last = None
        with httpx.Client(timeout=600) as http, http.stream("POST", f"{url}/v1/completions", json={
                "prompt": PROMPTS[i], "max_tokens": 200, "temperature": 0, "stream": True}) as r:
            for line in r.iter_lines():
                if not line.startswith("data: {"):
                    continue
                now = time.perf_counter()
                if last is not None and started.done():
                    gaps.append(now - last)
                last = now

    with cf.ThreadPoolExecutor(4) as pool:
        bg = [pool.submit(background, i) for i in range(3)]
        time.sleep(1.0)  # they are generating
        started.set_result(True)
        t0 = time.perf_counter()
        first = None
        with httpx.Client(timeout=600) as http, http.stream("POST", f"{url}/v1/completions", json={
                "prompt": long_prompt, "max_tokens": 8, "temperature": 0, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0].get("text") and first is None:
                    first = time.perf_counter() - t0
        for f in bg:
            f.result()
    return {"ttft": first or float("nan"), "max_gap": max(gaps, default=float("nan"))}


def contention(repeats: int) -> str:
    """The bundled model at 4 clients (not streamed), quiet and then beside 2 processes that spin on the CPU."""
    servers = {k: start(k, bundled_model(), 512) for k in ("sentiric", "llama-server")}
    hogs: list[subprocess.Popen] = []
    res: dict = {}
    try:
        for phase in ("quiet", "2 busy processes"):
            if phase != "quiet":
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
                time.sleep(1)
            for rep in range(repeats):
                for kind in (("sentiric", "llama-server") if rep % 2 == 0 else ("llama-server", "sentiric")):
                    res.setdefault((phase, kind), []).append(load(servers[kind][1], 4, 2, 64, False)["tok_s"])
            for h in hogs:
                h.kill()
    finally:
        for h in hogs:
            h.kill()
        stop(servers)
    rows = []
    for phase in ("quiet", "2 busy processes"):
        s, ls = res[(phase, "sentiric")], res[(phase, "llama-server")]
        rows.append(f"| {phase} | {spread(s)} | {spread(ls)} | {statistics.median(s) / statistics.median(ls):.2f} |")
    return "\n".join([
        "### Under CPU contention (`--contention-only`)", "",
        f"The bundled model, 4 clients, not streamed, {repeats} runs each, beside 2 Python processes spinning on the "
        f"{os.cpu_count()} cores: tokens/s, median (min-max).", "",
        "| load | sentiric | llama-server | ratio |", "|---|---:|---:|---:|", *rows, ""])


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ttft-only", action="store_true", help="only the time-to-first-token part")
    ap.add_argument("--contention-only", action="store_true",
                    help="only the bundled model at 4 clients, quiet and beside 2 busy processes")
    ap.add_argument("--fresh", action="store_true",
                    help="every request a prompt never sent before (the default grid repeats 16 prompts)")
    ap.add_argument("--only", choices=("micro", "bundled"), help="one model's grid, no time-to-first-token part")
    ap.add_argument("--clients", help="client counts, comma-separated (with --only or --model)")
    ap.add_argument("--model", type=Path, help="this model's grid instead of the micro and bundled ones (bench/gpu_run.sh: "
                    "a sparse shadow of a 7B header on a GPU); its time-to-first-token part too")
    ap.add_argument("--server-args", default="", help="more llama-server arguments, e.g. '-ngl 999'")
    ap.add_argument("--sentiric-args", default="", help="more `sentiric serve` arguments")
    ap.add_argument("--name", default="overhead", help="the results' section (bench/results/NAME.jsonl)")
    a = ap.parse_args()
    if a.contention_only:
        return publish("overhead_contention", contention(a.repeats))
    EXTRA["sentiric"], EXTRA["llama-server"] = a.sentiric_args.split(), a.server_args.split()
    if not os.environ.get("LLAMA_SERVER"):
        subprocess.run([str(ROOT / "bench" / "build_llama_server.sh")], check=True)
    if a.model:
        grids = [(a.model.stem, a.model, (1, 4, 8, 16), 128, 4)]
    else:
        micro = ROOT / "build" / "micro-llama.gguf"
        if not micro.exists():
            micro.parent.mkdir(exist_ok=True)
            write_model(micro, "llama", n_layer=1, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512)
        # per client: enough requests that one run lasts a second or more (at 4 x 128 a micro run took 0.4 s, and
        # the host's noise over such short runs was as large as the differences)
        grids = [("micro", micro, (1, 4, 8, 16), 128, 16), ("bundled", bundled_model(), (1, 4, 8), 64, 4)]
    if a.only and not a.model:
        grids = [g for g in grids if g[0] == a.only]
    if a.only or a.model:
        if a.clients:
            grids = [(g[0], g[1], tuple(int(c) for c in a.clients.split(",")), g[3], g[4]) for g in grids]
    rows: list[str] = []
    cells: dict[str, dict] = {}  # "micro whole 8" -> each server's tokens/s per repeat, the ratio's median (report.py)
    for name, model, clients, max_tokens, per_client in ([] if a.ttft_only else grids):
        servers = {k: start(k, model, 512) for k in ("sentiric", "llama-server")}
        try:
            res: dict = {}
            for rep in range(a.repeats):
                for stream in (False, True):
                    for c in clients:
                        order = ("sentiric", "llama-server") if rep % 2 == 0 else ("llama-server", "sentiric")
                        for kind in order:
                            r = load(servers[kind][1], c, per_client, max_tokens, stream, a.fresh)
                            res.setdefault((stream, c, kind), []).append(r)
                            print(name, rep, stream, c, kind, round(r["tok_s"]), flush=True)
        finally:
            stop(servers)
        for stream in (False, True):
            for c in clients:
                s = [r["tok_s"] for r in res[(stream, c, "sentiric")]]
                ls = [r["tok_s"] for r in res[(stream, c, "llama-server")]]
                ratios = [x / y for x, y in zip(s, ls, strict=True)]
                cells[f"{name} {'stream' if stream else 'whole'} {c}"] = {
                    "sentiric": s, "llama-server": ls, "ratio": statistics.median(ratios)}
                p = {(k, key): statistics.median(r[key] for r in res[(stream, c, k)])
                     for k in ("sentiric", "llama-server") for key in ("p50", "p95")}
                rows.append(f"| {name} | {'stream' if stream else 'whole'} | {c} | {spread(s)} | {spread(ls)} | "
                            f"**{statistics.median(ratios):.2f}** ({min(ratios):.2f}-{max(ratios):.2f}) | "
                            f"{p['sentiric', 'p50']:.2f} / {p['sentiric', 'p95']:.2f} s | "
                            f"{p['llama-server', 'p50']:.2f} / {p['llama-server', 'p95']:.2f} s |")
    long_prompt = " ".join(["The keeper wrote the weather in the log every hour, and the sea was calm."] * 120)
    t_rows = []
    ttft_model = None if a.only else a.model or bundled_model()  # --only: no time-to-first-token part
    servers = {k: start(k, ttft_model, 2560) for k in ("sentiric", "llama-server")} if ttft_model else {}
    try:
        tt: dict = {}
        if servers and a.model:  # "~2k tokens" in Gemma's tokenizer; a byte-level shadow's is 4x as many: cut to 2k
            n = len(httpx.post(f"{servers['sentiric'][1]}/tokenize", json={"content": long_prompt}).json()["tokens"])
            long_prompt = long_prompt[:len(long_prompt) * 2000 // max(n, 2000)]
        for rep in range(a.repeats if servers else 0):
            for kind in (("sentiric", "llama-server") if rep % 2 == 0 else ("llama-server", "sentiric")):
                fresh = f"Log {rep}. {long_prompt}"  # a new start each time: neither server may reuse a cached prefix
                tt.setdefault(kind, []).append(ttft(servers[kind][1], fresh))
    finally:
        stop(servers)
    for kind, rs in tt.items():
        ts, gs = [r["ttft"] for r in rs], [r["max_gap"] for r in rs]
        t_rows.append(f"| {kind} | {statistics.median(ts):.2f} ({min(ts):.2f}-{max(ts):.2f}) s | "
                      f"{statistics.median(gs):.2f} ({min(gs):.2f}-{max(gs):.2f}) s |")
    cpu = cpu_path()
    text = "\n".join([
        "## Per-step overhead against llama-server (issue 13)", "",
        f"`bench/overhead_bench.py` on {cpu_info()[0] or 'unknown CPU'} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d')}, CPU path {cpu.path} for both. Both servers up at once, {SLOTS} slots of 512 "
        f"tokens; runs alternate between them, {a.repeats} repeats: median (min-max). Each client sends its "
        "completions one after another (" + "; ".join(f"{g[0]}: {g[4]} x {g[3]} tokens" for g in grids) + "), "
        + ("every prompt one never sent before (`--fresh`), " if a.fresh else "16 prompts, the same in every run, ")
        + "temperature 0; `whole` = not "
        "streamed. llama-server built from the llama.cpp llama-cpp-python vendors (`bench/build_llama_server.sh`)"
        + (f"; llama-server {a.server_args}" if a.server_args else "")
        + (f"; sentiric {a.sentiric_args}" if a.sentiric_args else "") + ".", "",
        "| model | mode | clients | sentiric tok/s | llama-server tok/s | ratio | sentiric p50 / p95 | llama-server p50 / p95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|", *rows, "", *([] if a.only else [
        f"Time to first token of a ~2k-token prompt ({ttft_model.name}, slots of 2560) while 3 other requests stream, and "
        "the longest gap between those requests' tokens meanwhile:", "",
        "| server | time to first token | longest gap in the other streams |", "|---|---:|---:|", *t_rows, ""])])
    if a.name != "overhead":  # another model's grid kept beside the default one (e.g. the Qwen 3 shape, issue 28)
        text = text.replace("## Per-step overhead against llama-server (issue 13)",
                            f"## Per-step overhead against llama-server: {a.model.stem if a.model else a.name}", 1)
    publish(a.name, text, {"cells": cells})


def publish(name: str, text: str, data: object = None) -> None:
    record(name, text, data)


if __name__ == "__main__":
    main()
