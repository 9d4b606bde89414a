"""POST /v1/embeddings: a pooled, L2-normalised embedding of each input from the loaded model.

Only with `embeddings: true` (`serve --embeddings`): it takes a llama.cpp context of its own beside the
generation one. The pooling is the model's (an embedding model's GGUF says which), else the mean of the
token states, as llama-server does for generative models. llama.cpp keeps a full row of logits per
token of an embedded input, so one input is at most MAX_TOKENS tokens (262k-vocabulary models: 0.5 GiB).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from llama_cpp import llama_cpp as C

from sentiric_cli.engine.bindings import Batch, Model
from sentiric_cli.engine.compute_threads import compute_threads
from sentiric_cli.engine.llamalog import last_log
from sentiric_cli.errors import SentiricError
from sentiric_cli.serve.drive import server
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.schemas import EmbeddingBody
from sentiric_cli.settings import Settings

MAX_TOKENS = 512

router = APIRouter()


class Embedder:
    """A context for embeddings; one input at a time (a lock), from a worker thread."""

    def __init__(self, model: Model, settings: Settings) -> None:
        self.model = model
        self.n_ctx = min(settings.context_size, MAX_TOKENS)
        self.lock = threading.Lock()
        self.handle = self._context(C.LLAMA_POOLING_TYPE_UNSPECIFIED, settings)
        if C.llama_pooling_type(self.handle) == C.LLAMA_POOLING_TYPE_NONE:  # a generative model: mean of the states
            C.llama_free(self.handle)
            self.handle = self._context(C.LLAMA_POOLING_TYPE_MEAN, settings)
        self.mem = C.llama_get_memory(self.handle)
        self.n_embd = C.llama_model_n_embd(model.handle)
        self.batch = Batch(self.n_ctx)

    def _context(self, pooling: int, settings: Settings):
        cp = C.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = self.n_ctx
        cp.n_seq_max = 1
        cp.embeddings = True
        cp.pooling_type = pooling
        cp.n_threads = cp.n_threads_batch = compute_threads(settings.cpu_threads)
        cp.no_perf = True
        handle = C.llama_init_from_model(self.model.handle, cp)
        if not handle:
            raise SentiricError(f"llama.cpp could not create the embedding context ({last_log()})")
        return handle

    def embed(self, tokens: list[int]) -> np.ndarray:
        with self.lock:
            C.llama_memory_clear(self.mem, True)
            self.batch.clear()
            for pos, t in enumerate(tokens):
                self.batch.add(t, pos, 0, True)
            rc = C.llama_decode(self.handle, self.batch.raw)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed for an embedding: {rc} ({last_log()})")
            ptr = C.llama_get_embeddings_seq(self.handle, 0)
            v = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float32)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    def close(self) -> None:
        if self.handle:
            self.batch.close()
            C.llama_free(self.handle)
            self.handle = None


def _inputs(srv, body: EmbeddingBody) -> list[list[int]]:
    model = srv.model
    raw: Any = body.input  # a string, strings, token ids, or lists of token ids
    if isinstance(raw, str):
        raw = [raw]
    if not raw:
        raise BadRequest("input: empty", "input")
    if all(isinstance(x, int) for x in raw):  # one input as token ids
        raw = [raw]
    out = []
    for i, item in enumerate(raw):
        toks = model.tokenize(item, add_special=True, parse_special=False) if isinstance(item, str) else list(item)
        if not toks or (isinstance(item, str) and not item):
            raise BadRequest(f"input[{i}]: empty", "input")
        if any(t < 0 or t >= model.n_vocab for t in toks):
            raise BadRequest(f"input[{i}]: token ids must be in 0..{model.n_vocab - 1}", "input")
        if len(toks) > srv.embedder.n_ctx:
            raise BadRequest(f"input[{i}]: {len(toks)} tokens; embeddings take at most {srv.embedder.n_ctx}", "input")
        out.append(toks)
    return out


@router.post("/v1/embeddings")
@router.post("/embeddings", include_in_schema=False)
async def embeddings(body: EmbeddingBody, http: HTTPRequest):
    srv = server(http)
    if srv.embedder is None:
        raise BadRequest("embeddings are off on this server: start it with `sentiric serve --embeddings` "
                         "(or `embeddings: true` in the profile)", status=501)
    inputs = await asyncio.to_thread(_inputs, srv, body)
    data, used = [], 0
    for i, toks in enumerate(inputs):
        v = await asyncio.to_thread(srv.embedder.embed, toks)
        if body.dimensions:
            v = v[:body.dimensions]
            v = v / (np.linalg.norm(v) or 1.0)
        used += len(toks)
        value = (base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64"
                 else [float(x) for x in v])
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": srv.model_id,
            "usage": {"prompt_tokens": used, "total_tokens": used}}
