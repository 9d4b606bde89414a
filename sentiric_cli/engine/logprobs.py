"""Per-token log-probabilities kept compactly: (1 + k) ids and floats per generated token in flat arrays.

A logits row is the whole vocabulary (262k floats, 1 MB for Gemma 3); keeping one per token grew a server by
300 MiB per 300 tokens. This keeps 8 (k + 1) bytes per token plus its text offset, and builds the tuples the
API shapes only for the tokens being sent.
"""

from __future__ import annotations

import bisect
from array import array

import numpy as np

# one generated token's log-probability and its best alternatives: (token, logprob, ((token, logprob), ...))
TokenLogprob = tuple[int, float, tuple[tuple[int, float], ...]]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from llama.cpp's logits (float64, stable): for scoring and for reporting logprobs."""
    x = logits.astype(np.float64)
    x -= x.max()
    return x - np.log(np.exp(x).sum())


def top(lp: np.ndarray, k: int) -> np.ndarray:
    """The k most likely tokens of a log-probability row, most likely first."""
    best = np.argpartition(lp, -k)[-k:] if k else np.array([], dtype=np.int64)
    return best[np.argsort(lp[best])[::-1]]


def entry(lp: np.ndarray, token: int, k: int) -> TokenLogprob:
    """One token's log-probability and its k best alternatives, as the API shapes take them."""
    return int(token), float(lp[token]), tuple((int(b), float(lp[b])) for b in top(lp, k))


class LogprobLog:
    def __init__(self, k: int) -> None:
        self.k = k
        self.ids = array("i")
        self.lps = array("f")
        self.at = array("q")  # where each token's text starts in the answer

    def __len__(self) -> int:
        return len(self.at)

    def add(self, logits: np.ndarray, token: int, text_at: int) -> None:
        lp = log_softmax(logits)
        best = top(lp, self.k)
        self.ids.append(int(token))
        self.ids.extend(int(t) for t in best)
        self.lps.append(float(lp[token]))
        self.lps.extend(float(lp[t]) for t in best)
        self.at.append(text_at)

    def before(self, text_end: int, lo: int = 0) -> int:
        """How many tokens start before `text_end` in the answer (the ones that text came from)."""
        return bisect.bisect_left(self.at, text_end, lo=lo)

    def entries(self, a: int = 0, b: int | None = None) -> list[TokenLogprob]:
        b = len(self) if b is None else b
        s = self.k + 1
        out = []
        for i in range(a, b):
            ids, lps = self.ids[i * s:(i + 1) * s], self.lps[i * s:(i + 1) * s]
            out.append((ids[0], float(lps[0]), tuple(zip(ids[1:], map(float, lps[1:]), strict=True))))
        return out
