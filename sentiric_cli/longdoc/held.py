"""The sentence (and the passage) that holds a question's words: pure text work, no model.

A document answers a lookup in a sentence that restates most of the question: "You must cause any modified files
to carry prominent notices ..." for "What must any modified files carry?". The small reader may quote another
sentence of the right passage, write a paraphrase the passage does not hold, or say nothing; then the sentence
that holds the question's words is the answer (mapreduce.add_held).
- It must hold every name and number the question asks about ("1.6.1", "GPL") and more than half of its other
  words: a sentence that holds the names alone is about the same thing, not about what is asked ("the Free Software
  Foundation, either version 3 ..." for "Which city is the Free Software Foundation located in?").
- The words that only make it a question are not asked: "long" in "How long" (the answer says "perpetual" or
  "three years"), "kind" in "What kind of organization" ("a non-profit organization"). "many" stays: a sentence
  that holds some number need not say how many.
- Those words count by how rarely the document says them (sentences that hold them, against all): "str", in every
  sentence of the string methods, tells none from another; "strip" tells the one about strip(). A word the document
  never says weighs most, so a question about what it does not say seldom finds a sentence that holds more than half.
- A starred name ("*identifier", "**expression") is asked as written, beside its word: the two are different
  things in Python's documents, and their sentences otherwise hold the same words.
- A heading (the question's words and nothing else, or fewer than four words: 'The "pass" statement', a grammar
  rule) gives way to the sentence after it.
- A lookup's sentence that ends with a semicolon runs on through the next clause while that clause holds a word of
  the question the clauses before it lack ("Some objects contain references to other objects; these are called
  *containers*.", for what such objects are called); mapreduce.add_held keeps a quote from any of its clauses.
- For a list, a sentence that ends with a colon runs on through the next: the items it introduces ("the following
  values are interpreted as false: "False", "None", numeric zero ..."). A lookup's sentences stay apart: there the
  colon's sentence is often the heading of an example, not the answer. Of a list's sentences that hold more than
  half, one whose colon a marked item follows comes first (items.py), and others that hold as much are answers
  too (parallel sentences: '"break" may only occur ...', '"continue" may only occur ...').
- A section's label ("6" in "listed in section 6") is said in its heading, not in its sentences: the passage must
  hold it, the sentence need not.
- The passage that holds most of that weight (with every name and number) is read for a lookup beside the one the
  model finds most relevant (mapreduce.selected): relevance, a small model's likelihood of the whole question, can
  rank a passage about the same topic above the one that says the question's rare words.
polarity.py reads yes or no off such a sentence (there each word counts one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

from sentiric_cli.longdoc import items
from sentiric_cli.longdoc.evidence import _STOP, echoes, sentence_bounds, words

# prepositions _STOP lacks: "under this license" asks nothing a sentence must repeat
PREPOSITIONS = set("about above across after against along among around before behind below beneath beside between "
                   "beyond during except inside near off onto out outside over per since through throughout toward "
                   "towards under until upon via within without".split())
# "How long", "How often": the question asks for a duration, a frequency, a distance or an age, which the answer
# gives without the word. "many" and "much" stay asked: a sentence that holds a number need not be a count
MEASURES = {"long", "often", "far", "old", "soon"}
SORTS = {"kind", "kinds", "type", "types", "sort", "sorts"}  # "What kind of": the phrase asks; the word after it is asked
# "in section 6", "of article 3.2": where the answer is, given by a label that contains a digit
SECTIONS = {"section", "sections", "subsection", "chapter", "article", "clause", "paragraph", "part", "appendix"}
_STARRED = re.compile(r"(?<![\w*])\*{1,2}\w+\b(?!\*)")
HEADING_WORDS = 4  # a line of fewer words is a heading or a rule, not a sentence that says something


def stem(w: str) -> str:
    """A word without its plural or tense ending, so "provided" meets "provides" and "warranties" "warranty"."""
    for end in ("ies", "ing", "ed", "es", "s", "d"):
        if len(w) > len(end) + 3 and w.endswith(end):
            return w[:-len(end)] + ("y" if end == "ies" else "")
    return w


def root(w: str) -> str:
    """The stem without a final "e", so "remove" meets "removed" (polarity.py keeps the stem: it was measured so)."""
    w = stem(w)
    return w[:-1] if len(w) > 3 and w.endswith("e") else w


def stems(text: str) -> set[str]:
    """The roots of the words of `text`, and its starred names as written ("**expression" is not "*expression")."""
    return {root(w) for w, _, _ in words(text)} | starred(text)


def starred(text: str) -> set[str]:
    """Python's starred names ("*args", "**kwargs"): one star or two before a name, not closing on one (*emphasis*).
    A question about "**expression" asks about the sentence that says "**expression", not "*expression"."""
    return {m.group().lower() for m in _STARRED.finditer(text)}


@dataclass
class Asked:
    words: set[str]  # the stems of the question's words, small words and prepositions aside
    named: set[str]  # those written with a capital (not the question's first word) or a digit: "CNRI", "1.6.1"
    where: set[str] = field(default_factory=set)  # the labels of the sections it names ("6" in "in section 6"):
    # said in the section's heading, not in its sentences, so asked of the passage, not of the sentence


def asked(question: str, form: Callable[[str], str] = root) -> Asked:
    """The question's words, small words, prepositions and the words of its question phrase aside."""
    ws = words(question)
    place = {k for k in range(1, len(ws)) if ws[k - 1][0] in SECTIONS and any(ch.isdigit() for ch in ws[k][0])}
    phrase = _phrase(ws) | place
    wanted = {form(w) for k, (w, _, _) in enumerate(ws) if w not in _STOP and w not in PREPOSITIONS and k not in phrase}
    named = {form(w) for k, (w, s, _) in enumerate(ws) if form(w) in wanted and s > 0 and k not in phrase and (
        question[s].isupper() or any(ch.isdigit() for ch in w))}
    return Asked(wanted | starred(question), named, {form(ws[k][0]) for k in place})


def _phrase(ws: list[tuple[str, int, int]]) -> set[int]:
    """The words that only make the question a question, which the answer does not repeat: "long" in "How long"
    ("perpetual", "three years"), "kind" in "What kind of organization" ("a non-profit organization")."""
    return {k for k in range(1, len(ws)) if (ws[k - 1][0] == "how" and ws[k][0] in MEASURES) or (
        ws[k][0] in SORTS and ws[k - 1][0] in ("what", "which") and k + 1 < len(ws) and ws[k + 1][0] == "of")}


def weights(a: Asked, document: list[str]) -> dict[str, float]:
    """Each of the question's words other than names and numbers, weighed by how rarely the document's sentences
    hold it: log((N + 1) / (n + 1)), N sentences, n of them holding it. In every sentence: 0; in none: the most."""
    held = [stems(text[x:y]) for text in document for x, y in pairwise(sentence_bounds(text))]
    return {w: math.log((len(held) + 1) / (1 + sum(w in h for h in held))) for w in a.words - a.named}


def holds(weight: dict[str, float], text: str) -> float:
    """The weight of the question's words (other than its names and numbers) that `text` holds."""
    return sum(weight[w] for w in stems(text) & weight.keys())


def passage(question: str, passages: list[str], weight: dict[str, float]) -> int | None:
    """The passage (most relevant first: the earlier wins a tie) that holds every name and number of the question
    and the most weight of its other words; None where none holds any. The model's relevance can rank a passage
    that says the question's rare words ("str.join", "Copyright" also means) below one about the same topic."""
    a = asked(question)
    best: tuple[float, int] | None = None
    for n, text in enumerate(passages):
        mine = stems(text)
        held = sum(weight[w] for w in mine & weight.keys())
        if a.named | a.where <= mine and held > 0 and (best is None or held > best[0]):
            best = (held, n)
    return None if best is None else best[1]


@dataclass
class Held:
    passage: int  # index into the passages searched
    sentence: tuple[int, int]  # its character span in that passage
    held: float  # the weight of the question's words other than names and numbers it holds
    asked: float  # of how much


def sentence(question: str, passages: list[str], weight: dict[str, float], listed: bool = False) -> Held | None:
    """The sentence of `passages` (most relevant first: the earlier wins a tie) that holds every name and number of
    the question and most of the weight of its other words (`weights`), more than half of it; None when none does.
    `listed` (a list question): a sentence ending with a colon and the next are one, and of the sentences holding
    more than half, one that introduces marked items (items.py) comes first: a list is answered by its introduction
    ("... supplement the terms of this License with terms:", for which terms may be added) before a sentence that
    holds a little more of the question's words and lists nothing."""
    found = sentences(question, passages, weight, listed)
    return found[0] if found else None


def sentences(question: str, passages: list[str], weight: dict[str, float], listed: bool = False) -> list[Held]:
    """`sentence`, and with `listed` also every other sentence that holds as much of the question's words: parallel
    sentences each answer ('"break" may only occur ... nested in a loop', '"continue" may only occur ...')."""
    a = asked(question)
    total = sum(weight.values())
    # rank (introduces items, weight held: rounded, so parallel sentences tie), passage, its sentence bounds, index
    found: list[tuple[tuple[bool, float], int, list[int], int]] = []
    for n, text in enumerate(passages):
        if a.where and not a.where <= stems(text):  # a section's label is in its heading, in the passage
            continue
        bounds = _bounds(text, listed)
        for k in range(len(bounds) - 1):
            mine = stems(text[bounds[k]:bounds[k + 1]])
            if a.named <= mine:
                held = round(sum(weight[w] for w in mine & weight.keys()), 6)
                lists = listed and items.colon(text[bounds[k]:], bounds[k + 1] - bounds[k]) is not None
                found.append(((2 * held > total and lists, held), n, bounds, k))
    found.sort(key=lambda f: (not f[0][0], -f[0][1]))  # stable: the earlier passage and sentence win a tie
    if not found or 2 * found[0][0][1] <= total:
        return []
    out = []
    for rank, n, bounds, k in found if listed else found[:1]:
        if rank != found[0][0]:
            break
        text = passages[n]
        while k + 2 < len(bounds) and _heading(text[bounds[k]:bounds[k + 1]], question):
            k += 1
        if not _heading(text[bounds[k]:bounds[k + 1]], question):
            out.append(Held(n, (bounds[k], len(text[:bounds[_run_on(text, bounds, k, a, listed)]].rstrip())),
                            rank[1], total))
    return out


def _run_on(text: str, bounds: list[int], k: int, a: Asked, listed: bool) -> int:
    """Where a lookup's held sentence ends: its clause, and the clauses after a semicolon in the same sentence while
    the next holds a word of the question that those before it lack. "Some objects contain references to other
    objects;" holds what the question says of the objects, "these are called *containers*." holds "called", and
    the answer; "(b) You must cause any modified files to carry prominent notices ...;" holds all of "What must any
    modified files carry?", and "and (c) You must retain ..." is the next item, not its answer."""
    end = k + 1
    while not listed and end + 1 < len(bounds) and text[:bounds[end]].rstrip(" ").endswith(";") and (
            stems(text[bounds[end]:bounds[end + 1]]) & (a.words - stems(text[bounds[k]:bounds[end]]))):
        end += 1
    return end


def _bounds(text: str, listed: bool) -> list[int]:
    bounds = sentence_bounds(text)
    if not listed:
        return bounds
    return [b for k, b in enumerate(bounds) if k in (0, len(bounds) - 1) or not text[:b].rstrip().endswith(":")]


def _heading(text: str, question: str) -> bool:
    return echoes(text, question) or len(words(text)) < HEADING_WORDS
