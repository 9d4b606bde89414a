"""The items a sentence introduces: pure text work, no model.

A list question is often answered by one sentence that ends with a colon and the marked items after it: "...
in one of these ways:" then "a) Convey the object code in ... a physical product ...", "b) ...", up to "e)". The
small reader quotes one item at most, and the items run on past the passage it read; the sentence that holds the
question's words (held.py) finds the introduction, and the items are read off the document's own text after it.
- An item starts on a line of its own with a marker: "a)", "(a)", "1.", "1)", "iv)", "*", "-", "•".
- It runs on over its wrapped lines; after a blank line the list goes on only with the next marker of the same
  kind at the same indentation, or with text indented at least as deep as the item's text (a nested list, a
  second paragraph of the item). Anything else ends it: the document's next paragraph.
- Each item is given by its first sentence, at most ITEM_WORDS words: an item can run on for a paragraph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ITEMS = 16  # a longer run is a table of contents or a grammar, not the list asked for
ITEM_WORDS = 40
SCAN_CHARS = 12_000  # how far past the colon the items are looked for: memory stays flat in document length
# a marker: a letter, a roman numeral or one or two digits with ")" or ".", or a bullet
_MARK = r"\((?:[a-z]|[ivx]{1,4}|\d{1,2})\)|(?:[a-z]|[ivx]{1,4}|\d{1,2})[.)]|[-*•]"
_MARKER = re.compile(rf"[ \t]*({_MARK})[ \t]+(?=\S)")  # at the start of a line
_INTRODUCES = re.compile(rf":\s+(?:{_MARK})\s+\S")  # in normalized text (evidence.normalized): a colon, then a marker
_SENTENCE_END = re.compile(r"[.;](?=\s|$)")


@dataclass
class Item:
    start: int  # the item's character span in the text searched (its marker included)
    end: int
    text: str  # its first sentence, white space as one space, marker included


def colon(text: str, within: int | None = None) -> int | None:
    """Where normalized text (from a sentence's start: a colon's sentence runs on through the next, held.sentence's
    `listed`) ends an introduction with a colon, within its first `within` characters, that a marked item
    follows; None where it does not. The text after the sentence is looked at too: "in two steps:" and "1." are
    one sentence, the item's words the next."""
    m = _INTRODUCES.search(text)
    return None if m is None or (within is not None and m.start() >= within) else m.start()


def _style(marker: str) -> str:
    """The kind of a marker: "(a)" and "(b)" are one kind, "a)" another, "1." another, "*" its own."""
    core = marker.strip("().")
    kind = "bullet" if core in "-*•" else "digit" if core.isdigit() else "letter"
    return f"{marker.startswith('(')}{marker[-1] if kind != 'bullet' else marker}{kind}"


def following(text: str) -> list[Item]:
    """The marked items `text` (the document just after an introducing colon) starts with; [] when its first line
    is not an item."""
    text = text[:SCAN_CHARS]
    lines, pos = [], 0
    for line in text.split("\n"):
        lines.append((pos, line))
        pos += len(line) + 1
    items: list[tuple[int, int, int]] = []  # each item: start, end, the column its text starts at
    indent, style, blank = -1, "", False
    for start, line in lines:
        if not line.strip():
            blank = True
            continue
        m = _MARKER.match(line)
        here = len(line) - len(line.lstrip())
        if not items:
            if m is None:
                return []
            indent, style = here, _style(m.group(1))
            items.append((start, start + len(line), m.end()))
        elif m is not None and here == indent and _style(m.group(1)) == style:
            if len(items) == MAX_ITEMS:
                break
            items.append((start, start + len(line), m.end()))
        elif not blank or here >= items[-1][2]:
            items[-1] = (items[-1][0], start + len(line), items[-1][2])  # wrapped, nested or a second paragraph
        else:
            break
        blank = False
    if len(items) < 2:  # one marked line after a colon is an example or a note, not a list
        return []
    return [Item(s, e, _first(text[s:e])) for s, e, _ in items]


def _first(item: str) -> str:
    """An item's first sentence (to a full stop or a semicolon), at most ITEM_WORDS words, white space as one."""
    flat = " ".join(item.split())
    marker = _MARKER.match(flat)
    m = _SENTENCE_END.search(flat, marker.end() if marker else 0)
    flat = flat[:m.end()] if m else flat
    ws = flat.split(" ")
    return flat if len(ws) <= ITEM_WORDS else " ".join(ws[:ITEM_WORDS]) + " ..."
