"""Prompt-lookup drafting: guess the next tokens from the request's own text, check them all in one decode.

An answer that quotes its prompt (a long document's evidence, a citation, "repeat the paragraph") writes tokens the
prompt already holds. When the answer's last n tokens (n = N_MAX down to N_MIN) occurred before, in the prompt or
the answer, the tokens that followed them there are the draft (llama-server's n-gram `--spec-type` modes, vLLM's
ngram speculator). The sequence decodes its last token and the draft in one step, one row each, samples each row
in order as it would have one step at a time and keeps the draft tokens up to the first one the sampler did not
choose; the cells past it are removed. A sampled token is drawn from the same distribution, with the same random
draw, as without the draft: the draft only decides how many rows one step reads (for a draft of one token q, that
is the standard speculative acceptance: q kept with probability p(q), otherwise a token drawn from p without q).

How many tokens to draft is decided per step: a step of 1 + k rows costs what it was measured to cost
(padding.StepCosts, one sequence's rows), and each drafted token is kept with the sequence's acceptance rate so
far, so k maximizes the expected tokens per second; k = 0 when no draft pays (a small model on a CPU, where rows
cost almost as much as steps, and an answer that does not quote).
"""

from __future__ import annotations

N_MAX = 4  # the longest n-gram looked up (the longest match wins: it predicts best)
N_MIN = 2  # shorter matches (one token) propose too often to be worth a row each
HISTORY = 65536  # tokens of prompt the index covers (the newest): bounded memory and start-up time


class Lookup:
    """An n-gram index over a token history: for each n-gram of N_MIN..N_MAX tokens, where the tokens after its
    latest occurrence start. The history's own last n-gram is indexed only once a token follows it."""

    def __init__(self, tokens: list[int]) -> None:
        self.hist: list[int] = list(tokens[-HISTORY:])
        self.index: dict[tuple[int, ...], int] = {}
        for end in range(N_MIN, len(self.hist)):
            self._index(end)

    def _index(self, end: int) -> None:
        h = self.hist
        for n in range(N_MIN, min(N_MAX, end) + 1):
            self.index[tuple(h[end - n:end])] = end

    def push(self, token: int) -> None:
        self._index(len(self.hist))
        self.hist.append(token)

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest suffix found."""
        h, size = self.hist, len(self.hist)
        for n in range(min(N_MAX, size), N_MIN - 1, -1):
            at = self.index.get(tuple(h[size - n:]))
            if at is not None:
                return h[at:at + k]
        return []


def expected_tokens(a: float, k: int) -> float:
    """Tokens a step with k drafted tokens yields when each is kept with probability a (given the ones before it
    were): the sampled token always, then 1 + a + a^2 + ... + a^k in all."""
    return float(k + 1) if a >= 1 else (1 - a ** (k + 1)) / (1 - a)


def choose_k(seconds: list[float], a: float, k_max: int) -> int:
    """The draft length that gives the most tokens per second; `seconds[r]`: a step of r rows (index 0 unused).
    Without measured costs, rows are taken as free (a memory-bound step: a GPU, a large model)."""
    best, best_rate = 0, 0.0
    for k in range(0, k_max + 1):
        if len(seconds) > 1 and k + 1 >= len(seconds):
            break  # past what was measured: not guessed
        cost = seconds[k + 1] if len(seconds) > 1 else 1.0
        rate = expected_tokens(a, k) / cost
        if rate > best_rate * 1.02:  # a longer draft only for a clear gain: rows that are not kept cost energy
            best, best_rate = k, rate
    return best


class Acceptance:
    """A sequence's acceptance rate: kept / (kept + refused), with one of each as a prior (0.5 at the start)."""

    def __init__(self) -> None:
        self.drafted = 0
        self.accepted = 0
        self.refused = 0

    @property
    def rate(self) -> float:
        return (self.accepted + 1) / (self.accepted + self.refused + 2)

    def observe(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted
        self.refused += accepted < drafted
