"""The shift policy's arithmetic, without a model."""

from __future__ import annotations

from sentiric_cli.engine.window import chunk_size, discard, merge, spans


def test_nothing_is_evicted_while_it_fits():
    assert discard(n_past=100, need=50, capacity=512, n_keep=10) == 0
    assert discard(n_past=462, need=50, capacity=512, n_keep=10) == 0


def test_eviction_takes_at_least_the_overflow_and_a_quarter_of_the_unpinned_window():
    assert discard(n_past=500, need=50, capacity=512, n_keep=12) == (512 - 12) // 4
    assert discard(n_past=500, need=300, capacity=512, n_keep=12) == 288  # the overflow is larger
    assert discard(n_past=20, need=600, capacity=512, n_keep=12) == 8  # never into the pinned head


def test_chunks_never_need_more_than_one_shift():
    assert chunk_size(capacity=512, n_keep=12, n_batch=2048, total=400) == 2048  # fits: read like llama.cpp
    c = chunk_size(capacity=512, n_keep=12, n_batch=2048, total=5000)
    assert c == 250 and 12 + c <= 512


def test_spans_and_merge():
    assert spans([-1, 3, 4, 5, -2, 9, 10, 7]) == [(3, 6), (7, 8), (9, 11)]
    assert merge([(0, 5)], [(5, 9), (12, 13)]) == [(0, 9), (12, 13)]
