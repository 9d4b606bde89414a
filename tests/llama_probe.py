"""Ask the real llama.cpp (llama-cpp-python 0.3.36, CPU) what it allocates, for accuracy checks.

Loads a model once, creates contexts with the planned settings and reads llama.cpp's own buffer
reports from its log: model buffer, KV buffers (one line per cache), compute buffer (the 4-decimal
debug line logged when the context is freed). The CPU repack buffer (extra copies of some weights
in an interleaved layout) is switched off so the model buffer is the file's tensor data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llama_cpp import llama_cpp as C

from sentiric_cli.engine.llamalog import tap_log
from sentiric_cli.plan.memory import Shape

MiB = 1024 * 1024
_TYPES = {"f32": C.GGML_TYPE_F32, "f16": C.GGML_TYPE_F16, "q8_0": C.GGML_TYPE_Q8_0, "q4_0": C.GGML_TYPE_Q4_0}
_log: list[str] = []
tap_log(_log)  # llama.cpp has one log callback, owned by sentiric_cli.engine.bindings


@dataclass
class Measured:
    model_buffer_mib: float  # CPU_Mapped (mmap) or CPU model buffer, as logged (2 decimals)
    model_size: int  # llama_model_size(): sum of tensor bytes, exact
    kv_mib: list[float]  # one KV (or RS) buffer per cache, as logged (2 decimals)
    compute_mib: float  # 4 decimals


class Probe:
    def __init__(self, path: str, use_mmap: bool = True, embeddings: bool = False) -> None:
        """`embeddings`: contexts as llama-server --embeddings makes them (an encoder's pooled output)."""
        self.embeddings = embeddings
        _log.clear()
        mp = C.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.use_mmap = use_mmap
        mp.use_extra_bufts = False
        self.model = C.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}:\n{''.join(_log[-5:])}")
        text = "".join(_log)
        hits = re.findall(r"CPU(?:_Mapped)? model buffer size =\s+([\d.]+) MiB", text)
        self.model_buffer_mib = sum(float(x) for x in hits)
        self.model_size = C.llama_model_size(self.model)

    def measure(self, shape: Shape) -> Measured:
        cp = C.llama_context_default_params()
        cp.n_ctx = shape.context * shape.threads  # llama.cpp pads it, as the plan does
        cp.n_seq_max = shape.threads
        cp.n_batch = shape.batch
        cp.n_ubatch = shape.ubatch
        cp.flash_attn_type = 1 if shape.flash_attn else 0
        cp.swa_full = shape.swa_full
        cp.kv_unified = shape.kv_unified
        cp.type_k = _TYPES[shape.cache_type_k]
        cp.type_v = _TYPES[shape.cache_type_v]
        cp.n_threads = cp.n_threads_batch = 1
        cp.embeddings = self.embeddings
        _log.clear()
        ctx = C.llama_init_from_model(self.model, cp)
        if not ctx:
            raise RuntimeError("llama.cpp refused the context:\n" + "".join(_log[-5:]))
        C.llama_free(ctx)
        text = "".join(_log)
        kv = [float(x) for x in re.findall(r"(?:KV|RS) buffer size =\s+([\d.]+) MiB", text)]
        fine = re.findall(r"CPU compute buffer size is\s+([\d.]+) MiB", text)
        coarse = re.findall(r"CPU compute buffer size =\s+([\d.]+) MiB", text)
        return Measured(self.model_buffer_mib, self.model_size, kv, float((fine or coarse)[0]))

    def close(self) -> None:
        if self.model:
            C.llama_model_free(self.model)
            self.model = None
