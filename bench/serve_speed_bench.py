"""`make bench`, issue 28: serve speed where users feel it.

1. Multi-turn chats (section `multiturn`): 32 conversations of 6 turns over 4 slots, every user answering at once,
   so slots are taken by other conversations between a user's turns. sentiric with `cache_ram` 0 and on (8192 MiB,
   the default) against llama-server with `--cache-ram` (its default, 8192). Time to first token of the returning
   turns (2-6) and generated tokens/s over the whole run; each repeat is a new set of conversations (no server holds
   them), the servers taking turns.
2. Prompt-lookup drafting (section `drafting`): one client, answers that quote the prompt ("repeat the paragraph",
   a long document's evidence) and free text, `draft_tokens` 0 against 8; decode tokens/s from the stream's
   timestamps, the acceptance rate from /metrics, and whether the greedy text is the same.
3. Reproducible greedy output (section `determinism`): 8 greedy requests at once, four times over, against one
   server; how many of the 8 prompts got more than one answer, by configuration (default, padding off, the compute
   threads fixed too, `deterministic`), and what `deterministic` costs in tokens/s.

Run: .venv/bin/python bench/serve_speed_bench.py [--only multiturn|drafting|determinism] [--repeats 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from overhead_bench import ready
from report import record
from serve_bench import LLAMA_SERVER, free_port

from sentiric_cli.bundled import bundled_model
from sentiric_cli.engine.cpupath import cpu_path

WORDS = ("harbour lantern granite orchard violet copper meadow thunder saffron glacier willow ember quarry falcon "
         "tide marble cinder fjord heron basalt clover ivory canyon juniper kelp linen mosaic nectar opal pewter").split()


def start(kind: str, slots: int, ctx: int, extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    model = str(bundled_model())
    no_repack = [] if cpu_path().extra_bufts else ["--no-repack"]
    cmd = {"sentiric": [sys.executable, "-m", "sentiric_cli", "serve", "--model", model, "--port", str(port),
                        "--threads", str(slots), "--context", str(ctx), *extra],
           "llama-server": [str(LLAMA_SERVER), "-m", model, "--port", str(port), "-np", str(slots), "-c",
                            str(ctx * slots), "-t", str(os.cpu_count() or 1), "--threads-http", "64", "--log-disable",
                            *no_repack, *extra]}[kind]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return ready(proc, port, kind)


def stop(servers: dict) -> None:
    for proc, _ in servers.values():
        proc.terminate()
        proc.wait(timeout=60)


def stream(http: httpx.Client, url: str, body: dict) -> tuple[float, list[float], str]:
    """(time to first token, each token's arrival time, the text) of one streamed completion."""
    t0 = time.perf_counter()
    times: list[float] = []
    text = []
    for attempt in range(2):
        try:
            with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        piece = json.loads(line[6:])["choices"][0].get("text")
                        if piece:
                            times.append(time.perf_counter())
                            text.append(piece)
            break
        except httpx.RemoteProtocolError:  # a kept-alive connection the server closed meanwhile
            if attempt:
                raise
    return (times[0] - t0 if times else float("nan")), times, "".join(text)


def spread(xs: list[float], fmt: str = "{:,.2f}") -> str:
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


# ---- 1. multi-turn chats

CONVS, TURNS, SLOTS, CTX = 32, 6, 4, 2048


def preamble(rep: int, i: int) -> str:
    rng = random.Random(rep * 1000 + i)
    notes = ". ".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(14))
    return f"Notebook {rep}-{i}. The keeper's notes for this voyage: {notes}.\n"


def conversation(url: str, rep: int, i: int) -> list[tuple[int, float, int]]:
    """(turn, time to first token, tokens) per turn; each answer goes back into the next turn's prompt."""
    out = []
    history = preamble(rep, i)
    rng = random.Random(rep * 7 + i)
    with httpx.Client(timeout=900) as http:
        for t in range(1, TURNS + 1):
            history += f"User: what does the note say about the {rng.choice(WORDS)} and the {rng.choice(WORDS)}?\nKeeper:"
            first, times, text = stream(http, url, {"prompt": history, "max_tokens": 16, "temperature": 0})
            history += text + "\n"
            out.append((t, first, len(times)))
    return out


def multiturn(repeats: int) -> None:
    kinds = {"sentiric, cache_ram 0": ("sentiric", ["--cache-ram", "0"]),
             "sentiric, cache_ram 8192 (default)": ("sentiric", ["--cache-ram", "8192"]),
             "llama-server --cache-ram 8192 (default)": ("llama-server", ["--cache-ram", "8192"])}
    servers = {name: start(kind, SLOTS, CTX, extra) for name, (kind, extra) in kinds.items()}
    res: dict[str, list[dict]] = {name: [] for name in kinds}
    try:
        for rep in range(repeats):
            order = list(kinds) if rep % 2 == 0 else list(reversed(kinds))
            for name in order:
                url = servers[name][1]
                t0 = time.perf_counter()
                with cf.ThreadPoolExecutor(CONVS) as pool:
                    turns = [x for f in [pool.submit(conversation, url, rep * 10 + order.index(name), i)
                                         for i in range(CONVS)] for x in f.result()]
                wall = time.perf_counter() - t0
                back = [ft for t, ft, _ in turns if t > 1]
                r = {"ttft_p50": statistics.median(back), "ttft_p90": sorted(back)[int(0.9 * len(back))],
                     "tok_s": sum(n for _, _, n in turns) / wall, "wall": wall}
                res[name].append(r)
                print(name, rep, {k: round(v, 3) for k, v in r.items()}, flush=True)
    finally:
        stop(servers)
    peer = res["llama-server --cache-ram 8192 (default)"]
    rows = []
    for name, rs in res.items():
        ratio = [p["ttft_p50"] / r["ttft_p50"] for r, p in zip(rs, peer, strict=True)]
        tput = [r["tok_s"] / p["tok_s"] for r, p in zip(rs, peer, strict=True)]
        rows.append(f"| {name} | {spread([r['ttft_p50'] for r in rs])} s | {spread([r['ttft_p90'] for r in rs])} s | "
                    f"{spread([r['tok_s'] for r in rs], '{:,.1f}')} | **{statistics.median(ratio):.2f}** | "
                    f"**{statistics.median(tput):.2f}** |")
    md = "\n".join([
        "## Multi-turn chats: prompt caches in host RAM (`cache_ram`)", "",
        f"The bundled model; {CONVS} conversations of {TURNS} turns over {SLOTS} slots of {CTX} tokens, all users at "
        "once (each sends its next turn as soon as the answer is in: slots change hands between a user's turns). "
        "Each turn's prompt is the whole conversation so far (a 150-token notebook, then each question and the "
        "answer given, 16 tokens, greedy), streamed. Time to first token of the returning turns (2-6) and generated "
        f"tokens/s over the run; {repeats} runs, each a new set of conversations, servers taking turns: median "
        "(min-max). Ratios: llama-server's time to first token over this row's (above 1 = faster first tokens) "
        "and this row's tokens/s over llama-server's.", "",
        "| server | TTFT p50, turns 2-6 | TTFT p90 | tokens/s | TTFT ratio | tokens/s ratio |",
        "|---|---:|---:|---:|---:|---:|", *rows, ""])
    record("multiturn", md, res)


# ---- 2. drafting

PARAGRAPH = ("The lighthouse keeper climbed the one hundred and twelve stairs every evening at dusk, carrying a can of "
             "oil and a rag, and he polished the great lens until it shone like a second moon over the harbour. "
             "When the fog came in from the north he wound the clockwork of the horn and counted the seconds "
             "between its calls, nine and then nine again, until the ships answered from beyond the rocks.")
CASES = {
    "repeat the paragraph": f"Repeat the paragraph exactly.\n\nParagraph: {PARAGRAPH}\n\nRepeated paragraph:",
    "quote the evidence": (f"Document: {PARAGRAPH} The keeper's daughter kept the log of every ship that passed.\n\n"
                           "Question: what did the keeper do when the fog came in?\nQuote the sentence that answers "
                           "it.\nQuote: \"When the fog"),
    "free text": "Write a short story about a robot who learns to paint.\n\nStory:",
    "free text (list)": "Ten ideas for a rainy weekend:\n1.",
}


def drafting(repeats: int) -> None:
    servers = {k: start("sentiric", 1, 2048, ["--draft-tokens", str(k)]) for k in (0, 8)}
    res: dict = {}
    texts: dict = {}
    try:
        for rep in range(repeats):
            for case, prompt in CASES.items():
                for k in ((0, 8) if rep % 2 == 0 else (8, 0)):
                    # not streamed: a drafted step sends the tokens it kept as one chunk, so a stream's chunks
                    # are not its tokens
                    t0 = time.perf_counter()
                    r = httpx.post(f"{servers[k][1]}/v1/completions", json={"prompt": prompt, "max_tokens": 96,
                                                                            "temperature": 0}, timeout=600).json()
                    res.setdefault((case, k), []).append(r["usage"]["completion_tokens"] / (time.perf_counter() - t0))
                    texts.setdefault((case, k), set()).add(r["choices"][0]["text"])
        metrics = httpx.get(f"{servers[8][1]}/metrics").text
    finally:
        stop(servers)
    drafted = accepted = 0.0
    for line in metrics.splitlines():
        if line.startswith("sentiric_drafted_tokens_total"):
            drafted = float(line.split()[-1])
        if line.startswith("sentiric_accepted_tokens_total"):
            accepted = float(line.split()[-1])
    rows = []
    for case in CASES:
        off, on = res[(case, 0)], res[(case, 8)]
        ratio = [b / a for a, b in zip(off, on, strict=True)]
        same = texts[(case, 0)] == texts[(case, 8)] and len(texts[(case, 0)]) == 1
        rows.append(f"| {case} | {spread(off, '{:,.1f}')} | {spread(on, '{:,.1f}')} | **{statistics.median(ratio):.2f}** "
                    f"({min(ratio):.2f}-{max(ratio):.2f}) | {'yes' if same else 'no'} |")
    md = "\n".join([
        "## Prompt-lookup drafting (`draft_tokens`)", "",
        f"The bundled model, one client, 96 greedy tokens, {repeats} runs of each case, drafting off and on "
        "taking turns: generated tokens / request time (the prompt's read, ~20 ms, included), median (min-max). "
        "Drafting on: up to 8 tokens per step, as many as pay for the rows this machine's steps cost "
        f"(measured at start). Over all the drafted runs {accepted:.0f} of {drafted:.0f} drafted tokens were kept "
        f"({accepted / max(drafted, 1):.0%}).", "",
        "| answer | off tok/s | on tok/s | ratio | same text |", "|---|---:|---:|---:|---|", *rows, ""])
    record("drafting", md, {f"{c} {k}": v for (c, k), v in res.items()})


# ---- 3. reproducible greedy output

DET_PROMPTS = ["The history of the old lighthouse begins", "In the morning the baker opened", "A list of the rivers of "
               "Europe:", "Once upon a time, in a small village by the sea,", "The recipe calls for three eggs and",
               "Dear committee members, I am writing to", "The first law of thermodynamics states that",
               "My favourite places in the city are"]


def determinism(repeats: int) -> None:
    configs = {"default": [], "pad_steps off": ["LLM_LLAMA_SERVICE_PAD_STEPS=false"],
               "pad_steps off, cache_ram 0, cpu_threads fixed": ["LLM_LLAMA_SERVICE_PAD_STEPS=false",
                                                                 "LLM_LLAMA_SERVICE_CACHE_RAM=0",
                                                                 f"LLM_LLAMA_SERVICE_CPU_THREADS={os.cpu_count()}"],
               "deterministic": ["LLM_LLAMA_SERVICE_DETERMINISTIC=true"]}
    rows = []
    data = {}
    for name, env in configs.items():
        old = dict(os.environ)
        os.environ.update(dict(e.split("=", 1) for e in env))
        try:
            servers = {"s": start("sentiric", 4, 512)}
        finally:
            os.environ.clear()
            os.environ.update(old)
        answers: dict[int, set] = {i: set() for i in range(len(DET_PROMPTS))}
        alone: set = set()
        rates: list[float] = []
        solo: list[float] = []
        try:
            url = servers["s"][1]
            for _ in range(max(4, repeats)):
                t0 = time.perf_counter()

                def ask(i: int, url: str = url) -> tuple[int, str, int]:
                    with httpx.Client(timeout=600) as http:
                        time.sleep(random.random() * 0.05)  # arrival order differs from run to run, as it does
                        r = http.post(f"{url}/v1/completions", json={"prompt": DET_PROMPTS[i], "max_tokens": 48,
                                                                     "temperature": 0})
                        return i, r.json()["choices"][0]["text"], r.json()["usage"]["completion_tokens"]

                with cf.ThreadPoolExecutor(len(DET_PROMPTS)) as pool:
                    got = list(pool.map(ask, range(len(DET_PROMPTS))))
                rates.append(sum(n for _, _, n in got) / (time.perf_counter() - t0))
                for i, text, _ in got:
                    answers[i].add(text)
                t0 = time.perf_counter()
                r = httpx.post(f"{url}/v1/completions", json={"prompt": DET_PROMPTS[0], "max_tokens": 48,
                                                               "temperature": 0}, timeout=600).json()
                solo.append(r["usage"]["completion_tokens"] / (time.perf_counter() - t0))
                alone.add(r["choices"][0]["text"])
        finally:
            stop(servers)
        varied = sum(len(v) > 1 for v in answers.values())
        alone_ok = len(alone) == 1 and alone == answers[0]
        data[name] = {"varied": varied, "alone_same": alone_ok, "tok_s": rates, "alone_tok_s": solo}
        rows.append(f"| {name} | {varied} of {len(DET_PROMPTS)} | {'yes' if alone_ok else 'no'} | "
                    f"{spread(rates, '{:,.1f}')} | {spread(solo, '{:,.1f}')} |")
        print(rows[-1], flush=True)
    cost = {k: 1 - statistics.median(data["deterministic"][k]) / statistics.median(data["default"][k])
            for k in ("tok_s", "alone_tok_s")}
    md = "\n".join([
        "## Reproducible greedy output (`deterministic`)", "",
        f"The bundled model, 4 slots; {len(DET_PROMPTS)} greedy requests of 48 tokens at once (arriving in a random "
        f"order within 50 ms), {max(4, repeats)} times against one server, and the first prompt alone after each "
        "round. Prompts that got more than one answer over the rounds; whether the first prompt alone always got "
        "its answer under load; tokens/s of the rounds and of the request alone, median (min-max). "
        f"`deterministic` costs {cost['tok_s']:.0%} of the default's tokens/s under this load and "
        f"{cost['alone_tok_s']:.0%} for a request alone (its steps still have a row per slot).", "",
        "| configuration | prompts with several answers | alone = under load | tokens/s, 8 at once | tokens/s, alone |",
        "|---|---:|---|---:|---:|",
        *rows, ""])
    record("determinism", md, data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("multiturn", "drafting", "determinism"))
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if a.only in (None, "multiturn"):
        subprocess.run([str(ROOT / "bench" / "build_llama_server.sh")], check=True)
        multiturn(a.repeats)
    if a.only in (None, "drafting"):
        drafting(max(a.repeats, 3))
    if a.only in (None, "determinism"):
        determinism(a.repeats)


if __name__ == "__main__":
    main()
