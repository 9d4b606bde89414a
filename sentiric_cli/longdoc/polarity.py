"""Yes or no from the sentence that holds the question's words: pure text work, no model.

A yes/no question restates a claim ("Is changing the license document allowed?"); a document that settles it
says that claim in a sentence of its own, denied when the answer is no ("changing it is not allowed", "You are
not required to accept this License", "Tuples are immutable"). So the answer is read off the sentence of the
passages read that holds most of the question's words, more than half of them:
- "no" when a negation stands among those words ("not", "cannot", "without", "immutable" for "mutable"), or when
  the sentence says the rest of the claim but not a name or number the question asks about ("created ... at CWI",
  for "Was Python created at CNRI?");
- "yes" otherwise; a question that is itself negated ("Is it not ...?") turns both round.
When no sentence holds more than half of the question's words, it says nothing, and the model's own lean
decides (mapreduce.add_yesno). It cannot see a contradiction in other words ("in the autumn" against "every
spring"): then it says yes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentiric_cli.longdoc.evidence import sentence_bounds, words
from sentiric_cli.longdoc.held import asked, starred, stem

# a negation in the evidence: "not", "no", "cannot", "without warranties", "nothing"
_NEGATION = set("not no non never cannot nor neither none nothing without".split())
# in a question, "without" sets a condition ("split() without a separator"), it does not deny the claim
_QUESTION_NEGATION = set("not no never".split())
_PREFIXES = ("non", "un", "in", "im", "ir", "il", "dis")  # "immutable" denies "mutable"
_BEFORE = 3  # a negation a few words before the first of the question's words bears on them ("is not allowed")


@dataclass
class Polar:
    passage: int  # index into the passages searched
    answer: str  # "Yes" or "No"
    sentence: tuple[int, int]  # the sentence's character span in that passage
    held: int  # how many of the question's words it holds
    asked: int  # of how many


def answer(question: str, passages: list[str]) -> Polar | None:
    """Yes or no from the sentence of `passages` (most relevant first: the earlier wins a tie) that holds most of
    the question's words; None when none holds more than half of them."""
    q_words = words(question)[1:]  # the auxiliary that opens it ("Is", "May") aside
    q_neg = any(w in _QUESTION_NEGATION or w.endswith("n't") for w, _, _ in q_words)
    q = asked(question, stem)
    # named: a name or number, "CNRI", "1.6.1", "48213"; a starred name ("**kwargs") is counted as its word here
    wanted, named = q.words - starred(question), q.named
    if not wanted:
        return None
    lowered = question.lower()
    best: Polar | None = None
    for n, text in enumerate(passages):
        bounds = sentence_bounds(text)
        for a, b in zip(bounds, bounds[1:], strict=False):
            sentence = text[a:b]
            ws = words(sentence)
            hits, found, denied = [], set(), False
            for k, (w, _, _) in enumerate(ws):
                s = stem(w)
                if s not in wanted:  # "immutable" holds "mutable", denied
                    s = next((x for p in _PREFIXES if w.startswith(p) and (x := stem(w[len(p):])) in wanted), "")
                    denied |= bool(s) and s not in found
                if s and s not in found:  # each of the question's words once, where it first appears
                    found.add(s)
                    hits.append(k)
            if not hits or (best is not None and len(hits) <= best.held):
                continue
            lo, hi = max(0, hits[0] - _BEFORE), hits[-1]
            denied |= any(_denies(ws, k, sentence, lowered, wanted) for k in range(lo, hi + 1))
            denied |= bool(named - found)  # it says the rest of the claim of something else
            best = Polar(n, "No" if denied != q_neg else "Yes", (a, len(text[:b].rstrip())), len(hits), len(wanted))
    return best if best is not None and 2 * best.held > best.asked else None


def _denies(ws: list[tuple[str, int, int]], k: int, sentence: str, question: str, wanted: set[str]) -> bool:
    """Whether word k is a negation. One joined to the next word by a hyphen denies only that word, and only when
    the question asks about it without the negation: "non-exclusive" denies "exclusive?", "no-charge" denies
    nothing asked, "non-profit" is what "a non-profit organization?" asks."""
    w, _, end = ws[k]
    if not (w in _NEGATION or w.endswith("n't")):
        return False
    if sentence[end:end + 1] != "-" or k + 1 == len(ws):
        return True
    nxt = ws[k + 1][0]
    return stem(nxt) in wanted and f"{w}-{nxt}" not in question
