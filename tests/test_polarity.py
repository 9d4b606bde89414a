"""Yes or no from the sentence that holds the question's words (longdoc/polarity.py): pure text, no model."""

from __future__ import annotations

import pytest

from sentiric_cli.longdoc.polarity import answer

GPL = ("Everyone is permitted to copy and distribute verbatim copies of this license document, but changing it is "
       "not allowed. You are not required to accept this License in order to receive or run a copy of the Program.")
TYPES = "Tuples are immutable sequences. Mappings are mutable objects."
PASS = '"pass" is a null operation — when it is executed, nothing happens. It is useful as a placeholder.'
APACHE = ("Each Contributor hereby grants to You a perpetual, worldwide, non-exclusive, no-charge, royalty-free, "
          "irrevocable copyright license.")
HISTORY = "Python was created in the early 1990s by Guido van Rossum at CWI in the Netherlands."


def said(question: str, *passages: str) -> str | None:
    found = answer(question, list(passages))
    return found.answer if found else None


@pytest.mark.parametrize("question, passage, expected", [
    ("Is changing the license document allowed?", GPL, "No"),  # "not" among the question's words
    ("Are you required to accept this License in order to receive a copy of the Program?", GPL, "No"),
    ("Is everyone permitted to copy verbatim copies of this license document?", GPL, "Yes"),
    ("Are tuples mutable?", TYPES, "No"),  # "immutable" denies "mutable"
    ("Are mappings mutable objects?", TYPES, "Yes"),
    ("Is pass a null operation?", PASS, "Yes"),  # "nothing happens" is past the words the question asks about
    ("Is the copyright license granted by each Contributor royalty-free?", APACHE, "Yes"),  # "no-charge": no denial
    ("Is the copyright license granted by each Contributor exclusive?", APACHE, "No"),  # "non-exclusive" denies it
    ("Was Python created at CWI?", HISTORY, "Yes"),
    ("Was Python created at CNRI?", HISTORY, "No"),  # the rest of the claim, of another name
    ("Was Python not created at CWI?", HISTORY, "No"),  # a negated question turns the answer round
])
def test_the_sentence_that_holds_the_claim_says_yes_or_its_negation_says_no(question, passage, expected):
    assert said(question, passage) == expected


def test_a_question_asked_with_a_compound_negation_is_not_denied_by_it():
    text = "In 2001 the Python Software Foundation was formed, a non-profit organization."
    assert said("Is the Python Software Foundation a non-profit organization?", text) == "Yes"


def test_without_in_the_question_is_a_condition_not_a_denial():
    text = "By default, runs of consecutive whitespace are regarded as a single separator."
    assert said("Does split() without a separator regard runs of consecutive whitespace as a single separator?",
                text) == "Yes"


def test_no_sentence_that_holds_more_than_half_of_the_question_says_nothing():
    # "pass key" is half of "pass key prime number": the sentence names the subject, not the claim
    assert answer("Is the pass key a prime number?", ["Filler. The pass key is 48213. Remember it."]) is None
    assert answer("Is the sky green?", [GPL, TYPES]) is None
    assert answer("Is it?", [GPL]) is None  # nothing asked beyond small words


def test_the_sentence_holding_most_of_the_question_answers_and_an_earlier_passage_wins_a_tie():
    q = "Is changing the license document allowed?"
    found = answer(q, ["Changing the license document is allowed here.", GPL])
    assert found is not None and (found.passage, found.answer, found.held, found.asked) == (0, "Yes", 4, 4)
    found = answer(q, [TYPES, GPL])
    assert found is not None and found.passage == 1
    s, e = found.sentence
    assert GPL[s:e].startswith("Everyone is permitted") and GPL[s:e].endswith("changing it is not allowed.")
