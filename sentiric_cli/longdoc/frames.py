"""The texts the long-document reads put around a passage. Base models follow worked examples far better than
instructions, so each read is a few-shot frame; a chat model gets the same text as one user turn of its own
template (engine/prompt.frame).

The examples answer with quotes of several shapes (a phrase, a name, a definition) and once with `none`:
frames whose examples only answer `none` or a number make a small model write `1.` or invent something.
"""

from __future__ import annotations

_LIBRARY = ("The library opens at nine every morning. Its roof was repaired last year by the town council, which "
            "paid for new tiles. Visitors may borrow up to six books at a time, for a period of three weeks. The fee "
            "for a lost card is two pounds.")
_CLUB = ("A \"member\" means any person who has paid the annual fee. Members may vote at the general meeting, which "
         "is held every spring in the main hall. The committee may expel a member who breaks these rules.")

# relevance: how much likelier the question is after the passage than after nothing (plain text, any model)
RELEVANCE = "Excerpt: {excerpt}\nQuestion:"

# the answer a passage gives, quoted
READ = ("Answer each question with a short quote from its excerpt, or none when the excerpt does not answer it."
        f"\n\nExcerpt: {_LIBRARY}\nQuestion: How long may visitors keep a book?\nAnswer: for a period of three weeks"
        f"\n\nExcerpt: {_LIBRARY}\nQuestion: What is the fee for a lost card?\nAnswer: two pounds"
        f"\n\nExcerpt: {_CLUB}\nQuestion: What does \"member\" mean?\nAnswer: any person who has paid the annual fee"
        f"\n\nExcerpt: {_LIBRARY}\nQuestion: What is the name of the mayor?\nAnswer: none"
        "\n\nExcerpt: {excerpt}\nQuestion: {question}")
ANSWER_CUE = "\nAnswer:"
# what a quote's tokens are judged against: the same passage asked nothing in particular
NEUTRAL = "What does the excerpt say?"

YESNO = ("Answer each question with yes or no, from its excerpt."
         f"\n\nExcerpt: {_LIBRARY}\nQuestion: Was the roof repaired by the town council?\nAnswer: yes"
         f"\n\nExcerpt: {_CLUB}\nQuestion: Is the general meeting held in the autumn?\nAnswer: no"
         f"\n\nExcerpt: {_CLUB}\nQuestion: May the committee expel a member?\nAnswer: yes"
         f"\n\nExcerpt: {_LIBRARY}\nQuestion: Can visitors borrow ten books at a time?\nAnswer: no"
         "\n\nExcerpt: {excerpt}\nQuestion: {question}")

# overview: no worked example (a small model copies an example's topic into every summary)
SUMMARY = "{excerpt}"
SUMMARY_CUE = "\n\nIn short, the text above is about"
COLLAPSE = "What the parts of a document are about:\n{excerpt}"
COLLAPSE_CUE = "\nIn short, the whole document is about"
OUTLINE = "Its parts are about:"  # the outline of distinct chunk summaries after the collapsed answer
ABOUT = "The document is about"  # what the answer starts with: the cue's words, which the model continues
