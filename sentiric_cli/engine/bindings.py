"""A thin layer over llama.cpp's C API (llama-cpp-python's ctypes bindings): model, context, batch.

One model, one context holding `threads` sequences (n_seq_max = threads, one KV stream each).
No policy here: the engine decides what to decode, keep and evict; the parameters llama.cpp is asked for are
params.py's, its log llamalog.py's.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import numpy as np
from llama_cpp import llama_cpp as C

from sentiric_cli.engine import keepgil as K
from sentiric_cli.engine.compute_threads import ThreadPool, ThreadTuner, compute_threads
from sentiric_cli.engine.doctokens import tokenize_document
from sentiric_cli.engine.llamalog import last_log
from sentiric_cli.engine.params import context_params, model_params
from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.shards import first_shard
from sentiric_cli.settings import Settings


class Model:
    def __init__(self, path: Path, settings: Settings, extra_bufts: bool = False, vocab_only: bool = False) -> None:
        mp, keep = model_params(settings, extra_bufts, vocab_only=vocab_only)
        self.path = path
        # a split model loads from its first shard (llama.cpp refuses the others); the plan reads any
        self.handle = C.llama_model_load_from_file(str(first_shard(path)).encode(), mp)
        del keep  # loaded: llama.cpp has copied what it needed
        if not self.handle:
            raise SentiricError(f"{path}: llama.cpp could not load the model ({last_log()})",
                                "check the file with `sentiric plan`; --verbose shows llama.cpp's log")
        self.vocab = C.llama_model_get_vocab(self.handle)
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.bos = C.llama_vocab_bos(self.vocab)
        self.eos = C.llama_vocab_eos(self.vocab)
        self.add_bos = bool(C.llama_vocab_get_add_bos(self.vocab))
        # what a kept cache can be trimmed back to (Engine.keepable): a sliding window drops cells older than
        # n_swa; a recurrent state holds only its last position
        self.n_swa = C.llama_model_n_swa(self.handle)
        self.recurrent = bool(C.llama_model_is_recurrent(self.handle) or C.llama_model_is_hybrid(self.handle))
        self.pieces: dict[int, bytes] = {}  # token -> bytes, and -> end of generation: asked for every token
        self.eog: dict[int, bool] = {}

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        """In linear time, in pieces (doctokens.py): llama.cpp's own call is quadratic on long texts."""
        return tokenize_document(self, text, add_special=add_special, parse_special=parse_special)

    def tokenize_once(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        """One llama.cpp call: for short texts (tokenize() cuts long ones)."""
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate ("\ud800" in JSON) is no text llama.cpp can read
            raise SentiricError(f"the text is not valid Unicode ({e.reason} at character {e.start})",
                                "send UTF-8 text") from None
        cap = len(raw) + 8
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(self.vocab, raw, len(raw), buf, cap, add_special, parse_special)
        if n < 0:  # buffer too small: llama.cpp says how many it needs
            cap = -n
            buf = (C.llama_token * cap)()
            n = C.llama_tokenize(self.vocab, raw, len(raw), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The token's bytes; cached (at most the vocabulary): every generated token asks, once per step."""
        got = self.pieces.get(token)
        if got is None:
            got = self.pieces[token] = self._piece(token)
        return got

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = K.token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = K.token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def special_text(self, token: int) -> str:
        """A special token's text (`<bos>`), as chat templates write it; "" for none."""
        if token < 0:
            return ""
        t = C.llama_vocab_get_text(self.vocab, token)
        return t.decode("utf-8", errors="replace") if t else ""

    def is_eog(self, token: int) -> bool:
        got = self.eog.get(token)
        if got is None:
            got = self.eog[token] = bool(K.vocab_is_eog(self.vocab, token))
        return got

    def chat_template(self) -> str | None:
        t = C.llama_model_chat_template(self.handle, None)
        return t.decode("utf-8", errors="replace") if t else None

    def apply_template(self, template: str, messages: list[tuple[str, str]], add_assistant: bool = True) -> str:
        return apply_template(template, messages, add_assistant)

    def close(self) -> None:
        if self.handle:
            C.llama_model_free(self.handle)
            self.handle = None


def apply_template(template: str, messages: list[tuple[str, str]], add_assistant: bool = True) -> str:
    """llama.cpp's built-in chat templates (llama_chat_apply_template needs no model: a vocabulary from a server
    renders with it too)."""
    arr = (C.llama_chat_message * len(messages))()
    keep = []
    for i, (role, content) in enumerate(messages):
        r, c = role.encode(), content.encode()
        keep += [r, c]
        arr[i].role, arr[i].content = r, c
    tmpl = template.encode()
    size = sum(len(c) for c in keep) * 2 + 1024
    buf = ctypes.create_string_buffer(size)
    n = C.llama_chat_apply_template(tmpl, arr, len(messages), add_assistant, buf, size)
    if n > size:
        buf = ctypes.create_string_buffer(n)
        n = C.llama_chat_apply_template(tmpl, arr, len(messages), add_assistant, buf, n)
    if n < 0:
        raise SentiricError("the model's chat template is not one llama.cpp can apply", "use --raw")
    return buf.raw[:n].decode("utf-8", errors="replace")


class Context:
    """One llama.cpp context: `threads` sequences of `context_size` cells each, non-unified KV."""

    def __init__(self, model: Model, settings: Settings) -> None:
        cores = compute_threads(settings.cpu_threads)
        cp = context_params(settings, cores)
        cp.no_perf = True
        self.model = model
        self.handle = C.llama_init_from_model(model.handle, cp)
        if not self.handle:
            raise SentiricError(f"llama.cpp could not create the context ({last_log()})",
                                "check the settings with `sentiric plan`")
        self.pool = ThreadPool(self.handle, cores) if settings.persistent_threads else None
        self.tuner = ThreadTuner(cores, fixed=settings.cpu_threads > 0)
        self.n_threads = cores
        self.mem = C.llama_get_memory(self.handle)
        self.n_ctx_seq = C.llama_n_ctx_seq(self.handle)
        self.n_seq_max = settings.threads
        self.n_batch = C.llama_n_batch(self.handle)
        self._rows: dict[int, int] | None = None  # the last decode's batch row -> output row (Context.argmax)
        self._greedy: list[int] | None = None
        self._outputs_addr: int | None = None
        self._outputs_view: np.ndarray | None = None
        self.on_device = bool(C.llama_supports_gpu_offload())  # llama_decode may return before a GPU is done

    @property
    def can_shift(self) -> bool:
        return bool(C.llama_memory_can_shift(self.mem))

    def decode(self, batch: Batch, prompt: bool = True, streaming: bool = True, sequences: int | None = None) -> None:
        """One llama_decode; `prompt`: the batch reads prompt tokens (every core), else only generates;
        `streaming`: some sequence's tokens go out as they come (ThreadTuner.threads); `sequences`: how many
        sequences the step serves, when that is not one per row (a draft's rows: engine/draft.py)."""
        drafted = not prompt and sequences is not None and sequences != len(batch)
        n = self.tuner.threads(len(batch), prompt or drafted, streaming)
        if n != self.n_threads:
            if self.pool:
                self.pool.use(n)
            C.llama_set_n_threads(self.handle, n, n)
            self.n_threads = n
        # batch row -> output row, for argmax over all rows at once; not when a prompt chunk scores many rows
        self._rows, self._greedy = (batch.outputs if len(batch.outputs) <= self.n_seq_max else None), None
        t0 = time.perf_counter()
        rc = C.llama_decode(self.handle, batch.raw)
        if self.on_device and rc == 0:  # wait here, letting the GIL go: the logits calls keep it (keepgil.py)
            C.llama_synchronize(self.handle)
        self.tuner.observe(time.perf_counter() - t0, len(batch), n, prompt or drafted)  # prompt-like: not counted
        if rc != 0:
            what = {1: "no KV slot free", 2: "aborted"}.get(rc, f"error {rc}")
            raise RuntimeError(f"llama_decode failed: {what} ({last_log()})")

    def logits(self, i: int) -> np.ndarray:
        return self._logits(i).copy()

    def argmax(self, i: int) -> int:
        """The token with the highest logit in batch row i (the first of equal ones, as llama.cpp's greedy sampler).

        In a decode step (an output row or a few per sequence) the first call takes the argmax of every output row
        at once: one numpy call per step instead of one per sequence, which shows where a step costs under a
        millisecond. Rows with outputs come back in batch order (llama.cpp reorders them)."""
        if self._rows is None or i not in self._rows:
            return int(self._logits(i).argmax())
        if self._greedy is None:  # as a list: indexing it gives ints, not numpy scalars to convert
            self._greedy = self._outputs()[:len(self._rows)].argmax(axis=1).tolist()
        return self._greedy[self._rows[i]]

    def _outputs(self) -> np.ndarray:
        """llama.cpp's logits buffer as (n_seq_max, n_vocab); it holds at least that many rows (llama.cpp reserves
        them when the context is made). The view is made again only when the buffer moves: making one costs
        more than the argmax of a small model's rows."""
        addr = ctypes.cast(K.get_logits(self.handle), ctypes.c_void_p).value
        if not addr:
            raise RuntimeError("llama.cpp has no logits")
        if addr != self._outputs_addr:
            buf = (ctypes.c_float * (self.n_seq_max * self.model.n_vocab)).from_address(addr)
            self._outputs_view = np.frombuffer(buf, dtype=np.float32).reshape(self.n_seq_max, self.model.n_vocab)
            self._outputs_addr = addr
        assert self._outputs_view is not None
        return self._outputs_view

    def _logits(self, i: int) -> np.ndarray:  # a view into llama.cpp's buffer: valid until the next decode
        ptr = K.get_logits_ith(self.handle, i)
        if not ptr:
            raise RuntimeError(f"llama.cpp has no logits for batch row {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    def seq_rm(self, seq: int, p0: int, p1: int) -> bool:
        return bool(K.memory_seq_rm(self.mem, seq, p0, p1))

    def seq_add(self, seq: int, p0: int, p1: int, delta: int) -> None:
        K.memory_seq_add(self.mem, seq, p0, p1, delta)

    def seq_cp(self, src: int, dst: int) -> None:
        """Copy a whole sequence into another (another KV stream: llama.cpp copies the buffer at the next update)."""
        K.memory_seq_cp(self.mem, src, dst, -1, -1)

    def state_save(self, seq: int) -> ctypes.Array | None:
        """A copy of one sequence's cache (its cells' positions and K/V) in host memory; None if llama.cpp gives none."""
        size = C.llama_state_seq_get_size_ext(self.handle, seq, 0)
        if size <= 0:
            return None
        buf = (ctypes.c_uint8 * size)()
        return buf if C.llama_state_seq_get_data_ext(self.handle, buf, size, seq, 0) == size else None

    def state_load(self, seq: int, data: ctypes.Array) -> bool:
        """Put a saved cache into `seq` (emptied first); False (and `seq` empty) when llama.cpp could not take it."""
        self.seq_rm(seq, -1, -1)
        if C.llama_state_seq_set_data_ext(self.handle, data, len(data), seq, 0) == len(data):
            return True
        self.seq_rm(seq, -1, -1)
        return False

    def seq_pos_max(self, seq: int) -> int:
        return K.memory_seq_pos_max(self.mem, seq)

    def seq_pos_min(self, seq: int) -> int:
        return K.memory_seq_pos_min(self.mem, seq)

    def close(self) -> None:
        if self.handle:
            if self.pool:
                self.pool.close()
            C.llama_free(self.handle)
            self.handle = None


class Batch:
    """A reusable llama_batch: tokens of several sequences decoded in one call."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = C.llama_batch_init(capacity, 0, 1)
        self.raw.n_tokens = 0
        # the arrays, fetched once: reading a pointer field of the ctypes struct makes a new object each time,
        # and add() runs once per token
        self._token, self._pos, self._logits = self.raw.token, self.raw.pos, self.raw.logits
        self._n_seq_id, self._seq_id = self.raw.n_seq_id, self.raw.seq_id
        self.outputs: dict[int, int] = {}  # batch row -> its output row (rows with logits, in order)

    def __len__(self) -> int:
        return self.raw.n_tokens

    def clear(self) -> None:
        self.raw.n_tokens = 0
        self.outputs = {}

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        i = self.raw.n_tokens
        if i >= self.capacity:
            raise RuntimeError("batch full")
        self._token[i] = token
        self._pos[i] = pos
        self._n_seq_id[i] = 1
        self._seq_id[i][0] = seq
        self._logits[i] = logits
        if logits:
            self.outputs[i] = len(self.outputs)
        self.raw.n_tokens = i + 1
        return i

    def close(self) -> None:
        if self.raw is not None:
            C.llama_batch_free(self.raw)
            self.raw = None
