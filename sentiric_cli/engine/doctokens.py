"""Tokenize text of any length in linear time, interruptibly: every tokenization of user text goes through here
(Model.tokenize), so neither a document nor a 4 MB prompt or chat message reaches llama.cpp in one call.

llama.cpp's tokenizer is quadratic on long texts and runs in one C call that Ctrl-C cannot stop
(1 MB took 2-5 s, 4 MB 40 s, 50 MB never started). It is fed pieces of PIECE_CHARS instead, cut right
before a space that starts a word: SentencePiece and byte-level BPE both start a token there, so the
pieces give the same tokens as one call on ordinary text. That is checked once per model; a model
whose tokenizer would not agree (e.g. one that adds a space prefix to every call) gets one call.
"""

from __future__ import annotations

PIECE_CHARS = 16 * 1024  # linear from here down: 1 MB took 1.5 s at 16k, 1.3 s at 1k, 1.8 s at 4k pieces


def _cut(text: str, lo: int, hi: int) -> int:
    """The last index in (lo, hi] where a word starts after one space; hi when there is none (no spaces)."""
    for k in range(hi, lo, -1):
        if text[k - 1] == " " and k >= 2 and not text[k - 2].isspace() and not text[k].isspace():
            return k - 1  # cut before the space: it belongs to the word after it
    return hi


def _once(model):
    return getattr(model, "tokenize_once", None) or model.tokenize


def _splits_cleanly(model, add_special: bool = False, parse_special: bool = False) -> bool:
    """Whether pieces give one call's tokens, for this model and these flags (BOS on the first piece only;
    a model that also appends EOS, or adds a space prefix to every call, does not)."""
    checked = model.__dict__.setdefault("_splits_cleanly", {})
    key = (add_special, parse_special)
    if key not in checked:
        once = _once(model)
        a, b = "The pass key is 7261. Remember it.", " Then the grass was green, and the sky blue."
        checked[key] = once(a + b, add_special, parse_special) == once(a, add_special, parse_special) + once(
            b, False, parse_special)
    return checked[key]


def tokenize_document(model, text: str, piece_chars: int = PIECE_CHARS, progress=None, add_special: bool = False,
                      parse_special: bool = False) -> list[int]:
    """Tokens of `text` in linear time; interruptible between pieces. Special-token texts carry no spaces, so
    a cut (always before a space) never splits one."""
    once = _once(model)
    if len(text) <= piece_chars or not _splits_cleanly(model, add_special, parse_special):
        return once(text, add_special, parse_special)
    out: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = n if n - i <= piece_chars else _cut(text, i + piece_chars // 2, i + piece_chars)
        out += once(text[i:j], add_special and i == 0, parse_special)
        i = j
        if progress:
            progress(i, n)
    return out
