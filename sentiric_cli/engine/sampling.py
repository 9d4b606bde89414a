"""Choosing each next token: llama.cpp's sampler chain, or a direct argmax where that chain would only be greedy.

llama.cpp's samplers start by copying the row's logits into an array of (token, logit, p) entries. With a
262k-token vocabulary that copy is most of a sampler's cost: 0.27 ms per token for the greedy chain on the bundled
model, 5% of an 8-row decode step (bench: docs/benchmarks.md, "Greedy tokens without the sampler chain"). A
greedy choice needs none of it: numpy's argmax over the logits in place takes 0.02 ms and picks the same token
(the first of equal maxima, as llama.cpp's greedy sampler does). Any sampler with state or a say in the
candidates (grammar, repeat penalty, temperature) keeps the chain.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from llama_cpp import llama_cpp as C

from sentiric_cli.engine.logprobs import LogprobLog, log_softmax
from sentiric_cli.errors import SentiricError

if TYPE_CHECKING:
    import numpy as np

    from sentiric_cli.engine.bindings import Context, Model
    from sentiric_cli.settings import Settings


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen: the one type every request builder uses (settings, the API, the long-document
    frames). Default: greedy."""
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from a token seen in the last `penalty_last_n`
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence in the last `penalty_last_n`
    penalty_last_n: int = 64  # the tokens the three penalties look back over (llama.cpp's repeat_last_n)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit); -inf bans it
    seed: int = -1
    grammar: str | None = None  # GBNF: output constrained by llama.cpp's grammar sampler (structured output, tools)
    # lazy grammar: the grammar applies only from the first match of one of these regexes (llama.cpp's lazy
    # grammar sampler), so free text is free and a tool call, once started, is valid JSON
    grammar_triggers: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, s: Settings, **overrides: Any) -> SamplingParams:
        """The settings' sampling (temperature, top_k, ...), with `overrides` (an API request's fields) on top."""
        values = {f.name: getattr(s, f.name) for f in fields(cls) if hasattr(s, f.name)}
        values.update(overrides)
        return cls(**values)

    @property
    def greedy(self) -> bool:
        """The chain would be greedy alone: the token is the logits' argmax."""
        return self.temperature <= 0 and not self.grammar and not self.penalized and not self.logit_bias

    @property
    def penalized(self) -> bool:
        return self.repeat_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    def for_answer(self, index: int) -> SamplingParams:
        """Answer `index` of n to one prompt: its own seed (a fixed seed gives n different, repeatable answers)."""
        return replace(self, seed=self.seed + index if self.seed >= 0 else -1)


def grammar_sampler(model: Model, grammar: str, triggers: tuple[str, ...] = ()) -> Any:  # a llama_sampler pointer
    """llama.cpp's grammar sampler for GBNF text (lazy: from the first match of a `triggers` regex on);
    SentiricError when llama.cpp cannot parse it."""
    if triggers:
        patterns = (ctypes.c_char_p * len(triggers))(*(t.encode() for t in triggers))
        g = C.llama_sampler_init_grammar_lazy_patterns(model.vocab, grammar.encode(), b"root", patterns, len(triggers),
                                                       None, 0)
    else:
        g = C.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    if not g:
        raise SentiricError("the grammar does not parse (llama.cpp's GBNF)", "check the grammar / JSON schema")
    return g


def _chain(req: SamplingParams, model: Model, recent: Sequence[int] = ()) -> Any:  # req: the parameters
    """llama.cpp's sampler chain; `recent`: the prompt's last tokens, which the penalties count."""
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    if req.logit_bias:  # first, as llama.cpp's common sampler: the grammar still has the last word on what is allowed
        biases = (C.llama_logit_bias * len(req.logit_bias))(*(C.llama_logit_bias(t, b) for t, b in req.logit_bias))
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_logit_bias(model.n_vocab, len(req.logit_bias), biases))
    if req.grammar:  # before the rest: the samplers after it only see tokens the grammar allows
        C.llama_sampler_chain_add(chain, grammar_sampler(model, req.grammar, req.grammar_triggers))
    if req.penalized:
        penalties = C.llama_sampler_init_penalties(model.n_vocab, req.penalty_last_n, req.repeat_penalty,
                                                   req.frequency_penalty, req.presence_penalty)
        for tok in recent[-req.penalty_last_n:] if req.penalty_last_n > 0 else ():  # the prompt's end counts, as in
            C.llama_sampler_accept(penalties, tok)  # llama-server (fed to this sampler only, not to the grammar)
        C.llama_sampler_chain_add(chain, penalties)
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

    def __init__(self, params: SamplingParams, model: Model, recent: Sequence[int] = ()) -> None:
        self.params, self.model = params, model
        self.greedy = params.greedy
        # made now when it samples (a grammar that does not parse is refused before the request runs); a greedy
        # one's only on demand: making and freeing it were 5 C calls per request on the scheduler thread
        self._chain = None if self.greedy else _chain(params, model, recent)

    @property
    def chain(self) -> Any:
        """llama.cpp's sampler chain for the request."""
        if self._chain is None:
            self._chain = _chain(self.params, self.model)
        return self._chain

    def sample(self, ctx: Context, idx: int) -> int:
        if self.greedy:
            return ctx.argmax(idx)
        return C.llama_sampler_sample(self.chain, ctx.handle, idx)

    def close(self) -> None:
        if self._chain:
            C.llama_sampler_free(self._chain)
            self._chain = None


class TokenChooser:
    """Sampling with what a request keeps of each choice: the logits behind it (trace), its log-probability, its
    best alternatives. One per sequence; a fork gets a new one (its own seed, nothing shared)."""

    def __init__(self, params: SamplingParams, model: Model, trace: bool = False, token_logprobs: bool = False,
                 top_logprobs: int = -1, recent: Sequence[int] = ()) -> None:
        self.sampler = Sampler(params, model, recent)
        self.model = model
        self.keep_trace, self.keep_lps, self.top_k = trace, token_logprobs, top_logprobs
        self.tokens: list[int] = []
        self.trace: list[np.ndarray] = []
        self.lps: list[float] = []
        self.top = LogprobLog(max(top_logprobs, 0))

    def choose(self, ctx: Context, idx: int, text_at: int) -> int:
        """The next token from batch row `idx`'s logits; `text_at`: where its text starts in the answer."""
        if self.keep_trace:
            self.trace.append(ctx.logits(idx))
        tok = self.sampler.sample(ctx, idx)
        self.tokens.append(tok)
        if self.keep_lps:
            self.lps.append(float(log_softmax(ctx.logits(idx))[tok]))
        if self.top_k >= 0 and not self.model.is_eog(tok):
            self.top.add(ctx.logits(idx), tok, text_at)
        return tok

    def close(self) -> None:
        self.sampler.close()
