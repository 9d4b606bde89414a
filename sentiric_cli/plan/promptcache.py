"""`serve`'s prompt caches in host RAM (`cache_ram`, serve/hostcache.py) in a plan: how many tokens of saved prompts
the budget holds, whether the RAM left beside the model has room for it, and what to set where it has not.

The budget is an upper bound: the caches fill only as slots are taken by other prompts. It is not counted in the
memory breakdown (llama.cpp allocates none of it, and `run` keeps none); it is checked against the host RAM the
breakdown leaves, and the recommendation lowers it to half of that when the user did not set it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentiric_cli.plan.memory import MiB
from sentiric_cli.plan.usage import Breakdown


@dataclass(frozen=True)
class PromptCache:
    budget_bytes: int  # cache_ram
    token_bytes: int  # one token of a saved prompt: its K and V in every layer (a sliding window's, while it fits)
    room_bytes: int | None  # host RAM left beside the plan; None when the plan has no host figure
    recommended_mib: int

    @property
    def tokens(self) -> int:
        return self.budget_bytes // self.token_bytes if self.token_bytes else 0

    @property
    def fits(self) -> bool:
        return self.room_bytes is None or self.budget_bytes <= self.room_bytes


def prompt_cache(cache_ram_mib: int, bd: Breakdown, context: int, pinned: bool) -> PromptCache:
    token = bd.kv_bytes_per_thread // max(1, context)
    host = bd.host
    room = max(0, host.free_bytes - host.total_bytes) if host is not None and host.free_bytes > 0 else None
    budget = cache_ram_mib * MiB
    rec = cache_ram_mib
    if not pinned and room is not None and budget > room // 2:
        rec = (room // 2) // MiB  # half of what is left: the page cache and the server itself need the rest
    return PromptCache(budget, token, room, rec)


def describe(pc: PromptCache) -> tuple[str, str, str]:
    """The explain row: (what, value, where from)."""
    value = f"{pc.budget_bytes / MiB:,.0f} MiB, about {pc.tokens:,} tokens of saved prompts"
    where = f"cache_ram; {pc.token_bytes / 1024:,.1f} KiB per token (KV per thread / context)"
    if pc.room_bytes is not None:
        where += f"; {pc.room_bytes / MiB:,.0f} MiB of host RAM left beside the model"
    return "serve's prompt cache in RAM (at most)", value, where
