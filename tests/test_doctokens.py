"""Linear, interruptible tokenization of long documents, and chunks that cover them (bundled model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiric_cli.engine.bindings import Model
from sentiric_cli.engine.doctokens import _splits_cleanly, tokenize_document
from sentiric_cli.engine.prompt import byte_offsets
from sentiric_cli.longdoc import split
from sentiric_cli.settings import Settings

GPL = Path("/usr/share/common-licenses/GPL-3")
MIXED = ("Il était une fois, dans un petit village, une boulangère. Über den Bergen: Schnee! "
         "Das Wetter war schön.\n\nNew paragraph here, with numbers 12345 and 3.14159; tabs\tand  double  spaces. "
         "Ünïcödé — em dashes — and emoji 😀 too. 東京は大きな都市です。 Привет, мир. ")


@pytest.fixture(scope="module")
def model(bundled):
    m = Model(bundled, Settings())
    yield m
    m.close()


def _text() -> str:
    base = GPL.read_text(encoding="utf-8") if GPL.is_file() else MIXED * 400
    return base + MIXED * 40


class Counting:
    """The real model, recording the size of every text handed to llama.cpp's tokenizer."""

    def __init__(self, model: Model) -> None:
        self.model, self.sizes = model, []

    def tokenize_once(self, text: str, *a, **kw) -> list[int]:
        self.sizes.append(len(text))
        return self.model.tokenize_once(text, *a, **kw)


@pytest.mark.parametrize("piece", [300, 4096])
def test_pieces_give_the_same_tokens_as_one_call(model, piece):
    text = _text()
    assert len(text) > 10 * piece
    assert tokenize_document(model, text, piece_chars=piece) == model.tokenize_once(text)
    assert model.tokenize(text) == model.tokenize_once(text)  # every tokenization goes through the pieces


def test_special_tokens_and_bos_survive_the_pieces(model):
    turn = "<start_of_turn>user\n" + MIXED * 3 + "<end_of_turn>\n<start_of_turn>model\nSure. " + MIXED + "<end_of_turn>\n"
    text = turn * 80
    assert len(text) > 4 * 16 * 1024
    once = model.tokenize_once(text, add_special=True, parse_special=True)
    assert once[0] == model.bos and once.count(model.bos) == 1
    assert model.tokenize(text, add_special=True, parse_special=True) == once


def test_no_piece_is_longer_than_the_limit_and_progress_is_reported(model):
    text = _text()
    counting = Counting(model)
    _splits_cleanly(counting)  # the once-per-model agreement check, out of the count
    counting.sizes.clear()
    seen = []
    tokens = tokenize_document(counting, text, piece_chars=2048, progress=lambda d, n: seen.append((d, n)))
    assert tokens == model.tokenize_once(text)
    pieces = counting.sizes
    assert len(pieces) > len(text) // 2048 and max(pieces) <= 2048  # each call is bounded: linear in total
    assert sum(pieces) == len(text)
    assert seen[-1] == (len(text), len(text)) and all(a[0] < b[0] for a, b in zip(seen, seen[1:], strict=False))


def test_text_without_spaces_is_still_cut_and_kept_whole(model):
    text = "x" * 5000 + "." + "y" * 5000
    tokens = tokenize_document(model, text, piece_chars=1024)
    assert b"".join(model.piece(t) for t in tokens).decode() == text  # nothing lost or added at the cuts


def test_chunks_cover_the_document_with_the_overlap_and_end_on_sentences(model):
    text = _text()
    tokens = tokenize_document(model, text)
    offsets = byte_offsets(model, tokens)
    data = b"".join(model.piece(t) for t in tokens)
    assert data.decode("utf-8") == text  # the byte spans are spans of the document itself
    size, overlap = 700, 48
    chunks = split(offsets, data, size, overlap)
    assert chunks[0].start == 0 and chunks[-1].end == len(tokens)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start <= a.end, "a gap: tokens no chunk reads"
        assert a.end - b.start <= 2 * overlap
        assert b.start > a.start
    assert all(c.tokens <= size for c in chunks)
    assert all(c.byte_start == offsets[c.start] and c.byte_end == offsets[c.end] for c in chunks)
    ends = [data[c.byte_end - 1:c.byte_end] for c in chunks[:-1]]
    on_boundary = sum(e in (b".", b"!", b"?", b";", b":", b"\n") for e in ends)
    assert on_boundary >= 0.9 * len(ends), ends  # sentence/paragraph ends, not mid-word cuts
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert covered == set(range(len(tokens)))


def test_a_fact_cut_by_a_boundary_is_whole_in_one_chunk(model):
    text = ("The grass is green and the sky is blue. " * 60 + "The pass key is 48213. Remember it. "
            + "The sun is warm over the hills. " * 60)
    tokens = tokenize_document(model, text)
    offsets = byte_offsets(model, tokens)
    data = b"".join(model.piece(t) for t in tokens)
    at = data.index(b"48213")
    for size in range(120, 400, 7):  # many different cut positions
        chunks = split(offsets, data, size, 24)
        assert any(c.byte_start <= at and at + 5 <= c.byte_end for c in chunks), size


def test_bad_chunk_sizes_are_refused():
    with pytest.raises(ValueError):
        split([0, 1, 2], b"ab", 4, 4)
