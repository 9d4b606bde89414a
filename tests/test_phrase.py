"""Where a quote's phrase starts (longdoc/phrase.py): pure text, no model, the same on every CPU."""

from __future__ import annotations

import pytest

from sentiric_cli.longdoc import phrase


def shown(question: str, sentence: str, quote: str) -> str:
    at = sentence.index(quote)
    return sentence[phrase.start(question, sentence, 0, at):at + len(quote)]


@pytest.mark.parametrize(("question", "sentence", "quote", "expected"), [
    # the words the reader skipped say something: the answer starts after the question's last word
    ("What kind of debugger does the pdb module define?",
     'The module "pdb" defines an interactive source code debugger for Python programs.',
     "debugger for Python programs", "an interactive source code debugger for Python programs"),
    ("What does entering a blank line do?", "Entering a blank line repeats the last command entered.",
     "the last command entered", "repeats the last command entered"),
    # ... or after a clause's mark; a quantifier says something
    ("How often is the value of a display expression shown?",
     "Display the value of *expression* if it changed, each time execution stops in the current frame.",
     "time execution stops in the current frame", "each time execution stops in the current frame"),
])
def test_a_quote_that_starts_inside_its_phrase_is_shown_from_the_phrases_start(question, sentence, quote, expected):
    assert shown(question, sentence, quote) == expected


@pytest.mark.parametrize(("question", "sentence", "quote"), [
    # only joining words between: the quote as written
    ("Where did the Python core development team move in May 2000?",
     "In May 2000, the Python core development team moved to BeOpen.com to form the BeOpen PythonLabs team.",
     "BeOpen.com"),
    ("What does the continue statement continue with?",
     '"continue" continues with the next cycle of the nearest enclosing loop.', "the next cycle of the nearest"),
    ("What happens to your license if you stop violating it?",
     "However, if you cease all violation of this License, then your license from a particular copyright holder is "
     "reinstated.", "your license from a particular copyright holder is reinstated"),
    # a clause's mark bounds the phrase: the aside before it is not the answer
    ("In which country was Python created?",
     "Python was created in the early 1990s by Guido van Rossum at Stichting Mathematisch Centrum (CWI, see "
     "https://www.cwi.nl) in the Netherlands as a successor of a language called ABC.", "in the Netherlands"),
    # a joining word right before the quote: its phrase is whole, though content words come before it
    ("In which town is CNRI located?", "CNRI has an office in Reston, VA.", "Reston, VA"),
    ("What does str.strip() remove?",
     "Return a copy of the string with the leading and trailing characters removed.",
     "the leading and trailing characters removed"),
    # the quote opens the sentence
    ("What is the pass key?", "The pass key is 48213.", "The pass key is 48213"),
])
def test_a_quote_whose_phrase_is_whole_is_shown_as_written(question, sentence, quote):
    assert shown(question, sentence, quote) == quote


def test_the_sentence_bounds_the_phrase_in_a_longer_text():
    text = "Edit the notes first. Entering a blank line repeats the last command entered."
    at, s = text.index("the last command"), text.index("Entering")
    assert text[phrase.start("What does it do?", text, s, at):] == "Entering a blank line repeats the last command entered."
