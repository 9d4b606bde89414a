"""A needle grid for long-document strategies: pass keys at several depths of filler text of several lengths.

Shared by tests and `make bench`. The filler is varied plain sentences (no numbers), so the only
number in a document is its key.
"""

from __future__ import annotations

import random

FILLER = [
    "The grass is green and the sky is blue.", "The sun is warm over the quiet hills.",
    "A river runs past the old mill and into the valley.", "Children play in the square while the bells ring.",
    "The baker opens his shop before dawn every day.", "Clouds drift slowly toward the mountains in the east.",
    "An old dog sleeps by the door of the farmhouse.", "The market is busy with traders and their carts.",
    "Leaves fall from the trees when the autumn wind blows.", "The road winds through fields of wheat and barley.",
    "Fishermen mend their nets on the shore in the evening.", "The library keeps its doors open until late at night.",
]
QUESTION = "What is the pass key?"
KEY16, WINDOW16 = 48213, "512"  # the fleet's document (conftest.doc16): 16x a 512-token window, this key at 30%


def needle(key: int) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def filler(n_sentences: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(FILLER) for _ in range(n_sentences)]


def document(n_sentences: int, depth: float, key: int, seed: int = 0) -> tuple[str, int]:
    """The text, and the byte offset where the needle starts."""
    text, at = documents(n_sentences, [(depth, key)], seed)
    return text, at[0]


def documents(n_sentences: int, needles: list[tuple[float, int]], seed: int = 0) -> tuple[str, list[int]]:
    """Filler with a needle at each (depth, key); the text and each needle's byte offset."""
    sents = filler(n_sentences, seed)
    for depth, key in sorted(needles, reverse=True):
        sents.insert(int(depth * len(sents)), needle(key))
    text = " ".join(sents)
    return text, [text.encode().index(needle(key).encode()) for _, key in needles]


def sentences_for(model, tokens: int) -> int:
    """How many filler sentences make about `tokens` tokens with this model."""
    sample = " ".join(FILLER)
    return max(1, round(tokens / (len(model.tokenize(" " + sample)) / len(FILLER))))
