"""llama.cpp calls that keep the GIL: the quick ones a decode step makes.

ctypes lets the GIL go around every foreign call. In the scheduler thread each let-go is a chance for the event
loop to take the GIL and keep it for the rest of its turn (until it waits on a socket, or for
sys.getswitchinterval(), 5 ms) while the step, and every request in it, waits. A step should let the GIL go once,
in llama_decode, where the event loop has the decode's whole time for its work. So the calls a step makes that
return in microseconds and never wait (reading the logits, editing the cache's cells, vocabulary lookups) are
bound a second time, to the same library, through ctypes.PyDLL, which keeps the GIL. Long calls (decoding,
tokenizing, sampler chains) keep llama-cpp-python's bindings, which let it go.

On a GPU llama_decode can return before the device is done and llama_get_logits waits for it: Context.decode
waits first, in a call that lets the GIL go (llama_synchronize), so nothing here ever waits on a device.
Measured (docs/serve.md, "The GIL is let go once per step"): a let-go that hands the GIL over is rare, since the
caller usually takes it back before the waiting thread wakes, but each one cost up to the other thread's turn;
a small gain on a CPU, where a step is long, and more where steps are short.
"""

from __future__ import annotations

import ctypes

from llama_cpp import llama_cpp as C

_LIB = getattr(C, "_lib", None)  # llama-cpp-python's CDLL (pinned version); without it, the usual bindings
_KEEP = ctypes.PyDLL(_LIB._name) if _LIB is not None else None


def _bind(name: str):
    like = getattr(C, name)
    if _KEEP is None:
        return like
    f = getattr(_KEEP, name)
    f.argtypes, f.restype = like.argtypes, like.restype
    return f


get_logits = _bind("llama_get_logits")
get_logits_ith = _bind("llama_get_logits_ith")
memory_seq_rm = _bind("llama_memory_seq_rm")
memory_seq_add = _bind("llama_memory_seq_add")
memory_seq_cp = _bind("llama_memory_seq_cp")
memory_seq_pos_max = _bind("llama_memory_seq_pos_max")
memory_seq_pos_min = _bind("llama_memory_seq_pos_min")
token_to_piece = _bind("llama_token_to_piece")
vocab_is_eog = _bind("llama_vocab_is_eog")
