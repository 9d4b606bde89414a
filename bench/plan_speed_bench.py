"""`make bench`: the plan's speed estimate against llama.cpp's own speed on this CPU, start-up time, remote headers,
host-RAM verdicts (issue 27).

Run: .venv/bin/python bench/plan_speed_bench.py
"""

from __future__ import annotations

import os
import shutil
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
from plan_bench import write_llama70b_header, write_llama_header
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
    """Wall time of the whole command, 10 runs each way, interleaved: with sentiric's bytecode compiled (as pip
    installs a package) and without (PYTHONDONTWRITEBYTECODE=1, as this sandbox sets it: every start compiles
    sentiric's own modules again)."""
    big = write_llama70b_header(tmp / "llama-70b.gguf")
    cmd = [str(ROOT / ".venv/bin/sentiric"), "plan", str(big), "--vram", "48GiB"]
    compiled = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    source = {**compiled, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(cmd, capture_output=True, env=compiled)  # writes the bytecode; the host bandwidth is cached
    times: dict[str, list[float]] = {"compiled": [], "source": []}
    for _ in range(10):
        for name, env in (("compiled", compiled), ("source", source)):
            if name == "source":  # sentiric's own bytecode gone, as where nothing was ever written
                for cache in (ROOT / "sentiric_cli").rglob("__pycache__"):
                    shutil.rmtree(cache)
            else:  # compiled beforehand, untimed, as pip does at install
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "sentiric_cli")], check=True,
                               env=compiled)
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=False, env=env)
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name, label in (("compiled", "bytecode compiled (as installed)"),
                        ("source", "PYTHONDONTWRITEBYTECODE=1 (modules compiled at every start)")):
        ts = times[name]
        rows.append(f"| `sentiric plan` on llama-3-70B shapes (header only, 128k vocabulary), {label}, wall, 10 runs | "
                    f"{statistics.median(ts) * 1000:.0f} ms | {min(ts) * 1000:.0f}-{max(ts) * 1000:.0f} ms |")
    return rows, {"startup_s": times}


def remote_rows(tmp: Path) -> tuple[list[str], dict]:
    srv = tmp / "srv"
    srv.mkdir()
    files = {"gemma-3-4b-it Q4_K_M (262k vocabulary)": write_gemma3_4b_header(tmp / "g.gguf"),
             "Qwen3-30B-A3B Q4_K_M shapes (152k vocabulary)": write_header(tmp / "q.gguf", QWEN3_30B_A3B)}
    lines, data = [], {}
    os.environ["SENTIRIC_CACHE_DIR"] = str(tmp / "cache")
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


ENCODERS = (  # real models' shapes, random f16 weights
    ("bge-small-en-v1.5 shapes (bert, 384 wide, 12 layers)", "bert", dict(n_layer=12, n_embd=384, n_head=12,
     n_ff=1536, n_vocab=30522, n_ctx_train=512)),
    ("nomic-embed-text-v1.5 shapes (nomic-bert, 768 wide, 12 layers)", "nomic-bert", dict(n_layer=12, n_embd=768,
     n_head=12, n_ff=3072, n_vocab=30522, n_ctx_train=2048)),
    ("bge-reranker-base shapes (bert, rank pooling, 768 wide)", "bert", dict(n_layer=12, n_embd=768, n_head=12,
     n_ff=3072, n_vocab=30522, n_ctx_train=512, pooling=4, n_cls_out=1)),
)


def encoder_rows(tmp: Path) -> tuple[list[str], list[dict]]:
    """The plan of an embedding encoder against what llama.cpp allocates for it (llama-server --embeddings)."""
    from llama_probe import Probe
    from synth_bert import write_bert

    from sentiric_cli.plan.memory import Shape, compute_buffer, kv_cache

    lines, data = [], []
    for name, arch, kw in ENCODERS:
        path = write_bert(tmp / f"{arch}-{kw['n_embd']}.gguf", arch, **kw)
        info = model_info(read_header(path))
        probe = Probe(str(path), embeddings=True)
        try:
            for fa in (False, True):
                c = info.n_ctx_train
                shape = Shape(context=c, threads=1, ubatch=c, batch=c, flash_attn=fa)
                got = probe.measure(shape)
                planned = compute_buffer(info, shape, kv_cache(info, shape)).bytes / 2**20
                generative = _as_generative(path, shape)
                lines.append(f"| {name} | {c} | {'on' if fa else 'off'} | {got.model_size / 2**20:,.1f} | "
                             f"{planned:,.2f} | {got.compute_mib:,.2f} | {planned / got.compute_mib - 1:+.2%} | "
                             f"{' + '.join(f'{x:.2f}' for x in got.kv_mib) or '0'} | {generative / 2**20:,.1f} |")
                data.append({"model": name, "fa": fa, "planned": planned, "measured": got.compute_mib,
                             "kv": got.kv_mib, "as_generative": generative})
        finally:
            probe.close()
    return lines, data


def _as_generative(path: Path, shape) -> int:
    """What the plan would say treating the encoder as a decoder with a KV cache (its arch unknown): the error
    estimators make (gpustack/gguf-parser-go#2)."""
    from dataclasses import replace as dc_replace

    from sentiric_cli.plan.memory import compute_buffer, kv_cache

    info = dc_replace(model_info(read_header(path)), no_cache=False, gated_ffn=False, pooling="")
    kv = kv_cache(info, shape)
    return kv.bytes + compute_buffer(info, shape, kv).bytes


# llama-bench tg128 figures published with the GPU and the model's size (llama 7B: 32 layers, 4096 wide, 32 heads,
# n_ff 11008, 32000 tokens); both cards 21 Gbps x 384 bit = 1008 GB/s (what NVML's clock x bus width gives)
PUBLISHED = (
    ("RTX 4090", "F16", 61.03, "ggml-org/llama.cpp#4766 (2024-01-10)"),
    ("RTX 4090", "Q8_0", 98.13, "ggml-org/llama.cpp#4766 (2024-01-10)"),
    ("RTX 3090 Ti", "Q4_0", 127.43, "ggml-org/llama.cpp#4812 (2024-01-07, build 32d9f7d9)"),
)


def write_llama7b(path: Path, qtype_name: str) -> Path:
    import gguf

    q = gguf.GGMLQuantizationType
    # llama.cpp's Q4_0 files keep the output matrix in Q6_K (that is how the published 3.56 GiB adds up)
    return write_llama_header(path, n_layer=32, n_embd=4096, n_head=32, n_head_kv=32, n_ff=11008, n_vocab=32000,
                              n_ctx=4096, qtype=q[qtype_name], output_qtype=q.Q6_K if qtype_name == "Q4_0" else None)


def published_rows(tmp: Path) -> tuple[list[str], list[dict]]:
    from sentiric_cli.plan.device import Device
    from sentiric_cli.plan.speed import Bandwidths

    lines, data = [], []
    for gpu, qtype, tps, source in PUBLISHED:
        h = read_header(write_llama7b(tmp / f"llama7b-{qtype}.gguf", qtype))
        dev = Device("vram", gpu, 24 * 2**30, 24 * 2**30)
        bw = Bandwidths({0: 1008e9, CPU: 50e9}, {0: "1008 GB/s", CPU: "50 GB/s"})
        s = Settings(context_size=256, threads=1)  # llama-bench tg128: a 128-token cache
        p = make_plan(h, model_info(h), dev, s, {"context_size", "threads"}, bw=bw)
        size = sum(t.n_bytes for t in h.tensors) / 2**30
        lines.append(f"| {gpu} | llama 7B {qtype} ({size:.2f} GiB) | {p.speed.decode_tps:,.1f} | {tps:,.2f} | "
                     f"{tps / p.speed.decode_tps:.2f} | {source} |")
        data.append({"gpu": gpu, "model": qtype, "planned": p.speed.decode_tps, "published": tps})
    return lines, data


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sentiric-bench27-"))
    speed, speed_data = speed_rows(tmp)
    start, start_data = startup_rows(tmp)
    remote, remote_data = remote_rows(tmp)
    host = host_rows(tmp)
    enc, enc_data = encoder_rows(tmp)
    pub, pub_data = published_rows(tmp)
    md = ["### Decode and prompt speed: the plan against llama.cpp on this CPU", "", *speed, "",
          "### Decode speed: the plan against published GPU figures (llama-bench tg128, full offload)", "",
          "| GPU | model | plan decode tok/s | published tok/s | published / planned | source |",
          "|---|---|---:|---:|---:|---|", *pub, "",
          "### Start-up", "", "| what | median | spread |", "|---|---:|---:|", *start, "",
          "### Remote headers over HTTP range requests (loopback server, sparse files as large as the weights)", "",
          "| file | size | requests | bytes served | time |", "|---|---:|---:|---:|---:|", *remote, "",
          "### Host RAM in GPU plans (Qwen3-30B-A3B Q4_K_M shapes, `--vram 24GiB,24GiB`)", "",
          "| case | host weights | host total | GPU verdicts | host verdict | exit |", "|---|---:|---:|---|---|---:|",
          *host, "",
          "### Embedding and reranker encoders: the plan against llama.cpp (CPU, `embeddings` on, ubatch = context)",
          "", "| model | context | flash attention | weights MiB | compute planned MiB | llama.cpp MiB | error | "
          "llama.cpp KV MiB | KV + compute if planned as a decoder, MiB |",
          "|---|---:|---|---:|---:|---:|---:|---:|---:|", *enc]
    record("plan_speed", "\n".join(md), {"speed": speed_data, "startup": start_data, "remote": remote_data,
                                          "encoders": enc_data, "published": pub_data},
           title="Plan: speed estimate, start-up, remote headers, host RAM")


if __name__ == "__main__":
    main()
