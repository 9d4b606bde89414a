"""A partial answer checked against the passage it came from: pure text work, no model.

The model is asked to quote. What it writes is trimmed (a run-on quote keeps its first sentence or line),
recognised as "not here" in its usual forms, and located in the passage: word by word, on word boundaries,
case- and punctuation-blind, tolerant of a small copying slip. The sentence that holds it is the evidence,
cited by its bytes in the document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

_WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=\S)|\n")
_NOT_FOUND = re.compile(
    r"^\W*(?:none|nothing|n/?a|unknown|no answer|not (?:found|stated|given|mentioned|specified|known|available|in the)|"
    r"(?:the )?(?:excerpt|text|passage|document) (?:does not|doesn't|do not|says nothing)|"
    r"(?:it|this) (?:is not|isn't) (?:stated|mentioned|given|said)|i (?:do not|don't) know|cannot be determined)\b",
    re.IGNORECASE)
MIN_MATCH = 0.8  # share of a quote's words found in order in the passage: one slip in five words is a slip
# Words a copy may change or leave out without changing what it says (articles, prepositions, pronouns, "and",
# "or", forms of "be"; "in the NOTICE file" for "within such NOTICE file", "the receipt" for "your receipt"): one
# the passage lacks there is not held against the quote.
# Negations, quantifiers and modal verbs are not among them: "not GPL-compatible" is not a slip of "GPL-compatible".
_SLIGHT = set("""a an the of to in on at by for from with within into as and or that this these those it its
they their them your you his her is are was were be been""".split())
_STOP = set("""a an the of to in on at by for and or but is are was were be been being it its this that these those
with from as into than then so such what which who whom whose when where why how do does did not no yes you your
they them their there here has have had can could would should will shall may might must any all each""".split())


@dataclass
class Located:
    start: int  # character span of the quote in the passage text
    end: int
    sentence: tuple[int, int]  # character span of the sentence(s) that hold it


# "1. ", "- ": a list's marker, not "10007. "; "Answer: ": the cue a chat model writes back before its answer
_MARKER = re.compile(r"^(?:(?:answer|quote)\s*:\s*)?(?:(?:\d{1,2}[.)]|[-*•])\s+)?", re.IGNORECASE)


_END = re.compile(r"[.!?]\s+(?=[A-Z\"'(])")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:[A-Za-z]|e\.g|i\.e|etc|vs|cf|Mr|Mrs|Ms|Dr|St|No|Inc|Ltd|Co)$")


def first_sentence(text: str) -> str:
    """A run-on answer cut to its first line, then its first sentence (a quote runs on into the next one)."""
    line = _MARKER.sub("", text.strip().split("\n", 1)[0].strip())
    for m in _END.finditer(line):
        if not _ABBREVIATION.search(line[:m.start()]):  # "e.g. The", "Dr. Smith" go on
            return line[:m.start() + 1].strip()
    return line


def not_found(text: str) -> bool:
    """The usual ways of saying the excerpt does not answer: none, n/a, unknown, not mentioned, ..."""
    return not text.strip() or bool(_NOT_FOUND.match(text.strip()))


def words(text: str) -> list[tuple[str, int, int]]:
    """Each word, lower case, with its character span."""
    return [(m.group(0).lower().replace("’", "'"), m.start(), m.end()) for m in _WORD.finditer(text)]


def content(text: str) -> set[str]:
    return {w for w, _, _ in words(text) if w not in _STOP}


def echoes(answer: str, question: str) -> bool:
    """An answer made only of the question's own words adds nothing ("the title of section 8", for "What is the
    title of section 8?"): the model repeated the question instead of answering it."""
    mine = content(answer)
    return not mine or mine <= content(question)


def locate(quote: str, passage: str) -> Located | None:
    """Where the passage holds `quote`, word for word on word boundaries (case and punctuation aside), allowing
    a slip: at least MIN_MATCH of its words in order, the small words it changed aside (_SLIGHT), within a
    span at most half as long again as the quote plus three words (a quote may skip an aside). None: the passage
    does not hold it (the model made it up)."""
    p = words(passage)
    pw = [w for w, _, _ in p]
    said = [w for w, _, _ in words(quote)]
    q = _as_copied(said, set(pw))
    if not q or not p:
        return None
    best: tuple[int, int, int] | None = None
    starts = set(q[:3])  # a quote starts within its first words
    for i in (i for i, w in enumerate(pw) if w in starts):
        window = pw[i:i + len(q) + 3 + len(q) // 2]
        # a slip is judged where the quote was copied from: "expression1" is a word of the passage, but here,
        # in "AssertionError(expression2)", it is that word miscopied
        copied = _as_copied(said, set(window))
        sm = SequenceMatcher(None, copied, window, autojunk=False)
        blocks = [b for b in sm.get_matching_blocks() if b.size]
        hit = sum(b.size for b in blocks)
        # a slight word the copy changed or left out ("in" for "within") is no slip: it is not counted at all
        changed = sum(1 for w in copied if w in _SLIGHT) - sum(copied[b.a + k] in _SLIGHT for b in blocks
                                                               for k in range(b.size))
        if not blocks or hit < MIN_MATCH * (len(q) - changed):
            continue
        lo, hi = i + blocks[0].b, i + blocks[-1].b + blocks[-1].size - 1
        if best is None or hit > best[0]:
            best = (hit, lo, hi)
    if best is None:
        return None
    start, end = p[best[1]][1], p[best[2]][2]
    return Located(start, end, sentence_around(passage, start, end))


def _as_copied(quote: list[str], passage: set[str]) -> list[str]:
    """Each quoted word the passage lacks, as the passage's word it miscopies ("expression1" for "expression2",
    "licence" for "license"): a word of seven letters or more, one edit from it ("Paris" is not "parts"). Other
    words stay as written."""
    out = []
    for w in quote:
        if w not in passage and len(w) >= 7:
            near = sorted((abs(len(x) - len(w)), x) for x in passage if abs(len(x) - len(w)) <= 1 and _one_edit(w, x))
            w = near[0][1] if near else w  # a letter replaced before one added or dropped: a copy keeps the length
        out.append(w)
    return out


def _one_edit(a: str, b: str) -> bool:
    """a and b differ by one letter replaced, added or dropped."""
    if len(a) > len(b):
        a, b = b, a
    if len(b) - len(a) > 1:
        return False
    i = next((k for k, (x, y) in enumerate(zip(a, b[:len(a)], strict=True)) if x != y), len(a))
    return a[i + (len(a) == len(b)):] == b[i + 1:]


_PARTS = re.compile(r"\s*(?:[,;]|\band\b|\bor\b)\s*", re.IGNORECASE)


def parts(answer: str) -> list[str]:
    """The parts of a list-like answer ("A and B", "A, B"): asked for two facts, a passage holding one answers
    with it and invents the other ("31877 and 31878" where only 31877 is there)."""
    return [p.strip(" .") for p in _PARTS.split(answer) if p.strip(" .")]


def sentence_bounds(text: str) -> list[int]:
    """Where the sentences of `text` start, and its end: a sentence is text[bounds[i]:bounds[i + 1]]."""
    return [0, *(m.end() for m in _SENTENCE_END.finditer(text)), len(text)]


def sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of the sentence(s) that hold text[start:end]."""
    bounds = sentence_bounds(text)
    lo = max(b for b in bounds if b <= start)
    hi = min((b for b in bounds if b >= end), default=len(text))
    return lo, len(text[:hi].rstrip())


def normalized(text: str) -> tuple[str, list[int]]:
    """The text with its runs of white space as one space (hard-wrapped lines read as prose), or one line break
    where they held a blank line (a paragraph ends), and for each character of it the index of the character it
    came from (to cite the original)."""
    out: list[str] = []
    where: list[int] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            j = i
            while j < n and text[j].isspace():
                j += 1
            if out:
                out.append("\n" if text.count("\n", i, j) >= 2 else " ")
                where.append(i)
            i = j
            continue
        out.append(text[i])
        where.append(i)
        i += 1
    if out and out[-1].isspace():
        out.pop()
        where.pop()
    where.append(n)
    return "".join(out), where
