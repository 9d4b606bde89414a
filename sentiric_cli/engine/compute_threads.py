"""A persistent llama.cpp compute threadpool for a context (llama_attach_threadpool), as llama-server has.

Without one, ggml makes a throw-away pool for every decode: threads created and joined each step. On a
small model that cost more than the model (1 client: 1.7k tokens/s against llama-server's 4.9k). The
bindings of llama-cpp-python 0.3.36 leave these calls out ("TODO"), so they are declared here.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp
from llama_cpp import llama_cpp as C

MAX_THREADS = 512  # GGML_MAX_N_THREADS in the vendored ggml.h


class _Params(ctypes.Structure):  # struct ggml_threadpool_params
    _fields_ = [("cpumask", ctypes.c_bool * MAX_THREADS), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


_api: dict = {}


def ggml_lib_dir() -> Path:
    """The libraries llama-cpp-python loaded: its own, or a build it was pointed at (a CUDA one, say)."""
    return Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(llama_cpp.__file__).parent / "lib")


def _bind() -> dict:
    if not _api:
        lib = ggml_lib_dir()
        base = ctypes.CDLL(str(lib / "libggml-base.so"))
        cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"))
        base.ggml_threadpool_params_init.argtypes = [ctypes.POINTER(_Params), ctypes.c_int]
        base.ggml_threadpool_params_init.restype = None
        cpu.ggml_threadpool_new.argtypes = [ctypes.POINTER(_Params)]
        cpu.ggml_threadpool_new.restype = ctypes.c_void_p
        cpu.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
        cpu.ggml_threadpool_free.restype = None
        cpu.ggml_threadpool_pause.argtypes = [ctypes.c_void_p]
        cpu.ggml_threadpool_pause.restype = None
        C._lib.llama_attach_threadpool.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        C._lib.llama_attach_threadpool.restype = None
        C._lib.llama_detach_threadpool.argtypes = [ctypes.c_void_p]
        C._lib.llama_detach_threadpool.restype = None
        _api.update(init=base.ggml_threadpool_params_init, new=cpu.ggml_threadpool_new, free=cpu.ggml_threadpool_free,
                    pause=cpu.ggml_threadpool_pause, attach=C._lib.llama_attach_threadpool,
                    detach=C._lib.llama_detach_threadpool)
    return _api


class ThreadPool:
    """Compute threads that live as long as the context they are attached to: a pool of `n_threads`, and
    (ThreadTuner) a lean one with one thread fewer. The pool not in use is paused: its threads sleep. One
    pool of n with fewer threads asked for would not do: its idle thread still spins at every new graph."""

    def __init__(self, ctx_handle, n_threads: int) -> None:
        self.api = _bind()
        self.ctx = ctx_handle
        self.pools = {n: self._new(n) for n in {n_threads, max(n_threads - 1, 1)}}
        self.current = 0
        self.use(n_threads)

    def _new(self, n: int):
        params = _Params()
        self.api["init"](ctypes.byref(params), n)  # llama.cpp's defaults: hybrid polling, no pinning
        return self.api["new"](ctypes.byref(params))

    @property
    def handle(self):
        return self.pools.get(self.current)

    def use(self, n: int) -> None:
        if n == self.current or not self.pools.get(n):
            return
        if self.handle:
            self.api["pause"](self.handle)  # resumed by its next graph
        self.api["attach"](self.ctx, self.pools[n], None)
        self.current = n

    def close(self) -> None:
        if self.pools:
            self.api["detach"](self.ctx)
            for h in self.pools.values():
                if h:
                    self.api["free"](h)
            self.pools = {}


CHEAP_S_PER_TOKEN = 0.25e-3  # generation cheaper than this per token (all cores) is dominated by the Python around it
WINDOW = 32  # generation steps per decision
BIG_STEP_S = 0.005  # a prompt batch expected to take this long is compute: it gets every core


class ThreadTuner:
    """How many compute threads the next decode gets: all cores, or one fewer for generation steps when the
    model step is cheap.

    On a small machine llama.cpp's compute threads take every core; when a generation step costs a fraction
    of a millisecond (a tiny model, a GPU doing the work), the event loop and the scheduler thread are what
    limit throughput, and they then wait for a core: with 8 streams on 2 cores, one compute thread instead
    of two served 1.4x more tokens/s, while on the bundled 270M model one thread served 0.6x. So the tuner
    measures: the median decode time per token over the last generation steps (scaled to all cores), under
    CHEAP_S_PER_TOKEN leaves a core for the steps, over twice that takes it back. A prompt batch expected to
    take BIG_STEP_S or more still gets every core; smaller ones stay on the lean pool (switching pools costs a
    wake-up, and with 16 clients on a tiny model, switching for every batch of new prompts cost 10%).
    A fixed `cpu_threads` setting turns it off.
    """

    def __init__(self, cores: int, fixed: bool) -> None:
        self.cores = cores
        self.enabled = cores > 1 and not fixed
        self.spare = False  # generation steps run on cores - 1 threads
        self.per_token = 0.0  # the last window's median decode seconds per token, scaled to all cores
        self.samples: list[float] = []

    def threads(self, tokens: int, prompt: bool, streaming: bool = True) -> int:
        """streaming: some sequence in the step sends its tokens as they come. Only then does the core left
        spare have work: non-streamed requests make no per-token events, and on the micro model with 8 and
        16 such clients every core served 0.91-1.00x llama-server's tokens/s against 0.85-0.90x with one
        left spare (streamed, the spare core gave 1.56-1.64x against 1.15-1.22x)."""
        big = prompt and tokens * self.per_token >= BIG_STEP_S
        return self.cores - 1 if self.spare and streaming and not big else self.cores

    def observe(self, seconds: float, tokens: int, threads: int, prompt: bool) -> None:
        if not self.enabled or prompt or tokens <= 0:
            return
        self.samples.append(seconds * threads / self.cores / tokens)
        if len(self.samples) < WINDOW:
            return
        per_token = self.per_token = sorted(self.samples)[len(self.samples) // 2]
        self.samples.clear()
        if not self.spare and per_token < CHEAP_S_PER_TOKEN:
            self.spare = True
        elif self.spare and per_token > 2 * CHEAP_S_PER_TOKEN:
            self.spare = False


def compute_threads(setting: int = 0) -> int:
    """llama.cpp's compute threads: the setting, else one per physical core this process may run on (llama.cpp's
    own default). SMT siblings of a busy core add little to the matrix work and would take the time the event
    loop and the scheduler thread need; on this project's 2-core machines that is both cores (docs/settings.md)."""
    if setting:
        return setting
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in allowed:
        try:  # "0,16" or "0-1": the same text for every thread of one core
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))
