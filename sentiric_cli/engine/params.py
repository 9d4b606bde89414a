"""What llama.cpp is asked for: llama_model_params and llama_context_params built from the settings, once for the
engine and for the planner's dry run (plan/measure.py), so the two never differ; tensor overrides by buffer name."""

from __future__ import annotations

import ctypes

from llama_cpp import llama_cpp as C

from sentiric_cli.engine.compute_threads import ggml_lib_dir
from sentiric_cli.engine.llamalog import init_backend
from sentiric_cli.errors import SentiricError
from sentiric_cli.settings import Settings

_TYPES = {"f32": C.GGML_TYPE_F32, "f16": C.GGML_TYPE_F16, "bf16": 30, "q8_0": C.GGML_TYPE_Q8_0,
          "q5_1": 7, "q5_0": 6, "q4_1": 3, "q4_0": C.GGML_TYPE_Q4_0, "iq4_nl": 20}


class _BuftOverride(ctypes.Structure):  # struct llama_model_tensor_buft_override (the bindings leave it untyped)
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def buffer_types() -> dict[str, int]:
    """Buffer type name -> handle for every device this llama.cpp build has ("CPU", "CUDA0" ...), as
    llama.cpp's --override-tensor looks them up."""
    base = ctypes.CDLL(str(ggml_lib_dir() / "libggml-base.so"))
    reg = ctypes.CDLL(str(ggml_lib_dir() / "libggml.so"))
    reg.ggml_backend_dev_count.restype = ctypes.c_size_t
    reg.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    reg.ggml_backend_dev_get.restype = ctypes.c_void_p
    base.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    out = {}
    for i in range(reg.ggml_backend_dev_count()):
        buft = base.ggml_backend_dev_buffer_type(reg.ggml_backend_dev_get(i))
        if buft:
            out[base.ggml_backend_buft_name(buft).decode()] = buft
    return out


def tensor_overrides(entries: list[str]):
    """A NULL-terminated llama_model_tensor_buft_override array for PATTERN=BUFFER entries (kept alive by
    the caller until the model is loaded), or None."""
    if not entries:
        return None
    types = buffer_types()
    arr = (_BuftOverride * (len(entries) + 1))()
    for i, entry in enumerate(entries):
        pattern, _, name = entry.partition("=")
        if name not in types:
            raise SentiricError(f"tensor override {entry!r}: this llama.cpp has no buffer type {name!r}",
                                "available: " + ", ".join(sorted(types)))
        arr[i].pattern, arr[i].buft = pattern.encode(), types[name]
    return arr


def model_params(settings: Settings, extra_bufts: bool = False, no_alloc: bool = False, vocab_only: bool = False):
    """llama_model_params for the settings, and what must stay alive until the model is loaded (llama.cpp keeps
    pointers to the tensor split and the overrides). extra_bufts: the CPU's repacked/AMX weight buffers (a CPU-path
    choice: cpupath.py). vocab_only: no weights. no_alloc: place the tensors, allocate nothing (the planner's dry run)."""
    init_backend()
    mp = C.llama_model_default_params()
    mp.n_gpu_layers = 10**6 if settings.gpu_layers < 0 else settings.gpu_layers
    mp.use_mmap = settings.use_mmap
    mp.use_extra_bufts = extra_bufts
    mp.main_gpu = settings.main_gpu
    if vocab_only:  # the tokenizer and metadata only: what `run --backend` needs to cut a document
        mp.vocab_only = True
        mp.n_gpu_layers = 0
    if no_alloc:
        mp.no_alloc = True
        mp.load_mode = C.LLAMA_LOAD_MODE_NONE
    keep: list = []
    if settings.tensor_split:
        n = C.llama_max_devices()
        if len(settings.tensor_split) > n:
            raise SentiricError(f"tensor_split has {len(settings.tensor_split)} entries; this llama.cpp takes at most {n}")
        split = (ctypes.c_float * n)(*settings.tensor_split)
        mp.tensor_split = ctypes.cast(split, ctypes.POINTER(ctypes.c_float))
        keep.append(split)
    overrides = tensor_overrides(settings.tensor_overrides)
    if overrides is not None:
        mp.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        keep.append(overrides)
    return mp, keep


def context_params(settings: Settings, threads: int = 0, kv_unified: bool = False):
    """llama_context_params: `threads` sequences (settings.threads) of context_size cells each, non-unified KV;
    `threads` compute threads (0: none set, llama.cpp's default)."""
    init_backend()
    cp = C.llama_context_default_params()
    cp.n_ctx = settings.context_size * settings.threads
    cp.n_seq_max = settings.threads
    cp.n_batch = settings.batch_size
    cp.n_ubatch = settings.ubatch_size
    cp.kv_unified = kv_unified
    cp.flash_attn_type = 1 if settings.flash_attn else 0
    cp.swa_full = settings.swa_full
    cp.type_k = _TYPES[settings.cache_type_k]
    cp.type_v = _TYPES[settings.cache_type_v]
    cp.offload_kqv = settings.kv_offload
    cp.op_offload = settings.op_offload
    if threads:
        cp.n_threads = cp.n_threads_batch = threads
    return cp
