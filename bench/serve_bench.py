"""`make bench`, part 3: sentiric serve against llama-cpp-python's server and llama-server, one run.

Same model (the bundled gemma 3 270M), same machine, same prompts; THREADS=4 (llama-server -np 4).
Each of N concurrent clients sends 3 completions of up to 64 tokens (temperature 0) one after another.
Appends to docs/benchmarks.md. Run: .venv/bin/python bench/serve_bench.py --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from report import record

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.cpupath import cpu_info, cpu_path

ROOT = Path(__file__).resolve().parent.parent
LLAMA_SERVER = ROOT / "build" / "llama-server" / "bin" / "llama-server"
CLIENTS = (1, 2, 4, 8)
PER_CLIENT = 3
MAX_TOKENS = 64
PROMPTS = [f"Chapter {i}. The old lighthouse keeper climbed the stairs and" for i in range(8)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model: Path, port: int) -> subprocess.Popen:
    cores = str(os.cpu_count() or 1)
    # the same CPU path for every peer: where sentiric runs without extra buffers, so does llama-server
    no_repack = [] if cpu_path().extra_bufts else ["--no-repack"]
    cmd = {
        "sentiric": [sys.executable, "-m", "sentiric_cli", "serve", "--model", str(model), "--port", str(port),
                     "--threads", "4", "--context", "512"],
        "llama-cpp-python": [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--port", str(port),
                             "--n_ctx", "2048", "--n_threads", cores, "--verbose", "false"],
        "llama-server": [str(LLAMA_SERVER), "-m", str(model), "--port", str(port), "-np", "4", "-c", "2048",
                         "-t", cores, "--log-disable", *no_repack],
    }[kind]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} did not start")


def one(url: str, prompt: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/completions", timeout=600,
                   json={"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0})
    r.raise_for_status()
    return time.perf_counter() - t0, r.json()["usage"]["completion_tokens"]


def run_clients(clients: int, client) -> dict:
    """`clients` threads each running client(i) -> [(seconds, tokens), ...]: aggregate tokens/s and latencies."""
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        results = [x for xs in pool.map(client, range(clients)) for x in xs]
    wall = time.perf_counter() - t0
    lat = sorted(r[0] for r in results)
    return {"tok_s": sum(r[1] for r in results) / wall, "p50": statistics.median(lat),
            "p95": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))], "tokens": sum(r[1] for r in results)}


def load(url: str, clients: int) -> dict:
    def client(i: int) -> list[tuple[float, int]]:
        return [one(url, PROMPTS[(i + k) % len(PROMPTS)]) for k in range(PER_CLIENT)]

    one(url, PROMPTS[0])  # warm up
    return run_clients(clients, client)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.parse_args()  # --help
    # builds once, and again only when this CPU needs other flags than the existing build had
    subprocess.run([str(ROOT / "bench" / "build_llama_server.sh")], check=True)
    cpu = cpu_path()
    model = bundled_model()
    results: dict[str, dict[int, dict]] = {}
    for kind in ("sentiric", "llama-cpp-python", "llama-server"):
        port = free_port()
        proc = start(kind, model, port)
        try:
            results[kind] = {c: load(f"http://127.0.0.1:{port}", c) for c in CLIENTS}
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        print(kind, {c: round(v["tok_s"], 1) for c, v in results[kind].items()}, flush=True)
    lines = ["", "## Serving: sentiric against llama-cpp-python's server and llama-server", "",
             f"Produced by `make bench` (`bench/serve_bench.py`): bundled gemma 3 270M Q4_K_M, CPU ({os.cpu_count()} "
             f"cores, {cpu_info()[0] or 'unknown CPU'}), "
             f"{PER_CLIENT} completions of up to {MAX_TOKENS} tokens per client (temperature 0), one after "
             "another. sentiric: `serve --threads 4 --context 512`; llama-cpp-python 0.3.36: "
             "`python -m llama_cpp.server --n_ctx 2048`; llama-server built from the llama.cpp llama-cpp-python "
             f"vendors (same extra C flags as sentiric's build): `-np 4 -c 2048`. CPU path for all three: "
             f"**{cpu.path}** ({cpu.describe()}; docs/cpu.md).", "",
             "| clients | server | generated tok/s | p50 latency | p95 latency |", "|---:|---|---:|---:|---:|"]
    for c in CLIENTS:
        for kind in results:
            r = results[kind][c]
            lines.append(f"| {c} | {kind} | {r['tok_s']:.1f} | {r['p50']:.2f} s | {r['p95']:.2f} s |")
    lines += ["", "Ratios (aggregate generated tokens/s):", "", "| clients | sentiric / llama-cpp-python | "
              "sentiric / llama-server |", "|---:|---:|---:|"]
    for c in CLIENTS:
        s = results["sentiric"][c]["tok_s"]
        lines.append(f"| {c} | {s / results['llama-cpp-python'][c]['tok_s']:.2f} | "
                     f"{s / results['llama-server'][c]['tok_s']:.2f} |")
    record("serve", "\n".join(lines).strip(), results)


if __name__ == "__main__":
    main()
