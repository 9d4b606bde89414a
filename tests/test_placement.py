"""Where a prompt runs (serve/placement.py): a pure function of what the free slots hold, tested without a model."""

from __future__ import annotations

from sentiric_cli.serve.placement import COPY_GAIN, Placement, place, shared

PROMPT = list(range(100, 140))


def test_the_lowest_free_slot_with_what_it_holds_of_the_prompt():
    assert place([2, 5], {2: [], 5: []}, PROMPT) == Placement(2, 0)
    assert place([2, 5], {2: PROMPT[:10] + [1, 2, 3], 5: []}, PROMPT) == Placement(2, 10)


def test_a_longer_start_in_another_free_slot_is_copied_down_only_for_enough_gain():
    enough = place([0, 3], {0: PROMPT[:5], 3: PROMPT[:5 + COPY_GAIN]}, PROMPT)
    assert enough == Placement(0, 5 + COPY_GAIN, copy_from=3)
    short = place([0, 3], {0: PROMPT[:5], 3: PROMPT[:4 + COPY_GAIN]}, PROMPT)
    assert short == Placement(0, 5)  # one token short of the gain: the lowest slot's own prefix
    assert place([0, 3, 4], {3: PROMPT[:20], 4: PROMPT[:20]}, PROMPT).copy_from == 3  # the first of equals


def test_the_last_prompt_token_is_always_read_and_memory_limits_what_is_kept():
    assert place([0], {0: list(PROMPT)}, PROMPT).reuse == len(PROMPT) - 1  # its logits come from a decode
    assert place([0], {0: list(PROMPT) + [7]}, PROMPT).reuse == len(PROMPT) - 1
    # a cache that cannot go back to the shared position (a sliding window past it, a recurrent state): nothing kept
    assert place([0, 1], {0: PROMPT[:30], 1: PROMPT[:30]}, PROMPT, lambda slot, n: 0) == Placement(0, 0)
    assert place([0, 1], {0: PROMPT[:2], 1: PROMPT[:30]}, PROMPT, lambda slot, n: n if slot == 1 else 0) == \
        Placement(0, 30, copy_from=1)


def test_shared_counts_the_common_start():
    assert shared([1, 2, 3], [1, 2, 4, 5]) == 2
    assert shared([], [1]) == 0 and shared([1, 2], [1, 2]) == 2
