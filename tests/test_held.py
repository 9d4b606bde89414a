"""The sentence that holds a question's words (longdoc/held.py): pure text, no model, the same on every CPU."""

from __future__ import annotations

from sentiric_cli.longdoc import held

LICENSE = [
    "(a) You must give any other recipients of the Work or Derivative Works a copy of this License; and "
    "(b) You must cause any modified files to carry prominent notices stating that You changed the files; and "
    "(c) You must retain, in the Source form of any Derivative Works that You distribute, all copyright, patent, "
    "trademark, and attribution notices from the Source form of the Work.",
    "This program is free software: you can redistribute it under the terms of the GNU General Public License as "
    "published by the Free Software Foundation, either version 3 of the License, or any later version.",
    "(2) According to Richard Stallman, 1.6.1 is not GPL-compatible, because its license has a choice of law clause.",
]


def said(question: str, passages: list[str], document: list[str] | None = None, listed: bool = False) -> str | None:
    weight = held.weights(held.asked(question), document or passages)
    h = held.sentence(question, passages, weight, listed)
    return None if h is None else passages[h.passage][h.sentence[0]:h.sentence[1]]


def test_the_sentence_that_holds_most_of_the_questions_words_not_the_first_that_holds_some():
    assert said("What must any modified files carry?", LICENSE) == (
        "and (b) You must cause any modified files to carry prominent notices stating that You changed the files;")


def test_every_name_and_number_asked_must_be_there_and_the_first_word_is_no_name():
    # "According" opens the question: not a name. "1.6.1" and "GPL" are, and the sentence holds them
    assert said("According to whom is release 1.6.1 not GPL-compatible?", LICENSE) == LICENSE[2]
    assert held.asked("According to whom is release 1.6.1 not GPL-compatible?").named == {"1", "6", "gpl"}
    assert said("According to whom is release 2.0 not GPL-compatible?", LICENSE) is None  # another release


def test_a_sentence_that_holds_only_the_names_does_not_answer():
    """The Foundation is there, what is asked about it is not."""
    for q in ("Which city is the Free Software Foundation located in?",
              "What is the email address of the Free Software Foundation?"):
        assert said(q, LICENSE) is None


def test_a_word_in_every_sentence_weighs_nothing_and_a_heading_gives_way_to_the_next_sentence():
    """"str" is in every sentence of the string methods: "strip" tells the one asked about. Its sentence is a heading
    (fewer than four words), so the sentence after it answers."""
    passage = ('str.split(sep=None) Return a list of the words in the string.\n'
               'str.strip([chars])\n'
               'Return a copy of the string with the leading and trailing characters removed.\n'
               'See "str.removesuffix()" for a str method that will remove a single suffix string.')
    others = [f"str.method{i}() Return a str built from the str given." for i in range(20)]
    question = "What does str.strip() remove?"
    weight = held.weights(held.asked(question), [passage, *others])
    assert weight["str"] < weight["strip"] / 20
    assert said(question, [passage], [passage, *others]) == (
        "Return a copy of the string with the leading and trailing characters removed.")
    assert held.stems("removed") == held.stems("remove") == {"remov"}  # the root drops a final "e"


def test_a_question_about_what_the_document_never_says_finds_no_sentence():
    passages = ["The pass key is 48213. Remember it.", "The grass is green and the sky is blue."]
    assert said("What is the pass key?", passages) == "The pass key is 48213."
    assert said("What is the pass key of the bank vault?", passages) is None  # two words it never says


def test_a_heading_of_the_questions_words_alone_gives_way_and_nothing_after_it_is_no_answer():
    statement = 'The "pass" statement\npass_stmt ::= "pass"\n"pass" is a null operation — when it is executed, nothing happens.'
    assert said("What does the pass statement do?", [statement]) == (
        '"pass" is a null operation — when it is executed, nothing happens.')
    assert said("What does the pass statement do?", ['The "pass" statement\npass_stmt ::= "pass"']) is None


def test_a_tie_goes_to_the_more_relevant_passage():
    first, second = "The fee is due within thirty days.", "A fee is due within thirty days of notice."
    document = [first, second, *["The grass is green and the sky is blue."] * 10]
    assert said("When is the fee due?", [first, second], document) == first
    assert said("When is the fee due?", [second, first], document) == second
    # in every sentence of the document, the question's words tell none from another
    assert said("When is the fee due?", [first, second]) is None


def test_the_passage_that_holds_most_of_the_questions_rare_words_names_required_ties_to_the_more_relevant():
    """ "str" is in every passage of the string methods and tells none from another; "join" tells the one asked
    about. A passage without the question's name never counts, and one holding none of its words is no pick."""
    methods = [f"str.method{i}() Return a copy of the str with its characters changed." for i in range(8)]
    join = "str.join(iterable) Return a string which is the concatenation of the strings in iterable."
    passages = [*methods[:3], join, *methods[3:]]  # most relevant first: the model ranked join fourth
    question = "What does str.join() return?"
    weight = held.weights(held.asked(question), passages)
    assert held.passage(question, passages, weight) == 3
    for other in ("What does str.join() return in Python 2?", "What colour is the sky?"):  # a name none holds; no word
        assert held.passage(other, passages, held.weights(held.asked(other), passages)) is None
    fees = ["The fee is due within thirty days.", "A fee is due within thirty days of notice.",
            *["The grass is green and the sky is blue."] * 10]
    fee = held.weights(held.asked("When is the fee due?"), fees)
    assert held.passage("When is the fee due?", fees, fee) == 0
    assert held.passage("When is the fee due?", [fees[1], fees[0], *fees[2:]], fee) == 0


def test_for_a_list_a_sentence_ending_with_a_colon_runs_on_through_the_items_it_introduces():
    """A list's items follow the words that introduce them. Read as sentences, the introduction restates the question
    and gives way, the items are too short to say anything, and what comes after them answers."""
    passage = ("Any object can be tested for truth value. Here are the values that are considered false: "
               '"None" and "False". Zero of any numeric type is false too. Other objects are true.')
    document = [passage, *["The grass is green and the sky is blue."] * 10]
    question = "Which values are considered false?"
    assert said(question, [passage], document, listed=True) == (
        'Here are the values that are considered false: "None" and "False".')
    assert said(question, [passage], document) == "Zero of any numeric type is false too."  # a lookup's sentences


def test_the_words_that_only_make_it_a_question_are_not_asked():
    """The answer says "perpetual" for "How long", "a non-profit organization" for "What kind of organization":
    neither repeats the question phrase's word, which a document seldom says and which would weigh most."""
    grant = ["3. Grant of Patent License. Subject to the terms and conditions of this License, each Contributor "
             "hereby grants to You a perpetual, worldwide, non-exclusive, no-charge, royalty-free, irrevocable patent "
             "license to make, use, sell and import the Work."]
    document = grant + ["You may add Your own copyright statement to Your modifications."] * 20
    question = "How long does the patent license granted by a Contributor last?"
    assert "long" not in held.asked(question).words and "last" in held.asked(question).words
    assert said(question, grant, document).startswith("Subject to the terms and conditions of this License, each")
    psf = ["In 2001, the Python Software Foundation was formed, a non-profit organization created to own Python-"
           "related Intellectual Property. Zope Corporation was a sponsoring member of the PSF."]
    a = held.asked("What kind of organization is the Python Software Foundation?")
    assert a.words == {"organization", "python", "softwar", "foundation"} and "kind" not in a.named
    assert said("What kind of organization is the Python Software Foundation?", psf).startswith("In 2001, the Python")
    # "many" stays asked: a sentence that holds a number need not say how many
    assert "many" in held.asked("How many developers moved to BeOpen.com?").words
    assert said("How many kinds of organization is the Python Software Foundation?", psf) is None


def test_a_list_is_answered_by_its_introduction_first_and_parallel_sentences_all_answer():
    """Of the sentences that hold more than half of a list question's words, the one whose colon a marked item
    follows comes first, though another holds a little more ("additional"); sentences that hold as much each answer."""
    passage = ("You may place additional permissions on material, added by you to a covered work, for which you have "
               "permission.\nFor material you add to a covered work, you may supplement the terms of this License "
               "with terms:\na) Disclaiming warranty; or\nb) Requiring preservation of legal notices.")
    document = [passage, *["The grass is green and the sky is blue."] * 10, "Additional terms apply to the work."]
    question = "Which additional terms may you add to material you add to a covered work?"
    assert said(question, [passage], document, listed=True) == (
        "For material you add to a covered work, you may supplement the terms of this License with terms:\n"
        "a) Disclaiming warranty;")
    assert said(question, [passage], document).startswith("You may place additional permissions")  # a lookup's
    # numbered items: "steps:" and "1." read as one sentence, the item's words as the next; still an introduction
    steps = ("The basic steps of an import statement are described below in detail.\nAn import statement is "
             "executed in two steps:\n1. find a module\n2. define a name")
    weight = held.weights(held.asked("What are the steps of a basic import statement?"), [steps, *document])
    found = held.sentences("What are the steps of a basic import statement?", [steps], weight, listed=True)
    assert steps[slice(*found[0].sentence)] == "An import statement is executed in two steps:\n1."
    loops = ['"break" may only occur nested in a loop. It ends the loop.',
             '"continue" may only occur nested in a loop. It goes on with the next cycle.']
    weight = held.weights(held.asked("Which statements may occur only nested in a loop?"), [*loops, *document])
    found = held.sentences("Which statements may occur only nested in a loop?", loops, weight, listed=True)
    assert [loops[h.passage][h.sentence[0]:h.sentence[1]] for h in found] == [
        '"break" may only occur nested in a loop.', '"continue" may only occur nested in a loop.']
    assert len(held.sentences("Which statements may occur only nested in a loop?", loops, weight)) == 1  # a lookup


def test_a_sections_label_is_asked_of_the_passage():
    """"6" in "listed in section 6" is in the section's heading, not in the sentence that lists: the passage must hold
    it."""
    question = "What are the ways of conveying object code listed in section 6?"
    a = held.asked(question)
    assert a.where == {"6"} and "6" not in a.words and {"section", "convey"} <= a.words
    six = "6. Conveying Non-Source Forms.\nYou may convey object code in one of these ways:\na) Convey it on a disk."
    five = six.replace("6.", "5.")
    document = [six, *["The grass is green and the sky is blue."] * 10]
    weight = held.weights(a, document)
    assert held.passage(question, [five, six], weight) == 1
    assert said(question, [five], document, listed=True) is None
    assert said(question, [six], document, listed=True).startswith("You may convey object code in one of these ways:")


def test_a_lookups_held_clause_runs_on_past_a_semicolon_while_the_next_clause_holds_a_word_it_lacks():
    """A semicolon ends a clause, not what a sentence says: "these are called containers" holds "called" (and the
    answer), which the clause before it lacks. A clause that holds all the question asks stays alone ("and (c) ..."
    is the next item), and a paragraph after a semicolon is not its sentence's run-on."""
    passage = ("Objects are never destroyed explicitly. Some objects contain references to other objects; these are "
               "called containers; examples are tuples and lists. Containers hold references.")
    question = "What are objects that contain references to other objects called?"
    assert said(question, [passage]) == (
        "Some objects contain references to other objects; these are called containers;")
    identifier = ('A "TypeError" exception is raised, unless a formal parameter using the syntax "*identifier" is '
                  "present; in this case, that formal parameter receives a tuple containing the excess positional "
                  "arguments. Keyword arguments are matched by name.")
    assert said('What does a formal parameter using the syntax "*identifier" receive?', [identifier]) == (
        identifier[:identifier.index(" Keyword")])
    assert said("What must any modified files carry?", LICENSE).endswith("You changed the files;")
    paragraph = "Some objects contain references to other objects;\nthese are called containers."
    assert said(question, [paragraph]) == "Some objects contain references to other objects;"
    assert said(question, [passage], listed=True) == "Some objects contain references to other objects;"  # a list


def test_a_starred_name_is_asked_as_written_and_emphasis_is_no_star():
    """"**expression" and "*expression" are two things in Python's documents: the question about one finds the
    sentence that says it. "*iterable*" is emphasis, "10**-2" an operator: no starred name."""
    passage = ('If the syntax "*expression" appears in the function call, "expression" must evaluate to an '
               '*iterable*. If the syntax "**expression" appears in the function call, "expression" must evaluate '
               "to a *mapping*, the contents of which are treated as additional keyword arguments.")
    question = 'What must "expression" evaluate to when "**expression" appears in a function call?'
    assert said(question, [passage]).startswith('If the syntax "**expression"')
    assert said(question.replace("**", "*"), [passage]).startswith('If the syntax "*expression"')
    assert held.starred(passage) == {"*expression", "**expression"}
    assert held.starred('What does "10**-2" return? **Note:** see *args.') == {"**note", "*args"}
