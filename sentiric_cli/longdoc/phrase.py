"""Where a quote's phrase starts: pure text work, no model.

The small reader often starts its quote inside the phrase that answers, after the words that make it the answer:
"debugger for Python programs" from "The module pdb defines an interactive source code debugger for Python
programs", for what kind of debugger pdb defines; "the last command entered" from "Entering a blank line repeats
the last command entered", for what a blank line does. The words it skipped sit between the question's own words
(or a clause's mark) and the quote. Where the word right before the quote says something, the answer starts at the
first word after the question's: "an interactive source code debugger for Python programs", "repeats the last
command entered", "each time execution stops" (a quantifier, a negation or a modal verb says something). Where it
only joins ("moved to BeOpen.com", "an office in Reston, VA", "then your license ..."), the quote's phrase is whole.
Nothing is counted or fitted: the question's words, the clause's marks and the joining words are what bound it.
"""

from __future__ import annotations

import re

from sentiric_cli.longdoc import held
from sentiric_cli.longdoc.evidence import _SLIGHT, words

# a clause's marks: a phrase does not run back over them ("(CWI, see https://www.cwi.nl) in the Netherlands")
_MARK = re.compile(r"[,;:()\[\]{}]")
# words that only join ("to BeOpen.com", "then your license ...", "If the work has ..."): the quote's phrase is whole
_JOINING = _SLIGHT | held.PREPOSITIONS | set("then so if when where while which who whom whose what how why but "
                                             "than".split())


def start(question: str, text: str, sentence: int, quote: int) -> int:
    """The character offset in `text` where the answer that the quote at `quote` belongs to starts: the first word
    after the question's last word or the last clause mark before the quote (else the sentence's start, at
    `sentence`), where the word right before the quote says something; else `quote` itself."""
    asked = held.asked(question).words
    gap = text[sentence:quote]
    after = max([e for w, _, e in words(gap) if held.root(w) in asked]
                + [m.end() for m in _MARK.finditer(gap)], default=0)
    skipped = [(w, s) for w, s, _ in words(gap[after:])]
    # the quote's phrase is whole where a joining word comes right before it: "office in | Reston, VA", "the
    # Commonwealth of | Virginia" (a place the question's words did not bound); the reader cut "code | debugger"
    if not skipped or skipped[-1][0] in _JOINING:
        return quote
    return sentence + after + skipped[0][1]
