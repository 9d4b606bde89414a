"""Choosing each next token: llama.cpp's sampler chain, or a direct argmax where that chain would only be greedy.

llama.cpp's samplers start by copying the row's logits into an array of (token, logit, p) entries. With a
262k-token vocabulary that copy is most of a sampler's cost: 0.27 ms per token for the greedy chain on the bundled
model, 5% of an 8-row decode step (bench: docs/benchmarks.md, "Greedy tokens without the sampler chain"). A
greedy choice needs none of it: numpy's argmax over the logits in place takes 0.02 ms and picks the same token
(the first of equal maxima, as llama.cpp's greedy sampler does). Any sampler with state or a say in the
candidates (grammar, repeat penalty, temperature) keeps the chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_cpp import llama_cpp as C

from .errors import SentiricError

if TYPE_CHECKING:
    from .engine import Request
    from .llama import Context, Model


def grammar_sampler(model: Model, grammar: str):
    """llama.cpp's grammar sampler for GBNF text; SentiricError when llama.cpp cannot parse it."""
    g = C.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    if not g:
        raise SentiricError("the grammar does not parse (llama.cpp's GBNF)", "check the grammar / JSON schema")
    return g


def _chain(req: Request, model: Model):
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    if req.grammar:  # first: the samplers after it only see tokens the grammar allows
        C.llama_sampler_chain_add(chain, grammar_sampler(model, req.grammar))
    if req.repeat_penalty != 1.0:
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_penalties(model.n_vocab, 64, req.repeat_penalty, 0.0, 0.0))
    if req.temperature <= 0:
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
        return chain
    if req.top_k > 0:
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_k(req.top_k))
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_p(req.top_p, 1))
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_min_p(req.min_p, 1))
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(req.temperature))
    seed = req.seed if req.seed >= 0 else C.LLAMA_DEFAULT_SEED
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(seed))
    return chain


class Sampler:
    """One sequence's sampler. `greedy`: the chain would be greedy alone, so the token is the logits' argmax."""

    def __init__(self, req: Request, model: Model) -> None:
        self.req, self.model = req, model
        self.greedy = req.temperature <= 0 and not req.grammar and req.repeat_penalty == 1.0
        # made now when it samples (a grammar that does not parse is refused before the request runs); a greedy
        # one's only on demand: making and freeing it were 5 C calls per request on the scheduler thread
        self._chain = None if self.greedy else _chain(req, model)

    @property
    def chain(self):
        """llama.cpp's sampler chain for the request."""
        if self._chain is None:
            self._chain = _chain(self.req, self.model)
        return self._chain

    def sample(self, ctx: Context, idx: int) -> int:
        if self.greedy:
            return ctx.argmax(idx)
        return C.llama_sampler_sample(self.chain, ctx.handle, idx)

    def close(self) -> None:
        if self._chain:
            C.llama_sampler_free(self._chain)
            self._chain = None
