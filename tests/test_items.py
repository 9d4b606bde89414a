"""The items a sentence introduces (longdoc/items.py): pure text, no model, the same on every CPU."""

from __future__ import annotations

from sentiric_cli.longdoc import items

WAYS = """
    a) Convey the object code in, or embodied in, a physical product
    (including a physical distribution medium).

    b) Convey the object code with a written offer, valid for at least
    three years.  This alternative is allowed only occasionally.

    c) Convey the object code by offering access from a designated
    place.

  A separable portion of the object code need not be included.
"""


def test_the_marked_items_after_a_colon_each_by_its_first_sentence_up_to_the_next_paragraph():
    found = items.following(WAYS)
    assert [x.text for x in found] == [
        "a) Convey the object code in, or embodied in, a physical product (including a physical distribution medium).",
        "b) Convey the object code with a written offer, valid for at least three years.",
        "c) Convey the object code by offering access from a designated place."]
    assert WAYS[found[0].start:].startswith("    a) Convey") and WAYS[:found[-1].end].endswith("designated\n    place.")
    assert "separable" not in WAYS[found[0].start:found[-1].end]  # the next paragraph is not an item


def test_nested_items_and_an_items_second_paragraph_stay_with_it_and_the_list_ends_at_the_next_paragraph():
    text = ('\n\n* formal parameters to functions,\n\n* targets that are identifiers:\n\n  * "for" loop header,\n\n'
            '  * after "as" in a "with" statement,\n\n* "import" statements.\n\nThe "import" statement binds names.')
    found = items.following(text)
    assert [x.text for x in found] == ["* formal parameters to functions,",
                                       '* targets that are identifiers: * "for" loop header, * after "as" in a "with" '
                                       'statement,', '* "import" statements.']
    steps = "\n\n1. find a module, loading it if necessary\n\n2. define a name\n   in the local namespace.\n\nWhen ..."
    assert [x.text for x in items.following(steps)] == ["1. find a module, loading it if necessary",
                                                         "2. define a name in the local namespace."]


def test_no_list_without_a_marked_first_line_or_with_a_single_item_and_a_long_item_is_cut():
    assert items.following("\n\nThe values are listed below.\n\n* one\n\n* two\n") == []
    assert items.following("\n\n   a) An example, alone.\n\nThe rest of the section.") == []
    long = "\n\n(a) " + " ".join(["word"] * 60) + "\n\n(b) short one; and more\n"
    found = items.following(long)
    assert found[0].text.endswith(" ...") and len(found[0].text.split()) == items.ITEM_WORDS + 1
    assert found[1].text == "(b) short one;"  # its first sentence: to the semicolon
    many = "".join(f"\n\n{k}. item number {k}" for k in range(1, 30))
    assert len(items.following(many)) == items.MAX_ITEMS


def test_an_introduction_is_a_colon_that_a_marked_item_follows():
    assert items.colon("You may convey it in one of these ways:\na) Convey the object code") == 38
    assert items.colon("It is executed in two steps: 1. find a module") == 27
    assert items.colon("Note: this is not a list.") is None
    assert items.colon("The keys are: zero and one.") is None
    # "steps:" and "1." are one sentence (the full stop ends it); the item's words follow it
    assert items.colon("It is executed in two steps:\n1. find a module", len("It is executed in two steps:\n1.")) == 27
    assert items.colon("No colon here. Then: a) an item", len("No colon here.")) is None
