"""A tokenized document into chunks that fit a window, cut on paragraph and sentence boundaries.

The chunks cover every token; each starts a little before the previous one ends (the overlap), so a
fact cut in two by one boundary is whole in the next chunk. Byte spans make them citable.
"""

from __future__ import annotations

from dataclasses import dataclass

_SENTENCE_END = b".!?;:\n"

@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # document token positions [start, end)
    end: int
    byte_start: int  # the same span in the document's UTF-8 bytes (a citation)
    byte_end: int

    @property
    def tokens(self) -> int:
        return self.end - self.start


def _boundary(data: bytes, offsets: list[int], lo: int, hi: int) -> int:
    """Best token index in [lo, hi] to start a chunk at: after a paragraph, else a sentence, else hi."""
    sentence = None
    for j in range(hi, lo - 1, -1):
        b = offsets[j]
        if b < 1:
            continue
        if data[b - 1:b] == b"\n" and (data[b - 2:b - 1] == b"\n" or data[b:b + 1] == b"\n"):
            return j
        if sentence is None and data[b - 1] in _SENTENCE_END:
            sentence = j
    return sentence if sentence is not None else hi


def split(offsets: list[int], data: bytes, size: int, overlap: int) -> list[Chunk]:
    """Chunks of at most `size` tokens covering every token, each overlapping the previous by about `overlap`.

    offsets: byte start of each token plus the end (len = tokens + 1); data: the detokenized document.
    Ends are moved back (by at most 40% of a chunk) to a paragraph or sentence boundary; the next chunk
    starts `overlap` tokens before the end, moved back to a sentence boundary when one is near.
    """
    n = len(offsets) - 1
    if size < 1 or overlap < 0 or overlap >= size:
        raise ValueError("need size >= 1 and 0 <= overlap < size")
    chunks: list[Chunk] = []
    start = 0
    while True:
        end = min(n, start + size)
        if end < n:
            end = _boundary(data, offsets, start + max(1, int(size * 0.6)), end)
        chunks.append(Chunk(len(chunks), start, end, offsets[start], offsets[end]))
        if end >= n:
            return chunks
        nxt = end - overlap
        if overlap:
            nxt = _boundary(data, offsets, max(start + 1, end - 2 * overlap), nxt)
        start = max(start + 1, min(nxt, end))
