"""Published llama.cpp CUDA logs (buffer lines) and header-only GGUFs with those models' shapes.

Each record keeps its source, the settings the log shows and the buffer sizes it printed. The model
shapes are the published configs of the named models; where a log does not name its model, the
record says how the shape was identified. tests/test_cuda_logs.py plans each one on `--vram`
devices with the free memory the log reports (or 24 GiB) and compares: KV exact (per GPU where the
log splits it), every GPU's compute buffer and the host's (CUDA_Host) within 3%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

F16, Q4K, Q6K = gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K


@dataclass(frozen=True)
class Shape:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int = 32768
    freq_base: float = 1e6
    qk_norm: bool = False  # qwen3: attn_q_norm / attn_k_norm per layer
    n_expert: int = 0  # MoE: experts, used per token, and each expert's feed-forward width
    n_expert_used: int = 0
    n_ff_exp: int = 0


@dataclass(frozen=True)
class Log:
    name: str
    source: str  # where the log was published
    date: str
    shape: Shape
    identified: str  # how the model's shape is known
    n_ctx: int
    n_seq: int
    ubatch: int
    flash_attn: bool
    kv_mib: float  # "KV buffer size" / "KV self size": the whole cache, wherever it lives
    device_compute_mib: tuple[float, ...]  # "CUDAn compute buffer size", one per GPU
    host_compute_mib: float | None  # "CUDA_Host compute buffer size" (None: not in the published excerpt)
    gpu_layers: int | None = None  # -ngl as the log shows it ("offloaded k/n layers"); None: all
    free_mib: tuple[int, ...] = (24 * 1024,)  # per GPU, as "using device CUDAn ... - N MiB free" says
    device_kv_mib: tuple[float, ...] = ()  # "CUDAn KV buffer size" where the cache is split over GPUs
    overrides: tuple[str, ...] = ()  # -ot PATTERN=BUFFER as given
    output_on_cpu: bool = False  # an older build: -ngl N put N repeating layers first, the output layer last


MISTRAL_7B_V02 = Shape("llama", 32, 4096, 32, 8, 128, 14336, 32000)
MISTRAL_7B_V01 = Shape("llama", 32, 4096, 32, 8, 128, 14336, 32000, freq_base=1e4)
QWEN25_3B = Shape("qwen2", 36, 2048, 16, 2, 128, 11008, 151936)
QWEN3_06B = Shape("qwen3", 28, 1024, 16, 8, 128, 3072, 151936, 40960, qk_norm=True)
QWEN3_30B_A3B = Shape("qwen3moe", 48, 2048, 32, 4, 128, 6144, 151936, 40960, qk_norm=True, n_expert=128,
                      n_expert_used=8, n_ff_exp=768)

LOGS = (
    Log("mistral-7b-v0.2 c2048", "https://github.com/fedora-copr/logdetective/pull/106", "2025-01-13",
        MISTRAL_7B_V02, "logdetective's default model (Mistral-7B-Instruct-v0.2 GGUF); freq_base 1e6, "
        "KV 256 MiB at 2048 and the 0.12 MiB output buffer (32000 x 4 bytes) agree",
        2048, 1, 512, False, 256.00, (164.00,), 12.01),
    Log("mistral-7b-v0.2 c32768", "https://github.com/fedora-copr/logdetective/pull/106", "2025-01-13",
        MISTRAL_7B_V02, "same run at -c 32768", 32768, 1, 512, False, 4096.00, (2144.00,), 72.01),
    # partial offload: 20 of 32 repeating layers on the GPU (llama-cpp-python, an RTX 4060 Laptop GPU with
    # 7622 MiB free; the log printed in appendix B of Tel-Zur, "A GPU-Accelerated RAG-Based Telegram
    # Assistant ...", EduHPC25), KV split 60 / 36 MiB, flash attention; this build kept the output layer on the CPU
    # ("layer 32 assigned to device CPU"), so op offload copies the output weights to the GPU
    Log("mistral-7b-v0.1 ngl 20", "https://arxiv.org/abs/2509.11947",
        "2025-09 (the paper's appendix B; a llama-cpp-python build that logs kv_unified)",
        MISTRAL_7B_V01, "the log's own metadata: mistral-7b-instruct-v0.1 Q4_K_M, 32 layers, n_embd 4096, "
        "32/8 heads of 128, n_ff 14336, n_vocab 32000, freq_base 1e4", 768, 1, 256, True, 96.00, (137.79,), 4.76,
        gpu_layers=20, free_mib=(7622,), device_kv_mib=(60.00,), output_on_cpu=True),
    Log("qwen2.5-3b c4096", "https://github.com/SciSharp/LLamaSharp/issues/1099", "2025-02 (build 4701)",
        QWEN25_3B, "36 layers with n_embd_k_gqa 256 (2 KV heads x 128) and a 0.58 MiB output buffer "
        "(151936 x 4 bytes): Qwen2.5-3B's config", 4096, 1, 512, False, 144.00, (300.75,), 12.01),
    # gpu_layers 0 on a CUDA build (Jetson Orin, llama-server defaults; a blog post's log, "GPU运行日志分析",
    # 2025-05): every layer and the KV cache on
    # the CPU, yet a 423 MiB GPU compute buffer: op offload copies the output weights (q6_K) to the GPU
    # and computes the logits there
    Log("qwen3-0.6b ngl 0", "https://github.com/SunOfHomeBoy/blogSrc/blob/HEAD/source/_posts/"
        "%E5%B7%A5%E4%BD%9C%E5%AD%A6%E4%B9%A0%E6%97%A5%E8%AE%B0/25%E5%B9%B4/5%E6%9C%88/"
        "GPU%E8%BF%90%E8%A1%8C%E6%97%A5%E5%BF%97%E5%88%86%E6%9E%90.md",
        "2025-05 (build 5489, 2d38b6e4)", QWEN3_06B, "the log's own print_info and metadata: Qwen3 0.6B, "
        "Q4_K_M, 28 layers, n_embd 1024, 16/8 heads of 128, n_ff 3072, n_vocab 151936",
        4096, 1, 512, False, 448.00, (422.92,), 12.01, gpu_layers=0),
    # two GPUs (RTX 4090 with 9862 MiB free, RTX 5090 with 31518 MiB free), -ngl 99 and the experts kept
    # in RAM with -ot: layers split by free memory (12 + 36), no pipeline parallelism (tensor overrides)
    Log("qwen3-30b-a3b 2 GPUs -ot exps=CPU", "https://github.com/ikawrakow/ik_llama.cpp/issues/514",
        "2025-06-10 (build 5622, 97340b4c)", QWEN3_30B_A3B, "a mainline llama.cpp run the reporter posted in the "
        "thread (comment of 2025-06-10), with its own print_info and metadata: Qwen3-30B-A3B Q4_K_M (unsloth), "
        "48 layers, n_embd 2048, 32/4 heads of 128, 128 experts (8 used) of 768",
        16384, 1, 512, False, 1536.00, (1080.00, 1080.00), 36.01, gpu_layers=99, free_mib=(9862, 31518),
        device_kv_mib=(384.00, 1152.00), overrides=(r".ffn_.*_exps.=CPU",)),
)


def write_header(path: str | Path, s: Shape, byte_vocab: bool = False) -> Path:
    """A header-only GGUF (tensor infos, no data) with the shapes of `s`: Q4_K matrices, Q6_K for the
    output, V and down projections (as Q4_K_M files mostly have them). byte_vocab: synth.py's byte-level
    vocabulary, padded to n_vocab, so that any text tokenizes (a file to run, not only to plan)."""
    path = Path(path)
    w = gguf.GGUFWriter(str(path), s.arch)
    w.add_name(f"{s.arch} {s.n_layer}x{s.n_embd} (header only)")
    w.add_context_length(s.n_ctx_train)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head)
    w.add_value_length(s.head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(s.freq_base)
    if s.n_expert:
        w.add_expert_count(s.n_expert)
        w.add_expert_used_count(s.n_expert_used)
        w.add_expert_feed_forward_length(s.n_ff_exp)
    if byte_vocab:
        from synth import _add_kv, _vocab

        for key, value in _vocab(s.n_vocab).items():
            _add_kv(w, key, value)
    else:
        w.add_tokenizer_model("llama")
        w.add_token_list([f"t{i}" for i in range(s.n_vocab)])

    def t(name: str, shape: tuple[int, ...], qtype) -> None:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n = int(np.prod(shape))
        w.add_tensor_info(name, shape, np.dtype(np.float32), n // block * size, raw_dtype=qtype)

    f32 = gguf.GGMLQuantizationType.F32
    t("token_embd.weight", (s.n_vocab, s.n_embd), Q4K)
    t("output_norm.weight", (s.n_embd,), f32)
    t("output.weight", (s.n_vocab, s.n_embd), Q6K)
    for i in range(s.n_layer):
        p = f"blk.{i}."
        t(p + "attn_norm.weight", (s.n_embd,), f32)
        t(p + "ffn_norm.weight", (s.n_embd,), f32)
        if s.qk_norm:
            t(p + "attn_q_norm.weight", (s.head,), f32)
            t(p + "attn_k_norm.weight", (s.head,), f32)
        t(p + "attn_q.weight", (s.n_head * s.head, s.n_embd), Q4K)
        t(p + "attn_k.weight", (s.n_head_kv * s.head, s.n_embd), Q4K)
        t(p + "attn_v.weight", (s.n_head_kv * s.head, s.n_embd), Q6K)
        t(p + "attn_output.weight", (s.n_embd, s.n_head * s.head), Q4K)
        if s.n_expert:
            t(p + "ffn_gate_inp.weight", (s.n_expert, s.n_embd), f32)
            t(p + "ffn_gate_exps.weight", (s.n_expert, s.n_ff_exp, s.n_embd), Q4K)
            t(p + "ffn_up_exps.weight", (s.n_expert, s.n_ff_exp, s.n_embd), Q4K)
            t(p + "ffn_down_exps.weight", (s.n_expert, s.n_embd, s.n_ff_exp), Q6K)
        else:
            t(p + "ffn_gate.weight", (s.n_ff, s.n_embd), Q4K)
            t(p + "ffn_up.weight", (s.n_ff, s.n_embd), Q4K)
            t(p + "ffn_down.weight", (s.n_embd, s.n_ff), Q6K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def plan_log(log: Log, path: str | Path):
    """The plan's breakdown for a log's settings, on `--vram` GPUs with the free memory it reports."""
    from sentiric_cli.gguf.modelinfo import model_info
    from sentiric_cli.gguf.shards import read_model
    from sentiric_cli.plan.device import Device
    from sentiric_cli.plan.memory import MiB, Shape
    from sentiric_cli.plan.usage import breakdown

    header = read_model(path)
    info = model_info(header)
    gpus = tuple(Device("vram", f"GPU {i} ({m} MiB free)", m * MiB, m * MiB) for i, m in enumerate(log.free_mib))
    ngl = info.n_layer + 1 if log.gpu_layers is None else log.gpu_layers
    shape = Shape(context=log.n_ctx // log.n_seq, threads=log.n_seq, ubatch=log.ubatch, batch=max(512, log.ubatch),
                  flash_attn=log.flash_attn, gpu_layers=ngl, overrides=log.overrides)
    where = None
    if log.output_on_cpu:
        where = [-1] * (info.n_layer - ngl) + [0] * ngl + [-1]
    return breakdown(header, info, gpus, shape, where=where)


def settings_text(log: Log) -> str:
    ngl = "all" if log.gpu_layers is None else str(log.gpu_layers)
    ot = "".join(f" -ot {o}" for o in log.overrides)
    gpus = f" on {len(log.free_mib)} GPUs" if len(log.free_mib) > 1 else ""
    return f"-c {log.n_ctx} -ub {log.ubatch} -ngl {ngl} fa {'on' if log.flash_attn else 'off'}{ot}{gpus}"
