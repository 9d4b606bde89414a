"""What goes into the engine and what comes out: a Request, then Progress and Piece events, then one Record."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sentiric_cli.engine import window
from sentiric_cli.engine.logprobs import TokenLogprob
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.settings import Settings

HEAD, TAIL, GENERATED = -1, -2, -3  # sources of tokens that are not part of the document


@dataclass
class Request:
    head: list[int]  # pinned: BOS, instruction, question
    body: list[int] = field(default_factory=list)  # the document, streamed through the window
    tail: list[int] = field(default_factory=list)  # question again + answer cue
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    sampling: SamplingParams = SamplingParams()  # frozen: one instance can be shared
    n_keep: int = -1  # pinned tokens from the start; -1 = the whole head
    shift_discard: float = window.DEFAULT_DISCARD
    trace: bool = False  # keep the logits each token was sampled from (tests compare runs with them)
    score: bool = False  # measure each document token's log-likelihood as it is read (perplexity)
    token_logprobs: bool = False  # keep each sampled token's log-probability (one float each: confidence)
    top_logprobs: int = -1  # >= 0: each sampled token's log-probability and this many alternatives (Piece/Record.logprobs)
    prompt_logprobs: int = -1  # >= 0, with score: each scored token's log-probability and this many alternatives
    # (Record.prompt_logprobs: the completions API's echo)
    draft: int = 0  # prompt-lookup drafting: most tokens checked per step beside the sampled one (engine/draft.py)
    n: int = 1  # answers to the same prompt: the prompt is read once, then copied into n - 1 more slots (Sequence.fork)

    @classmethod
    def from_settings(cls, s: Settings, head: Sequence[int], body: Sequence[int] = (), tail: Sequence[int] = (), *,
                      sampling: SamplingParams | None = None, **kw: Any) -> Request:
        """A request with the settings' answer length, window policy and sampling (`sampling` replaces the last)."""
        values: dict[str, Any] = dict(max_tokens=s.max_tokens, n_keep=s.n_keep, shift_discard=s.shift_discard,
                                      draft=s.draft_tokens, sampling=sampling or SamplingParams.from_settings(s))
        values.update(kw)
        if s.deterministic:  # never drafts, whatever a request asks: a draft's rows change the step's shape
            values["draft"] = 0
        return cls(list(head), list(body), list(tail), **values)

    def reading(self, head: Sequence[int], body: Sequence[int], tail: Sequence[int], **kw: Any) -> Request:
        """The same request (sampling, answer length, window policy, logprobs) over another prompt."""
        return replace(self, head=list(head), body=list(body), tail=list(tail), **kw)


@dataclass
class Piece:
    text: str
    index: int = 0  # which of the request's n answers
    logprobs: list[TokenLogprob] | None = None  # with Request.top_logprobs: the tokens this text came from


@dataclass
class Progress:
    prefilled: int  # prompt tokens read so far (re-reads by the recompute path not counted)
    total: int
    shifts: int
    tokens_per_s: float


@dataclass
class Record:
    prompt_tokens: int
    head_tokens: int
    document_tokens: int
    n_keep: int
    context_size: int  # cells in this sequence's window
    generated_tokens: int
    finish_reason: str  # "stop", "length", "interrupted" or "error"
    path: str  # "none" (it fit), "shift" or "recompute"
    shifts: int
    evicted_tokens: int
    evicted_spans: list[tuple[int, int]]  # document token positions [start, end) no longer in the window
    kept_spans: list[tuple[int, int]]  # document token positions still in the window at the end
    recomputed_tokens: int
    reused_tokens: int  # prompt tokens found already in the slot's cache (a shared prefix), not read again
    max_fill: int  # the window's largest fill, in cells
    prefill_seconds: float
    prefill_tokens_per_s: float
    generation_tokens_per_s: float
    text: str = ""
    tokens: list[int] = field(default_factory=list)  # generated token ids
    logits: list[np.ndarray] = field(default_factory=list)  # with Request.trace: the logits behind each sampled token
    scored_tokens: int = 0  # with Request.score: document tokens predicted from the window before them
    nll: float = 0.0  # their summed negative log-likelihood (nats)
    token_logprobs: list[float] = field(default_factory=list)  # with Request.token_logprobs, per generated token
    logprobs: list[TokenLogprob] = field(default_factory=list)  # with Request.top_logprobs, per generated token
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # with Request.prompt_logprobs, per scored token
    index: int = 0  # which of the request's n answers
    stop_string: str | None = None  # the stop string that ended the answer (finish_reason "stop"), if one did
    drafted_tokens: int = 0  # prompt-lookup drafting: tokens proposed, and those the sampler chose too (kept)
    accepted_tokens: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.scored_tokens) if self.scored_tokens else float("nan")


Event = Piece | Progress | Record
