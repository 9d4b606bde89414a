"""Prompt caches kept in host RAM (`cache_ram`): what a slot held, saved when another prompt takes the slot, and put
back into a slot when a later prompt starts the same way, instead of reading it again.

A slot keeps its cache after its request ends (placement.py), but only until the slot is taken by a prompt that
shares less of it: with 4 slots and 32 users in multi-turn chats, every returning turn read its whole conversation
again. llama-server keeps such caches in host RAM (`--cache-ram`, 8 GiB by default, PR #16391); so does this.
The bytes are llama.cpp's own copy of the sequence (llama_state_seq_get_data: the cells' positions and K/V), kept
whole; the scheduler decides when to save and restore, this holds them: least recently used out first, within
the budget. Pure data: tested without a model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sentiric_cli.serve.placement import shared


@dataclass
class Saved:
    tokens: list[int]  # the tokens the cache holds, from position 0
    data: Any  # llama.cpp's bytes (a ctypes array: handed back as it came)
    pos_min: int  # the positions the cache held when saved: what it can be trimmed back to (Engine.keep_rule)
    pos_max: int

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Tally:
    saved: int = 0  # caches saved
    hits: int = 0  # prompts that went on from a saved cache
    restored_tokens: int = 0  # prompt tokens those did not read again
    evicted: int = 0  # caches dropped for the budget


@dataclass
class HostCache:
    budget: int  # bytes
    entries: OrderedDict[int, Saved] = field(default_factory=OrderedDict)  # least recently used first
    bytes: int = 0
    tally: Tally = field(default_factory=Tally)
    _next: int = 0

    def put(self, s: Saved, keep: Callable[[Saved, int], int]) -> bool:
        """Keep `s`, dropping the entries it stands for (their tokens a start of its own, and `keep(s, n)` says it can
        go back to their length) and then the least recently used past the budget. False when it cannot be kept:
        larger than the whole budget, or an entry already stands for it."""
        if s.size > self.budget or not s.tokens:
            return False
        n = len(s.tokens)
        for key, e in list(self.entries.items()):
            m = len(e.tokens)
            if m >= n and e.tokens[:n] == s.tokens and keep(e, n) == n:
                self.entries.move_to_end(key)  # the same prompt (or a longer one that can go back to it): held already
                return False
            if m <= n and s.tokens[:m] == e.tokens and keep(s, m) == m:
                self._drop(key)
        self._next += 1
        self.entries[self._next] = s
        self.bytes += s.size
        self.tally.saved += 1
        while self.bytes > self.budget:
            self._drop(next(iter(self.entries)))
            self.tally.evicted += 1
        return True

    def best(self, prompt: list[int], keep: Callable[[Saved, int], int]) -> tuple[int, int] | None:
        """(entry key, tokens of `prompt` it lets a slot skip) for the entry that skips the most; None if none does.
        The prompt's last token is always read (it gives the logits)."""
        found = None
        for key, e in self.entries.items():
            n = keep(e, min(shared(e.tokens, prompt), len(prompt) - 1))
            if n > 0 and (found is None or n > found[1]):
                found = (key, n)
        return found

    def take(self, key: int) -> Saved:
        """Remove and return an entry: the slot it is restored into holds it now (and saves it again when taken)."""
        e = self.entries[key]
        self._drop(key)
        return e

    def _drop(self, key: int) -> None:
        self.bytes -= self.entries.pop(key).size
