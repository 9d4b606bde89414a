"""What kind of question is asked of a long document: each kind is read and reduced on purpose (protocol.py).

- lookup: one fact (a number, name, date, phrase or sentence): the best-supported answer.
- list: facts spread over the document, all of them: the union of the distinct sentences that hold supported answers.
- overview: what the document (or a part of it) is about: partial summaries collapsed in rounds.
- yesno: a question answered yes or no, from the sentence that bears on it (polarity.py).

A question whose answer is not in the document is not a kind one can see in it: any lookup, list or yes/no
question may turn out absent, and then the answer says so (NOT_FOUND) and invents nothing.
"""

from __future__ import annotations

import re

KINDS = ("lookup", "list", "overview", "yesno")

_OVERVIEW = re.compile(
    r"\b(summar\w*|overview|outline|gist|main (?:points?|ideas?|topics?|themes?)|key (?:points?|topics?|ideas?)|"
    r"what (?:is|are) (?:this|the) (?:document|text|file|book|chapter|section|article|essay|license)\w* (?:about|for)|"
    r"what does (?:this|the) (?:document|text|file|book|chapter|section|article|essay|license) (?:cover|say|discuss)|"
    r"topics? (?:of|in|does))\b", re.IGNORECASE)
_LIST = re.compile(
    r"^\s*(?:list|name|enumerate|give)\b|\b(?:all|every|each)\s+(?:the\s+)?\w+|\bwhich\s+[\w-]+(?:\s+\w+)?\s+(?:are|were)\b|"
    # "Which terms may ...", "What conditions must ...": a plural, then a verb that asks of several
    r"\b(?:which|what)\s+(?:\w+\s+)?\w+[^\Ws]s\s+(?:are|were|may|can|could|do|did|have|had|must|should|will|would)\b|"
    r"\bexamples?\s+of\b|\bwhat\s+(?:kinds|types|sorts)\s+of\b|"
    # "Which methods return ...": a plural right after "which" asks for several; not "Which status is", and not a
    # verb after a singular ("Which court settles ...")
    r"^\s*which\s+(?!(?:is|was|has|does)\b)\w+[^\Ws]s\b(?!\s+(?:is|was|has)\b)|"
    r"\bwhat\s+(?:are|were)\s+the\b|\b(?:two|three|four|five|six|seven|eight|nine|ten|several|various)\s+\w+s\b",
    re.IGNORECASE)
# "Is it red or blue?" asks which, not whether; a quoted "or" is a word talked about ('Do "and" and "or" restrict ...?')
_YESNO = re.compile(r"^\s*(?:is|are|was|were|does|do|did|can|could|may|might|must|shall|should|will|would|has|have|had)"
                    r"\b(?!.*(?<![\"'“‘])\bor\b(?![\"'”’]).*\?)", re.IGNORECASE)


def detect(question: str) -> str:
    """The kind a question asks for, from its wording (a user may set it instead: --kind, the `sentiric` field)."""
    q = question.strip()
    if _OVERVIEW.search(q):
        return "overview"
    if _YESNO.match(q):
        return "yesno"
    if _LIST.search(q):
        return "list"
    return "lookup"
