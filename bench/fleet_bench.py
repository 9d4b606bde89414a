"""Issue 26: long documents over a fleet, and a router in front of replicas.

1. Time per chunk of one 16x document (512-token window, the pass key at 30%): the local engine against
   `run --backend` through one and two local replicas. On this 2-core machine every replica shares the same two
   cores, so this measures what going over HTTP costs, not a speed-up. Runs interleaved, repeated, medians.
2. The LiteLLM proxy in front of two replicas, 32 concurrent chat requests, one replica killed (kill -9) once both
   have served and it is busy: failed client requests with LiteLLM's defaults and with docs/scale.md's config,
   without and with streaming (half the requests streamed).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from live import server  # noqa: E402
from needles import KEY16, QUESTION, WINDOW16, document  # noqa: E402
from openai import OpenAI  # noqa: E402
from report import record  # noqa: E402
from router import KEY, config, proxy  # noqa: E402


def sentiric_run(doc: Path, *extra: str) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "sentiric_cli", "run", QUESTION, "-f", str(doc), "--json", *extra],
                       capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout), wall


def per_chunk(out: dict) -> float:
    """The map round's seconds per request (every passage, and the baseline)."""
    ld = out["longdoc"]
    mapped = next(p for p in ld["phases"] if p["name"] == "map")
    return mapped["seconds"] / (len(ld["chunks"]) + 1)


def chunk_times(repeats: int) -> tuple[list[str], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        doc = Path(tmp) / "doc16.txt"
        doc.write_text(document(700, 0.3, KEY16, seed=3)[0])
        two = ("--threads", "2", "--context", WINDOW16)
        one = ("--threads", "1", "--context", WINDOW16)
        with server(*two) as (a, _, _), server(*two) as (b, _, _), server(*one) as (c, _, _), \
                server(*one) as (d, _, _):
            readers = {"local engine, 2 slots": ("--context", WINDOW16, "--threads", "2"),
                       "1 replica, 2 slots": ("--backend", a),
                       "2 replicas, 1 slot each": ("--backend", c, "--backend", d),
                       "2 replicas, 2 slots each": ("--backend", a, "--backend", b)}
            times: dict[str, list[float]] = {k: [] for k in readers}
            walls: dict[str, list[float]] = {k: [] for k in readers}
            answers: dict[str, set] = {k: set() for k in readers}
            for _ in range(repeats):  # interleaved: each repeat runs every reader once
                for name, args in readers.items():
                    out, wall = sentiric_run(doc, *args)
                    times[name].append(per_chunk(out))
                    walls[name].append(wall)
                    answers[name].add((out["answer"], json.dumps(out["longdoc"]["citations"])))
    base = statistics.median(times["local engine, 2 slots"])
    lines = ["### Time per chunk: one 16x document (about 8k tokens, 512-token window), map round", "",
             "| reader | map s/chunk, runs | median | ratio to local | wall, median | same answer and citations as local |",
             "|---|---|---:|---:|---:|---|"]
    local_answer = answers["local engine, 2 slots"]
    for name in readers:
        ts = times[name]
        lines.append(f"| {name} | {', '.join(f'{x * 1000:.0f}' for x in ts)} ms | {statistics.median(ts) * 1000:.0f} ms | "
                     f"{statistics.median(ts) / base:.2f} | {statistics.median(walls[name]):.1f} s | "
                     f"{'yes' if answers[name] == local_answer and len(local_answer) == 1 else 'no'} |")
    lines += ["", "Every replica here shares this machine's two cores with the others and with the client: the ratios "
              "are the cost of going over HTTP (and of two processes contending for two cores), not the speed-up "
              "of machines of their own. On N machines the map round divides by N, less this overhead.", ""]
    return lines, {"per_chunk_s": times, "wall_s": walls}


def kill_trial(tuned: bool, stream: bool) -> tuple[int, str]:
    """32 chats through the proxy, one replica killed mid-load: (failed requests, the first failure)."""
    args = ("--threads", "2", "--context", WINDOW16, "--served-model-name", "sentiric")
    with server(*args) as (a, _, _), server(*args) as (b, victim, _), proxy(config([a, b], tuned=tuned)) as url:
        c = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=600)

        def ask(i: int) -> str | None:
            kw = dict(model="sentiric", max_tokens=40, temperature=0.7,
                      messages=[{"role": "user", "content": f"Tell me a story about {i} cats."}])
            try:
                if stream and i % 2:
                    chunks = [ch for ch in c.chat.completions.create(**kw, stream=True) if ch.choices]
                    return None if chunks and chunks[-1].choices[0].finish_reason else "stream ended without finish_reason"
                c.chat.completions.create(**kw)
                return None
            except Exception as e:  # noqa: BLE001  # a failed client request is what this counts
                return f"{type(e).__name__}: {str(e)[:120]}"

        def served(u: str) -> float:
            text = httpx.get(f"{u}/metrics", timeout=60).text
            return float(next(x.split()[1] for x in text.splitlines() if x.startswith("sentiric_requests_total ")))

        with cf.ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(ask, i) for i in range(32)]
            while not (served(a) >= 1 and served(b) >= 1 and httpx.get(f"{b}/health").json()["slots"]["busy"]):
                time.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            errors = [e for e in (f.result() for f in futures) if e]
    return len(errors), errors[0] if errors else ""


def router_trials(repeats: int) -> tuple[list[str], dict]:
    rows, data = [], {}
    for tuned in (False, True):
        for stream in (False, True):
            results = [kill_trial(tuned, stream) for _ in range(repeats)]
            name = f"{'docs/scale.md config' if tuned else 'LiteLLM defaults'}, {'half streamed' if stream else 'not streamed'}"
            data[name] = results
            first = next((e for _, e in results if e), "")
            rows.append(f"| {name} | {', '.join(str(n) for n, _ in results)} of 32 | {first or '-'} |")
    lines = ["### LiteLLM proxy, two replicas, 32 concurrent chats, one replica killed (kill -9) mid-load", "",
             "| router config, requests | failed client requests, per trial | first failure |", "|---|---|---|",
             *rows, "",
             "A non-streamed request cut by the kill fails at the connection and the router retries it on the other "
             "replica. A stream that has started cannot be retried by a router (LiteLLM retries a stream only before "
             "its first chunk): the client sees it end with an error (docs/scale.md).", ""]
    return lines, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=2)
    args = ap.parse_args()
    head, a = chunk_times(args.repeats)
    tail, b = router_trials(args.trials)
    record("fleet", "\n".join(["## Fleet: run --backend and a router in front of replicas (issue 26)", "", *head,
                               *tail]), {"chunks": a, "router": b})


if __name__ == "__main__":
    main()
