"""A persistent llama.cpp compute threadpool for a context (llama_attach_threadpool), as llama-server has.

Without one, ggml makes a throw-away pool for every decode: threads created and joined each step. On a
small model that cost more than the model (1 client: 1.7k tokens/s against llama-server's 4.9k). The
bindings of llama-cpp-python 0.3.36 leave these calls out ("TODO"), so they are declared here.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
from llama_cpp import llama_cpp as C

MAX_THREADS = 512  # GGML_MAX_N_THREADS in the vendored ggml.h


class _Params(ctypes.Structure):  # struct ggml_threadpool_params
    _fields_ = [("cpumask", ctypes.c_bool * MAX_THREADS), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


_api: dict = {}


def _bind() -> dict:
    if not _api:
        lib = Path(llama_cpp.__file__).parent / "lib"
        base = ctypes.CDLL(str(lib / "libggml-base.so"))
        cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"))
        base.ggml_threadpool_params_init.argtypes = [ctypes.POINTER(_Params), ctypes.c_int]
        base.ggml_threadpool_params_init.restype = None
        cpu.ggml_threadpool_new.argtypes = [ctypes.POINTER(_Params)]
        cpu.ggml_threadpool_new.restype = ctypes.c_void_p
        cpu.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
        cpu.ggml_threadpool_free.restype = None
        C._lib.llama_attach_threadpool.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        C._lib.llama_attach_threadpool.restype = None
        C._lib.llama_detach_threadpool.argtypes = [ctypes.c_void_p]
        C._lib.llama_detach_threadpool.restype = None
        _api.update(init=base.ggml_threadpool_params_init, new=cpu.ggml_threadpool_new, free=cpu.ggml_threadpool_free,
                    attach=C._lib.llama_attach_threadpool, detach=C._lib.llama_detach_threadpool)
    return _api


class ThreadPool:
    """`n_threads` compute threads that live as long as the context they are attached to."""

    def __init__(self, ctx_handle, n_threads: int) -> None:
        self.api = api = _bind()
        params = _Params()
        api["init"](ctypes.byref(params), n_threads)  # llama.cpp's defaults: hybrid polling, no pinning
        self.handle = api["new"](ctypes.byref(params))
        self.ctx = ctx_handle
        if self.handle:
            api["attach"](ctx_handle, self.handle, None)

    def close(self) -> None:
        if self.handle:
            self.api["detach"](self.ctx)
            self.api["free"](self.handle)
            self.handle = None
