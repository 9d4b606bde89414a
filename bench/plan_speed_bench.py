"""`make bench`: the plan's speed estimate against llama.cpp's own speed on this CPU, start-up time, remote headers,
host-RAM verdicts (issue 27).

Run: .venv/bin/python bench/plan_speed_bench.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import llama_cpp
from cuda_logs import QWEN3_30B_A3B, write_header
from plan_bench import write_llama70b_header
from rangeserver import RangeServer, sparse_copy
from report import record
from seed_model import write_gemma3_4b_header
from synth import write_model

from sentiric_cli.bundled import bundled_model
from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.remote import Traffic, read_remote_model
from sentiric_cli.plan.device import host_memory
from sentiric_cli.plan.layout import CPU
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.plan.speed import bandwidths, cpu_peak_flops
from sentiric_cli.settings import Settings

REPEATS = 3
PROMPT, GEN, CTX = 128, 64, 512


def llama_speed(path: Path) -> tuple[float, float]:
    """llama.cpp's own (prompt, decode) tokens/s: its perf counters over one 128-token prompt and 64 tokens."""
    llm = llama_cpp.Llama(str(path), n_ctx=CTX, n_threads=os.cpu_count(), n_batch=PROMPT, verbose=False)
    tokens = [(7 * i + 11) % (llm.n_vocab() - 10) + 5 for i in range(PROMPT)]
    llama_cpp.llama_perf_context_reset(llm.ctx)
    llm.reset()
    llm.eval(tokens)
    for _ in range(GEN):
        llm.eval([llm.sample(temp=0.0)])
    perf = llama_cpp.llama_perf_context(llm.ctx)
    prompt = perf.n_p_eval / (perf.t_p_eval_ms / 1000) if perf.t_p_eval_ms else 0.0
    decode = perf.n_eval / (perf.t_eval_ms / 1000) if perf.t_eval_ms else 0.0
    llm.close()
    return prompt, decode


def predicted(path: Path, bw, peak: float | None) -> tuple[float, float | None]:
    h = read_header(path)
    host = host_memory()
    s = Settings(context_size=CTX, threads=1)
    p = make_plan(h, model_info(h), host, s, {"context_size", "threads"}, bw=bw, peaks={CPU: peak} if peak else {})
    return p.speed.decode_tps, p.speed.prompt_tps_bound


def speed_rows(tmp: Path) -> tuple[list[str], list[dict]]:
    models = [("gemma-3-270m Q4_K_M (bundled)", bundled_model()),
              ("synthetic llama 1024 wide, 8 layers, f16", write_model(tmp / "llama-1024.gguf", "llama", n_layer=8,
               n_embd=1024, n_head=16, n_head_kv=4, n_ff=4096, n_vocab=8192)),
              ("synthetic llama 2048 wide, 8 layers, f16", write_model(tmp / "llama-2048.gguf", "llama", n_layer=8,
               n_embd=2048, n_head=16, n_head_kv=4, n_ff=8192, n_vocab=8192))]
    bw = bandwidths((host_memory(),), {})
    peak, peak_how = cpu_peak_flops()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in models}
    for _ in range(REPEATS):  # interleaved: each round runs every model once
        for name, path in models:
            runs[name].append(llama_speed(path))
    lines = [f"Host RAM copy bandwidth {bw.by_device[CPU] / 1e9:.1f} GB/s ({bw.sources[CPU]}); CPU peak {peak_how}. "
             f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, {os.cpu_count()} threads) measured by its own perf "
             f"counters over a {PROMPT}-token prompt and {GEN} greedy tokens at context {CTX}, {REPEATS} interleaved "
             "runs: median (min-max). The plan's decode figure is a bandwidth bound at a full context; its prompt "
             "figure an upper bound.", "",
             "| model | plan decode tok/s | llama.cpp decode tok/s | measured / planned | plan prompt bound | "
             "llama.cpp prompt tok/s | under the bound |", "|---|---:|---:|---:|---:|---:|---|"]
    data = []
    for name, path in models:
        want, bound = predicted(path, bw, peak)
        dec = [d for _, d in runs[name]]
        pro = [p for p, _ in runs[name]]
        md, mp = statistics.median(dec), statistics.median(pro)
        lines.append(f"| {name} | {want:,.1f} | {md:,.1f} ({min(dec):,.1f}-{max(dec):,.1f}) | {md / want:.2f} | "
                     f"{bound or 0:,.0f} | {mp:,.0f} ({min(pro):,.0f}-{max(pro):,.0f}) | "
                     f"{'yes' if bound and max(pro) <= bound else 'NO'} |")
        data.append({"model": name, "planned_decode": want, "decode": dec, "prompt_bound": bound, "prompt": pro})
    return lines, data


def startup_rows(tmp: Path) -> tuple[list[str], dict]:
    big = write_llama70b_header(tmp / "llama-70b.gguf")
    cmd = [str(ROOT / ".venv/bin/sentiric"), "plan", str(big), "--vram", "48GiB"]
    subprocess.run(cmd, capture_output=True)  # the host bandwidth measured once and cached
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return ([f"| `sentiric plan` on llama-3-70B shapes (header only, 128k vocabulary), wall, 10 runs | "
             f"{med * 1000:.0f} ms | {min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms |"], {"startup_s": times})


def remote_rows(tmp: Path) -> tuple[list[str], dict]:
    srv = tmp / "srv"
    srv.mkdir()
    files = {"gemma-3-4b-it Q4_K_M (262k vocabulary)": write_gemma3_4b_header(tmp / "g.gguf"),
             "Qwen3-30B-A3B Q4_K_M shapes (152k vocabulary)": write_header(tmp / "q.gguf", QWEN3_30B_A3B)}
    lines, data = [], {}
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    with RangeServer(srv) as s:
        for name, header in files.items():
            big = sparse_copy(header, srv / header.name)
            for label in ("first read", "cached"):
                before = s.sent
                traffic = Traffic()
                t0 = time.perf_counter()
                read_remote_model(f"{s.url}/files/{big.name}", traffic=traffic)
                took = time.perf_counter() - t0
                sent = s.sent - before
                size = big.stat().st_size
                lines.append(f"| {name}, {label} | {size / 2**30:.2f} GiB | {traffic.requests} | {sent / 2**20:.2f} MiB "
                             f"({sent / size:.3%}) | {took * 1000:.0f} ms |")
                data[f"{name} {label}"] = {"size": size, "requests": traffic.requests, "sent": sent, "s": took}
    return lines, data


def host_rows(tmp: Path) -> list[str]:
    path = write_header(tmp / "qwen3-30b-a3b.gguf", QWEN3_30B_A3B)
    lines = []
    for label, args in (("--cpu-moe, 2 x 24 GiB GPUs, 16 GiB RAM", ["--cpu-moe", "--ram", "16GiB"]),
                        ("--cpu-moe, 2 x 24 GiB GPUs, 64 GiB RAM", ["--cpu-moe", "--ram", "64GiB"]),
                        ("-ngl 24, 2 x 24 GiB GPUs, 16 GiB RAM", ["-ngl", "24", "--ram", "16GiB"]),
                        ("-ngl 24 --no-mmap, 2 x 24 GiB GPUs, 8 GiB RAM", ["-ngl", "24", "--no-mmap", "--ram", "8GiB"])):
        r = subprocess.run([str(ROOT / ".venv/bin/sentiric"), "plan", str(path), "--vram", "24GiB,24GiB", "--json", *args],
                           capture_output=True, text=True)
        import json

        doc = json.loads(r.stdout)
        h = doc["memory"]["host"]
        gpu = ", ".join(u["verdict"] for u in doc["memory"]["devices"])
        lines.append(f"| {label} | {h['weights_bytes'] / 2**30:.2f} GiB | {h['total_bytes'] / 2**30:.2f} GiB | {gpu} | "
                     f"{h['verdict']} | {r.returncode} |")
    return lines


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sentiric-bench27-"))
    speed, speed_data = speed_rows(tmp)
    start, start_data = startup_rows(tmp)
    remote, remote_data = remote_rows(tmp)
    host = host_rows(tmp)
    md = ["### Decode and prompt speed: the plan against llama.cpp on this CPU", "", *speed, "",
          "### Start-up", "", "| what | median | spread |", "|---|---:|---:|", *start, "",
          "### Remote headers over HTTP range requests (loopback server, sparse files as large as the weights)", "",
          "| file | size | requests | bytes served | time |", "|---|---:|---:|---:|---:|", *remote, "",
          "### Host RAM in GPU plans (Qwen3-30B-A3B Q4_K_M shapes, `--vram 24GiB,24GiB`)", "",
          "| case | host weights | host total | GPU verdicts | host verdict | exit |", "|---|---:|---:|---|---|---:|",
          *host]
    record("plan_speed", "\n".join(md), {"speed": speed_data, "startup": start_data, "remote": remote_data},
           title="Plan: speed estimate, start-up, remote headers, host RAM")


if __name__ == "__main__":
    main()
