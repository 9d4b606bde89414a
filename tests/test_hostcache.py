"""cache_ram: a slot's cache saved to host RAM when another prompt takes the slot, restored for a later prompt
that starts the same way (serve/hostcache.py, Scheduler._place)."""

from __future__ import annotations

import pytest
from test_scheduler import _ask, _fresh, _same_logits, _serve

from sentiric_cli.engine.core import Engine
from sentiric_cli.serve.hostcache import HostCache, Saved
from sentiric_cli.settings import Settings


def _saved(tokens: list[int], size: int) -> Saved:
    return Saved(tokens, bytes(size), 0, len(tokens) - 1)


def _whole(s: Saved, n: int) -> int:  # a cache that can go back to any length (no sliding window)
    return n


def test_least_recently_used_caches_go_first_within_the_budget():
    c = HostCache(budget=100)
    assert c.put(_saved([1, 2, 3], 40), _whole) and c.put(_saved([4, 5, 6], 40), _whole)
    assert c.best([1, 2, 3, 9], _whole) is not None  # a lookup does not count as a use; a restore takes it
    assert c.put(_saved([7, 8, 9], 40), _whole)  # 120 > 100: the oldest, [1, 2, 3], goes
    assert [e.tokens for e in c.entries.values()] == [[4, 5, 6], [7, 8, 9]]
    assert c.bytes == 80 and c.tally.evicted == 1
    assert not c.put(_saved([1] * 5, 101), _whole)  # larger than the whole budget: not kept
    key, n = c.best([7, 8, 9, 10], _whole)
    assert n == 3 and c.take(key).tokens == [7, 8, 9] and c.bytes == 40


def test_a_longer_cache_stands_for_its_prefixes_and_the_longest_match_wins():
    c = HostCache(budget=1000)
    c.put(_saved([1, 2, 3], 30), _whole)
    c.put(_saved([1, 2, 3, 4, 5], 50), _whole)  # goes on from [1, 2, 3]: that one is dropped
    assert [e.tokens for e in c.entries.values()] == [[1, 2, 3, 4, 5]]
    assert not c.put(_saved([1, 2, 3, 4], 40), _whole)  # held already (the longer one can go back to it)
    c.put(_saved([1, 9, 9, 9, 9, 9], 60), _whole)
    _, n = c.best([1, 2, 3, 4, 7, 7], _whole)
    assert n == 4
    assert c.best([1, 2, 3], _whole)[1] == 2  # the last prompt token is always read: it gives the logits
    # a cache that cannot go back (a sliding window, a recurrent state) stands for nothing shorter
    stuck = HostCache(budget=1000)
    stuck.put(_saved([1, 2, 3], 30), _whole)
    stuck.put(_saved([1, 2, 3, 4, 5], 50), lambda s, n: n if n == len(s.tokens) else 0)
    assert len(stuck.entries) == 2


def test_the_keep_rule_holds_for_a_saved_sliding_window_cache(bundled):
    """Gemma 3's sliding-window layers keep the last 512 positions (and a ubatch): a cache saved at positions
    600..1199 can go on from 1190 (the 512 before it are there) but not from 1000."""
    with Engine(Settings(context_size=2048, threads=1), bundled) as e:
        assert e.model.n_swa == 512
        assert e.keep_rule(1190, 600, 1199) == 1190
        assert e.keep_rule(1000, 600, 1199) == 0
        assert e.keep_rule(1000, 0, 1199) == 1000


@pytest.mark.text
def test_a_conversation_evicted_from_its_slot_comes_back_from_host_ram(micro):
    """One slot: A, then B takes the slot (A is saved to RAM), then A's next turn restores A instead of reading it.
    Its logits are exactly those of the turn when the slot kept A all along (the same cells, not a re-read, which
    rounds differently). With cache_ram 0 the next turn reads A again."""
    on = Settings(context_size=512, threads=1, cache_ram=64)
    with Engine(on, micro) as e:
        m = e.model
        a = [m.bos] + m.tokenize("The old lighthouse keeper climbed the stairs every evening at dusk. " * 3)
        b = [m.bos] + m.tokenize("Zebras run fast across the plain, and the lions watch them from the grass. " * 2)
        turn = a + m.tokenize(" At the top he lit the lamp and")

    async def main(sched):
        await _ask(sched, a)
        await _ask(sched, b)
        return await _ask(sched, turn)

    got, sched = _serve(micro, on, main)
    assert sched.host.tally.saved >= 1 and sched.host.tally.hits == 1
    assert got.reused_tokens >= len(a)  # A and its answer's start, as far as the turn shares them
    assert sched.host.tally.restored_tokens == got.reused_tokens
    assert sched.counters.saved_bytes > 0


    async def kept(sched):
        await _ask(sched, a)
        return await _ask(sched, turn)

    ref, _ = _serve(micro, on, kept)
    assert ref.reused_tokens == got.reused_tokens
    assert got.tokens == ref.tokens and all((x == y).all() for x, y in zip(got.logits, ref.logits, strict=True))
    assert _same_logits(got, _fresh(micro, on, turn), within=3e-3)  # and close to a fresh read
    off, sched_off = _serve(micro, Settings(context_size=512, threads=1, cache_ram=0), main)
    assert sched_off.host is None and off.reused_tokens < 4  # "<bos>The" at most: B held the slot


@pytest.mark.text
def test_a_restore_is_counted_in_metrics(micro):
    """The Prometheus view reports saves, hits, restored tokens and the bytes held."""
    from sentiric_cli.serve.app import _Stats

    on = Settings(context_size=512, threads=1, cache_ram=64)
    with Engine(on, micro) as e:
        m = e.model
        a = [m.bos] + m.tokenize("A long first prompt about lighthouses and their keepers. " * 3)
        b = [m.bos] + m.tokenize("Another prompt entirely, about zebras. " * 3)

    async def main(sched):
        await _ask(sched, a)
        await _ask(sched, b)
        await _ask(sched, a + [5, 6])
        return {f.name: f.samples[0].value for f in _Stats(sched).collect()}

    got, _ = _serve(micro, on, main)
    assert got["sentiric_cache_ram_hits"] == 1
    assert got["sentiric_cache_ram_restored_tokens"] >= len(a)
    assert got["sentiric_cache_ram_saves"] >= 1 and got["sentiric_cache_ram_bytes"] > 0
    assert got["sentiric_cache_ram_budget_bytes"] == 64 * 1024 * 1024


def test_deterministic_servers_keep_no_host_cache(micro):
    with Engine(Settings(context_size=256, threads=1, deterministic=True), micro) as e:
        from sentiric_cli.serve.scheduler import Scheduler

        sched = Scheduler(e, 8)
        try:
            assert sched.host is None and not sched.reuse
        finally:
            sched.shutdown(5)
