"""A partial answer checked against its passage (longdoc/evidence.py), and a question's kind (longdoc/kinds.py):
text work, no model."""

from __future__ import annotations

import pytest

from sentiric_cli.longdoc.evidence import echoes, first_sentence, locate, normalized, not_found, parts
from sentiric_cli.longdoc.kinds import detect

PASSAGE = ("The library opens at nine.  Its roof was repaired last year by the\ntown council, which paid for new "
           "tiles. Visitors may borrow 12 books; the fee is 1283 cents.")


def test_a_quote_is_found_on_word_boundaries_case_and_punctuation_aside():
    text, _ = normalized(PASSAGE)
    at = locate("The Town Council", text)
    assert at is not None and text[at.start:at.end] == "the town council"
    assert text[slice(*at.sentence)] == "Its roof was repaired last year by the town council, which paid for new tiles."
    assert locate("12", text) is not None and locate("128", text) is None  # "12" is a word; "128" only part of one
    assert locate("1283 cents", text) is not None


def test_a_small_copying_slip_is_tolerated_an_invention_is_not():
    text, _ = normalized(PASSAGE)
    slip = locate("its roof was repaired last year by the town councel", text)  # one word in ten misspelt
    assert slip is not None and text[slip.start:slip.end].startswith("Its roof")
    assert locate("the mayor repaired the roof", text) is None
    assert locate("Paris", text) is None and locate("", text) is None


def test_a_long_word_copied_one_letter_wrong_is_the_passages_word_a_short_one_is_not():
    text = "If the expression is false: raise AssertionError(expression2). The parts are in Lyon."
    at = locate("AssertionError(expression1)", text)  # both words of two would be needed without the slip
    assert at is not None and text[at.start:at.end] == "AssertionError(expression2"
    assert locate("licence", "The license is in Lyon.") is not None
    assert locate("Paris", text) is None  # one letter from "parts", but a short word: an invention, not a slip
    # the slip is judged where it was copied from, even when the passage says the miscopied word elsewhere
    form = 'The form "assert expression1, expression2" is: if not expression1: raise AssertionError(expression2).'
    at = locate("AssertionError(expression1)", form)
    assert at is not None and form[at.start:at.end] == "AssertionError(expression2"


def test_a_changed_article_preposition_or_pronoun_is_no_slip_a_changed_negation_is():
    text, _ = normalized("Copies go within such NOTICE file. You are reinstated if you cure the violation prior "
                         "to 30 days after your receipt of the notice. Release 1.6.1 is GPL-compatible.")
    at = locate("within 30 days after the receipt of the notice", text)  # 7 of 9 words: too few, were they counted
    assert at is not None and text[at.start:at.end] == "30 days after your receipt of the notice"
    at = locate("in the NOTICE file", text)  # 2 of 4: "in" and "the" are not the passage's, and say nothing
    assert at is not None and text[at.start:at.end] == "NOTICE file"
    assert locate("not GPL-compatible", text) is None  # "not" is no slight word: it turns the fact round
    assert locate("30 years after the receipt", text) is None  # a changed word that says something is counted


def test_a_quote_may_skip_an_aside():
    text, _ = normalized("If you cease all violation, your license from a particular copyright holder is reinstated.")
    assert locate("your license is reinstated", text) is not None


def test_run_on_answers_keep_their_first_sentence_or_line():
    assert first_sentence(" 11514. A letter arrived with a foreign stamp.") == "11514."
    assert first_sentence("the town council\nQuestion: who") == "the town council"
    assert first_sentence("1. The pass key is 5. Remember it.") == "The pass key is 5."
    assert first_sentence("Answer: 16180") == "16180"  # a chat model writes the cue back
    assert first_sentence("3.5 mm wide, e.g. the small one. Next") == "3.5 mm wide, e.g. the small one."


@pytest.mark.parametrize("said", ["none", "None.", "N/A", "unknown", "Not mentioned.", "The excerpt does not say.",
                                  "It is not stated", "I don't know", ""])
def test_not_found_in_its_usual_forms(said):
    assert not_found(said)


@pytest.mark.parametrize("said", ["nonetheless, the roof", "Nothingham", "1.", "the town council"])
def test_answers_are_not_mistaken_for_not_found(said):
    assert not not_found(said)


def test_an_answer_made_of_the_questions_words_is_an_echo():
    assert echoes("the title of section 8.", "What is the title of section 8?")
    assert not echoes("Termination", "What is the title of section 8?")
    assert parts("31877 and 31878") == ["31877", "31878"] and parts("A, B; C or D") == ["A", "B", "C", "D"]


def test_normalized_text_maps_back_to_the_original():
    text, where = normalized(PASSAGE)
    i = text.index("town council")
    assert PASSAGE[where[i]:where[i + len("town council") - 1] + 1] == "town council"
    assert "\n" not in text and "  " not in text
    para, _ = normalized("A heading\n=====\n\n  Python was created\nby Guido.")
    assert para == "A heading =====\nPython was created by Guido."
    at = locate("Guido", para)
    assert at is not None and para[slice(*at.sentence)] == "Python was created by Guido."


@pytest.mark.parametrize(("question", "kind"), [
    ("What is the pass key?", "lookup"), ("Who created Python?", "lookup"), ("In which year was it formed?", "lookup"),
    ("What are the two pass keys?", "list"), ("List the conditions.", "list"), ("Which clauses can a try have?", "list"),
    ("Name all the owners.", "list"), ("Summarize the document.", "overview"), ("What is this text about?", "overview"),
    ("What are the main topics?", "overview"), ("Is the program free?", "yesno"), ("Does it allow copies?", "yesno"),
    ("Is it red or blue?", "lookup"), ('Do "and" and "or" restrict the value they return?', "yesno"),
    ("Which methods return view objects?", "list"), ("What kinds of literals does Python support?", "list"),
    ("Which company was a sponsoring member?", "lookup"), ("Which court has jurisdiction?", "lookup"),
    ("Which status is shown?", "lookup"), ("Which court settles disputes?", "lookup"),
    ("What conditions must you meet?", "list"), ("What happens when it ends?", "lookup"),
    ("Which built-in objects are false?", "list")])
def test_the_kind_of_a_question_comes_from_its_wording(question, kind):
    assert detect(question) == kind
