"""`make bench`, part 5: abuse soak (issue 11). A real `sentiric serve` under sustained mixed load for a few
minutes: chat, logprobs, long prompts (shifted through the window), and streams the client drops early.
RSS sampled over time, /health polled throughout; then tokenizing 1, 8 and 64 MB of text in-process.

Run: .venv/bin/python bench/soak_bench.py --append docs/benchmarks.md [--minutes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from live import rss_mib, server
from report import record

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.bindings import Model
from sentiric_cli.engine.cpupath import cpu_info
from sentiric_cli.settings import Settings

WORDS = ("river stone lantern harbor meadow copper violet thunder orchard signal pepper marble quiet "
         "window saddle ember glacier tunnel falcon ribbon").split()


def text(n_words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


def client(url: str, until: float, seed: int, stats: dict, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=300) as http:
        while time.monotonic() < until:
            kind = rng.choice(["chat", "logprobs", "long", "drop"])
            try:
                if kind == "chat":
                    r = http.post(f"{url}/v1/chat/completions", json={
                        "messages": [{"role": "user", "content": text(20, rng)}], "max_tokens": 48, "temperature": 0.8})
                    ok = r.status_code == 200
                elif kind == "logprobs":
                    r = http.post(f"{url}/v1/chat/completions", json={
                        "messages": [{"role": "user", "content": text(20, rng)}], "max_tokens": 64, "temperature": 0.8,
                        "logprobs": True, "top_logprobs": 5})
                    ok = r.status_code == 200 and r.json()["choices"][0]["logprobs"] is not None
                elif kind == "long":  # about 3k tokens through a 1024-token window
                    r = http.post(f"{url}/v1/completions", json={"prompt": text(2500, rng), "max_tokens": 16})
                    ok = r.status_code == 200
                else:  # a stream the client walks away from after a few chunks
                    with http.stream("POST", f"{url}/v1/completions", json={
                            "prompt": text(10, rng), "max_tokens": 400, "temperature": 0.8, "stream": True}) as r:
                        ok = r.status_code == 200
                        for i, _ in enumerate(r.iter_lines()):
                            if i > 6:
                                break
            except httpx.HTTPError:
                ok = False
            with lock:
                stats[kind] = stats.get(kind, 0) + 1
                if not ok:
                    stats["failed"] = stats.get("failed", 0) + 1


def soak(minutes: float, clients: int) -> dict:
    with server("--threads", "4", "--context", "1024") as (url, proc, _):  # stopped with SIGTERM on the way out
        until = time.monotonic() + minutes * 60
        stats: dict = {}
        lock = threading.Lock()
        workers = [threading.Thread(target=client, args=(url, until, i, stats, lock)) for i in range(clients)]
        for w in workers:
            w.start()
        rss, health = [], []
        t0 = time.monotonic()
        next_rss = t0
        while any(w.is_alive() for w in workers):
            now = time.monotonic()
            if now >= next_rss:
                rss.append((now - t0, rss_mib(proc.pid)))
                next_rss = now + 10
            h0 = time.perf_counter()
            try:
                code = httpx.get(f"{url}/health", timeout=10).status_code
            except httpx.HTTPError:
                code = 0
            health.append((time.perf_counter() - h0, code))
            time.sleep(0.2)
        for w in workers:
            w.join()
        time.sleep(2)
        busy = httpx.get(f"{url}/health").json()["slots"]["busy"]
        rss.append((time.monotonic() - t0, rss_mib(proc.pid)))
    lat = sorted(x for x, _ in health)
    return {"stats": stats, "rss": rss, "busy_after": busy, "health_n": len(health),
            "health_failed": sum(1 for _, c in health if c != 200),
            "health_p50": lat[len(lat) // 2], "health_p99": lat[int(len(lat) * 0.99) - 1], "health_max": lat[-1]}


def tokenize_scaling(sizes_mb=(1, 8, 64)) -> list[tuple[int, float]]:
    model = Model(bundled_model(), Settings())
    rng = random.Random(7)
    unit = text(200_000, rng)  # ~1.3 MB
    out = []
    try:
        for mb in sizes_mb:
            body = (unit * (mb * 2**20 // len(unit) + 1))[:mb * 2**20]
            t0 = time.perf_counter()
            n = len(model.tokenize(body))
            out.append((mb, time.perf_counter() - t0, n))
    finally:
        model.close()
    return out


def report(s: dict, tok: list) -> str:
    cpu = cpu_info()[0] or "unknown CPU"
    first, last = s["rss"][0][1], s["rss"][-1][1]
    peak = max(v for _, v in s["rss"])
    mid = s["rss"][len(s["rss"]) // 2][1]
    lines = [
        "## Abuse soak (issue 11)",
        "",
        f"`bench/soak_bench.py` on {cpu} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}: `sentiric serve`"
        " (bundled gemma 3 270M, 4 threads x 1024 tokens) under 4 clients for the whole run, each picking at random:"
        " chat (48 tokens), chat with `logprobs` + `top_logprobs: 5` (64 tokens), a ~3k-token prompt shifted"
        " through the window, or a stream dropped after a few chunks. /health polled every 0.2 s; RSS every 10 s.",
        "",
        "| requests (chat / logprobs / long / dropped streams) | failed | slots busy after "
        "| RSS first / middle / last / peak (MiB) | /health p50 / p99 / max (s) | /health failed |",
        "|---|---|---|---|---|---|",
        f"| {s['stats'].get('chat', 0)} / {s['stats'].get('logprobs', 0)} / {s['stats'].get('long', 0)} / "
        f"{s['stats'].get('drop', 0)} | {s['stats'].get('failed', 0)} | {s['busy_after']} | "
        f"{first:.0f} / {mid:.0f} / {last:.0f} / {peak:.0f} | {s['health_p50']:.3f} / {s['health_p99']:.3f} / "
        f"{s['health_max']:.3f} | {s['health_failed']} of {s['health_n']} |",
        "",
        "RSS over time (s, MiB): " + ", ".join(f"{t:.0f}: {v:.0f}" for t, v in s["rss"]),
        "",
        "Tokenizing text in-process (`Model.tokenize`, pieces of 16k characters; one llama.cpp call was quadratic:"
        " 4 MB took 40 s):",
        "",
        "| text | tokens | seconds | seconds per MB |",
        "|---|---|---|---|",
    ]
    lines += [f"| {mb} MB | {n:,} | {t:.1f} | {t / mb:.2f} |" for mb, t, n in tok]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()
    s = soak(a.minutes, a.clients)
    print(json.dumps(s), file=sys.stderr)  # the raw figures, before anything else can fail
    tok = tokenize_scaling()
    print(json.dumps(tok), file=sys.stderr)
    text_out = report(s, tok)
    record("soak", text_out)


if __name__ == "__main__":
    main()
