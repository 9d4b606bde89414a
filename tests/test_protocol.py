"""The map-reduce protocol (longdoc/protocol.py) is control flow without I/O: driven here by hand, with records made
for each round's requests, over a real tokenized document and the bundled model's tokenizer (nothing is decoded)."""

from __future__ import annotations

import math

import pytest
from needles import FILLER, QUESTION, document, documents, sentences_for

from sentiric_cli.engine.bindings import Model
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.longdoc import NOT_FOUND, MapJob, evidence
from sentiric_cli.longdoc.mapreduce import LIST_MIN, MIN_SUPPORT, OUTLINE_PARTS, READ_TOP, YESNO_TOP, LongRecord, Partial, outline
from sentiric_cli.longdoc.protocol import protocol
from sentiric_cli.run import map_summary
from sentiric_cli.settings import Settings

KEY = 48213
WINDOW = 1024
# the reader's verdicts decide only where no sentence holds most of the question's words (held.py): two words the
# document never says ("bank vault") outweigh "pass key"
READER_DECIDES = "What is the pass key of the bank vault?"


def _record(model: Model, text: str = "", nll: float = 0.0, scored: int = 0) -> Record:
    tokens = model.tokenize(text) if text else []
    return Record(prompt_tokens=100, head_tokens=10, document_tokens=90, n_keep=10, context_size=256,
                  generated_tokens=len(tokens), finish_reason="stop", path="none", shifts=0, evicted_tokens=0,
                  evicted_spans=[], kept_spans=[], recomputed_tokens=0, reused_tokens=0, max_fill=100,
                  prefill_seconds=0.0, prefill_tokens_per_s=0.0, generation_tokens_per_s=0.0, text=text,
                  tokens=tokens, token_logprobs=[-0.01] * len(tokens), nll=nll, scored_tokens=scored)


@pytest.fixture(scope="module")
def model(bundled):
    m = Model(bundled, Settings())
    yield m
    m.close()


def _job(model, question=QUESTION, keys=((0.5, KEY),), kind=None):
    text, ats = documents(sentences_for(model, 6 * WINDOW), list(keys), seed=5)
    job = MapJob(model, WINDOW, question, model.tokenize(text), False, Request(head=[], max_tokens=16), kind=kind)
    holders = [next(c.index for c in job.chunks if c.byte_start <= at and at + 30 <= c.byte_end) for at in ats]
    return job, holders, ats


def _map(model, job, steps, relevant):
    """The map round: every passage's question scored, the empty excerpt last; `relevant` passages make it likely."""
    first = next(steps)
    assert first.name == "map" and len(first.requests) == len(job.chunks) + 1 > 6
    assert all(r.score and r.body == job.q_tokens and r.sampling.temperature == 0 for r in first.requests)
    n = len(job.q_tokens)
    return steps.send([_record(model, nll=(n * 1.0 if i in relevant else n * 4.0) if i < len(job.chunks) else n * 5.0,
                               scored=n) for i in range(len(first.requests))])


def _ended(model, steps, records: list[Record], alone: str = " it") -> LongRecord:
    """Sends a round's last records and returns the LongRecord. Where sentences hold the question's words, the alone
    round comes first: each sentence, read by itself with the question, is answered `alone` (not "none": kept)."""
    try:
        step = steps.send(records)
    except StopIteration as end:
        return end.value
    assert step.name == "alone"
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, alone) for _ in step.requests])
    return end.value.value


def _quoted(model, steps, quote: str, support: float, grounding: float):
    """The read round: the most relevant passage quotes `quote`, the other says none. The check round: the quote's
    first tokens are `support` nats less likely asked nothing in particular, `grounding` less likely with nothing
    to read, than the read's 0.01 per token. Returns the record."""
    check = steps.send([_record(model, quote)] + [_record(model, " none")] * (READ_TOP - 1))
    assert check.name == "check" and len(check.requests) == 2
    n = len(check.requests[0].body)
    return _ended(model, steps, [_record(model, nll=n * 0.01 + support, scored=n),
                                 _record(model, nll=n * 0.01 + grounding, scored=n)])


def test_a_lookup_reads_the_most_relevant_passage_and_the_one_that_holds_the_questions_words(model):
    """The model's relevance may rank passages about something else first (as it ranked str.lower()'s neighbours
    above it): a lookup reads the most relevant passage and the one that holds the question's words, not the two
    most relevant. Where the most relevant holds them, the second most relevant is read beside it."""
    job, (holder,), _ = _job(model)
    others = [i for i in range(len(job.chunks)) if i not in (holder - 1, holder, holder + 1)][:2]
    read = _map(model, job, protocol(job, []), set(others))
    assert job.selected() == [others[0], holder]
    assert [r.body for r in read.requests] == [job._tokens(job.chunks[i]) for i in (others[0], holder)]
    job, (holder,), _ = _job(model)
    _map(model, job, protocol(job, []), {holder})
    assert job.selected() == [holder, next(i for i in range(len(job.chunks)) if i != holder)]


def test_a_quote_the_question_drives_is_the_answer_cited_by_its_sentence(model):
    job, (holder,), (at,) = _job(model)
    steps = protocol(job, [])
    read = _map(model, job, steps, {holder})
    assert read.name == "read" and len(read.requests) == READ_TOP == 2 and job.selected()[0] == holder
    assert job.relevance[holder] == pytest.approx(4.0) and all(r.stop == ("\n",) for r in read.requests)
    # the holder quotes its key (and runs on); the other invents a number its passage lacks
    said = [f" The pass key is {KEY}. Remember it. And more", " 12345"]
    check = steps.send([_record(model, s) for s in said])
    # the one located quote, asked nothing in particular, then asked the question over an empty excerpt
    assert check.name == "check" and len(check.requests) == 2
    assert check.requests[1].head == job.head + job.tail and check.requests[0].body == check.requests[1].body
    verdicts = {i: p.verdict for i, p in job.partials.items()}
    assert verdicts[holder] == "unsupported" and sorted(verdicts.values()) == ["unsupported", "unverified"]
    with pytest.raises(StopIteration) as end:
        n = len(check.requests[0].body)  # the quote's first tokens as written (the read said 0.01 nats each)
        # 6 nats less likely asked nothing in particular, 9 less likely with nothing to read
        steps.send([_record(model, nll=n * 0.01 + 6.0, scored=n), _record(model, nll=n * 0.01 + 9.0, scored=n)])
    rec = end.value.value
    assert rec.found and rec.answer == f"The pass key is {KEY}" and rec.cited_chunks == [holder]
    (s, e), = rec.citations
    assert s == at and e - s < 40  # the sentence that holds it, not the passage
    assert [p.name for p in rec.phases] == ["map", "read", "check"] and rec.kind == "lookup"
    p = job.partials[holder]
    assert p.support == pytest.approx(6.0 / n) and p.grounding == pytest.approx(9.0 / n) and 6.0 / n > MIN_SUPPORT
    assert p.confidence == pytest.approx(1 - math.exp(-6.0 / n), abs=1e-4)  # the weaker of the two


def test_a_quote_the_model_says_without_the_passage_is_not_an_answer(model):
    """The question drives it (against a neutral question), but an empty excerpt gives it as readily: the model's
    prior for the question, not what the passage says."""
    job, (holder,), _ = _job(model, READER_DECIDES)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    rec = _quoted(model, steps, f" The pass key is {KEY}.", support=6.0, grounding=0.1)
    assert not rec.found and rec.answer == NOT_FOUND and job.partials[holder].verdict == "ungrounded"


def test_a_quote_the_question_does_not_drive_is_not_an_answer(model):
    job, (holder,), _ = _job(model, READER_DECIDES)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    # as likely with a neutral question as the read's 0.01 per token asked: a copy, not chosen, however grounded
    rec = _quoted(model, steps, f" The pass key is {KEY}.", support=0.1, grounding=9.0)
    assert not rec.found and rec.answer == NOT_FOUND and rec.citations == []


def test_an_echo_of_the_question_points_at_its_sentence_which_is_checked_as_the_answer(model):
    """The reader copied the question's words from the passage ("the pass key"), not what the passage says there:
    the sentence that holds them is the candidate. The read wrote none of its tokens, so the check round also scores
    them asked the user's question after the passage. The echo chose the sentence: it needs grounding, and to be no
    less likely asked the question than asked nothing in particular."""
    job, (holder,), (at,) = _job(model)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    check = steps.send([_record(model, " the pass key")] + [_record(model, " none")] * (READ_TOP - 1))
    assert check.name == "check" and len(check.requests) == 3
    written = model.tokenize(" " + job.partials[holder].evidence, add_special=False)[:8]
    assert all(r.body == written for r in check.requests) and job.partials[holder].evidence.startswith("The pass key")
    assert check.requests[2].head == job.head + job._bodies[holder] + job.tail  # asked the user's question
    with pytest.raises(StopIteration) as end:
        n = len(written)  # as likely asked nothing in particular (a copy from its second token on), 9 nats less
        # likely with nothing to read
        steps.send([_record(model, nll=2.1, scored=n), _record(model, nll=11.0, scored=n),
                    _record(model, nll=2.0, scored=n)])
    rec = end.value.value
    p = job.partials[holder]
    assert rec.found and rec.answer.startswith(f"The pass key is {KEY}") and rec.cited_chunks == [holder]
    assert p.verdict == "answer" and p.support == pytest.approx(0.1 / n) and p.grounding == pytest.approx(9.0 / n)
    assert p.confidence == pytest.approx(1 - math.exp(-9.0 / n), abs=1e-4) and rec.citations[0][0] == at


def test_an_echos_sentence_the_model_says_without_the_passage_is_not_an_answer(model):
    job, (holder,), _ = _job(model, READER_DECIDES)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    check = steps.send([_record(model, " the pass key")] + [_record(model, " none")] * (READ_TOP - 1))
    with pytest.raises(StopIteration) as end:
        n = len(check.requests[0].body)
        steps.send([_record(model, nll=8.0, scored=n), _record(model, nll=2.1, scored=n),
                    _record(model, nll=2.0, scored=n)])
    rec = end.value.value
    assert not rec.found and job.partials[holder].verdict == "ungrounded"


def test_an_echos_sentence_a_neutral_question_prefers_is_not_an_answer(model):
    job, (holder,), _ = _job(model, READER_DECIDES)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    check = steps.send([_record(model, " the pass key")] + [_record(model, " none")] * (READ_TOP - 1))
    with pytest.raises(StopIteration) as end:  # likelier asked nothing in particular than asked the question
        n = len(check.requests[0].body)
        steps.send([_record(model, nll=1.5, scored=n), _record(model, nll=11.0, scored=n),
                    _record(model, nll=2.0, scored=n)])
    rec = end.value.value
    assert not rec.found and job.partials[holder].verdict == "unsupported" and job.partials[holder].support < 0


def test_an_echo_in_a_sentence_of_nothing_else_is_not_an_answer(model):
    """A sentence made only of the question's words answers nothing: the echo stays an echo, and nothing is
    checked."""
    job, (holder,), _ = _job(model, question="What is the pass key? Remember it.")
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, " Remember it.")] + [_record(model, " none")] * (READ_TOP - 1))
    rec = end.value.value
    assert not rec.found and job.partials[holder].verdict == "echo" and [p.name for p in rec.phases] == ["map", "read"]


def test_not_found_in_its_usual_forms_ends_after_the_read(model):
    job, (holder,), _ = _job(model, READER_DECIDES)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, s) for s in (" none", " Not mentioned in the excerpt.", " N/A")[:READ_TOP]])
    rec = end.value.value
    assert not rec.found and rec.answer == NOT_FOUND and [p.name for p in rec.phases] == ["map", "read"]
    assert all(p.verdict == "none" for p in rec.partials)


def test_the_sentence_that_holds_the_questions_words_answers_where_no_reader_did(model):
    """One reader says it is not there, the other writes what its passage lacks: the sentence of the passages read
    that holds the question's words is the answer (held.py), cited by its bytes. No check round: nothing was quoted;
    the sentence is read alone, and the reader quotes it."""
    job, (holder,), (at,) = _job(model)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    alone = steps.send([_record(model, " none")] + [_record(model, " 12345")] * (READ_TOP - 1))
    sentence = f"The pass key is {KEY}."  # the first of the needle's two sentences that hold "pass key"
    assert alone.name == "alone" and [r.body for r in alone.requests] == [model.tokenize(sentence, add_special=False)]
    assert alone.requests[0].head == job.head and alone.requests[0].tail == job.tail  # asked the user's question
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, f" {KEY}")])
    rec = end.value.value
    assert rec.found and rec.answer == sentence and rec.cited_chunks == [holder] and rec.conflicts == []
    assert rec.citations == [(at, at + len(sentence))] and [p.name for p in rec.phases] == ["map", "read", "alone"]
    assert job.held in rec.partials and job.held.verdict == "sentence" and job.held.confidence == 1.0
    assert job.partials[holder].verdict == "none"
    assert (f"{READ_TOP} read for an answer, 0 supported (the sentence that holds the question's words answered)"
            in map_summary(rec, 4))


def test_a_supported_quote_of_another_sentence_gives_way_to_the_one_that_holds_the_questions_words(model):
    """The reader quoted a sentence of the right passage that says nothing the question asks, and the check passed
    it: the sentence that holds the question's words answers, and the quote is shown beside it, not hidden."""
    job, (holder,), (at,) = _job(model)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    other = next(f for f in FILLER if f in job._excerpt(job.chunks[holder])[0])
    rec = _quoted(model, steps, " " + other, support=6.0, grounding=9.0)
    assert job.partials[holder].verdict == "answer" and job.partials[holder].answer == other.rstrip(".")
    assert rec.answer == f"The pass key is {KEY}. (other passages say: {other.rstrip('.')})"
    assert rec.conflicts == [other.rstrip(".")] and rec.citations[0][0] == at and rec.cited_chunks == [holder]


def test_a_held_sentence_the_reader_given_it_alone_says_none_to_is_not_the_answer(model):
    """The sentence holds the question's words, but the reader, given it alone, says it does not answer (the words in
    another sense): no answer, and the sentence is shown as unanswered, not hidden."""
    job, (holder,), _ = _job(model)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    alone = steps.send([_record(model, " none")] + [_record(model, " 12345")] * (READ_TOP - 1))
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, " The excerpt does not say.")] * len(alone.requests))
    rec = end.value.value
    assert not rec.found and rec.answer == NOT_FOUND and rec.citations == [] and job.held is None
    assert [p.verdict for p in rec.partials][-1] == "unanswered" and rec.partials[-1].answer == f"The pass key is {KEY}."
    assert [p.name for p in rec.phases] == ["map", "read", "alone"]
    assert ("0 supported (read alone, the sentence that holds the question's words did not answer)"
            in map_summary(rec, 4))


def test_a_supported_quote_answers_where_the_held_sentence_read_alone_does_not(model):
    """The held sentence would have beaten the quote of another sentence; read alone it does not answer, so the
    supported quote is the answer, with no conflict."""
    job, (holder,), _ = _job(model)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    other = next(f for f in FILLER if f in job._excerpt(job.chunks[holder])[0])
    check = steps.send([_record(model, " " + other)] + [_record(model, " none")] * (READ_TOP - 1))
    n = len(check.requests[0].body)
    rec = _ended(model, steps, [_record(model, nll=n * 0.01 + 6.0, scored=n), _record(model, nll=n * 0.01 + 9.0,
                                                                                       scored=n)], alone=" none")
    assert rec.answer == other.rstrip(".") and rec.conflicts == [] and job.partials[holder].verdict == "answer"


def test_a_quote_from_the_sentence_that_holds_the_questions_words_stays_the_answer(model):
    """The reader's quote comes from a sentence that holds as much of the question: the quote, not the sentence."""
    job, (holder,), (at,) = _job(model)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    rec = _quoted(model, steps, f" {KEY}", support=6.0, grounding=9.0)
    assert rec.answer == str(KEY) and job.held is None and rec.citations[0][0] == at


def test_a_quote_that_starts_inside_its_phrase_is_shown_from_the_phrases_start(model):
    """The reader skipped the words that make its quote the answer ("interactive source code"): the answer starts
    after the question's last word in the sentence. The check still scores what the reader wrote."""
    section = 'The module "pdb" defines an interactive source code debugger for Python programs.'
    job, holder, rec = _section_quoted(model, section, "What kind of debugger does the pdb module define?",
                                       " debugger for Python programs")
    assert rec.answer == "an interactive source code debugger for Python programs"
    assert job.partials[holder].verdict == "answer" and job.held is None
    assert job._written[holder] == model.tokenize(" debugger for Python programs", add_special=False)[:8]
    # only a joining word between the question's words and the quote: the quote as written
    job, holder, rec = _section_quoted(model, "In May 2000, the core development team moved to BeOpen.com.",
                                       "Where did the core development team move in May 2000?", " BeOpen.com")
    assert rec.answer == "BeOpen.com"


def test_a_quote_from_the_held_sentences_clause_after_a_semicolon_is_the_answer(model):
    """The clause before the semicolon holds what the question says of the objects, the clause after it holds
    "called" and the answer: they are one held sentence, and the reader's quote from its second clause answers, not
    the sentence, nor its first clause alone."""
    section = ("Some objects contain references to other objects; these are called containers. "
               "Examples of containers are tuples, lists and dictionaries.")
    job, holder, rec = _section_quoted(model, section,
                                       "What are objects that contain references to other objects called?",
                                       " containers")
    assert rec.answer == "containers" and job.held is None and rec.conflicts == []
    assert job.partials[holder].verdict == "answer"


def test_a_quote_whose_sentence_lacks_a_name_asked_gives_way_to_the_sentence_that_holds_it(model):
    """The quote's sentence holds as much of the question's other words ("refers"), but not the name it asks about:
    the sentence that holds "the Program" answers, and the quote is shown beside it."""
    section = ('"This License" refers to version 3 of the GNU General Public License. '
               '"The Program" refers to any copyrightable work licensed under this License.')
    job, holder, rec = _section_quoted(model, section, 'What does "the Program" refer to?',
                                       " version 3 of the GNU General Public License")
    assert job.partials[holder].verdict == "answer"
    assert rec.answer == ('"The Program" refers to any copyrightable work licensed under this License. '
                          "(other passages say: version 3 of the GNU General Public License)")


def _two_quotes(model, first: str, second: str, quotes: tuple[str, str], support: tuple[float, float],
                grounding: tuple[float, float]):
    """A job over filler with `first` at a third and `second` at two thirds, asked where CNRI is; the passage of
    `first` the most relevant, of `second` the next. Each quotes its quote, checked with its support and grounding
    (nats per token). Returns the record and the two passages."""
    filler, _ = documents(sentences_for(model, 6 * WINDOW), [], seed=5)
    cuts = [filler.index(". ", len(filler) * k // 3) + 2 for k in (1, 2)]
    text = filler[:cuts[0]] + first + " " + filler[cuts[0]:cuts[1]] + second + " " + filler[cuts[1]:]
    job = MapJob(model, WINDOW, "In which town is CNRI located?", model.tokenize(text), False,
                 Request(head=[], max_tokens=16))
    a, b = (next(c.index for c in job.chunks if s in job._excerpt(c)[0]) for s in (first, second))
    steps = protocol(job, [])
    first_round = next(steps)
    n = len(job.q_tokens)
    steps.send([_record(model, nll=n * {a: 1.0, b: 2.0}.get(i, 4.0) if i < len(job.chunks) else n * 5.0, scored=n)
                for i in range(len(first_round.requests))])
    assert job.selected() == [a, b]
    check = steps.send([_record(model, " " + q) for q in quotes])
    assert check.name == "check" and len(check.requests) == 4  # each quote: a neutral question, an empty excerpt
    ns = [len(r.body) for r in check.requests]
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, nll=m * (0.01 + x), scored=m) for m, x in zip(ns, support + grounding, strict=True)])
    assert job.held is None  # no sentence holds "town" or "located": the quotes decide
    return end.value.value, a, b


def test_the_quote_whose_sentence_holds_the_name_asked_answers_before_a_better_supported_one(model):
    """The more relevant passage's quote is the better supported, but its sentence does not name CNRI: a governing-
    law clause, about the question's topic, not about CNRI."""
    rec, a, b = _two_quotes(model, "The law of the Commonwealth of Virginia governs this agreement.",
                            "CNRI has an office in Reston, VA.", ("Virginia", "Reston, VA"), (5.0, 3.0), (4.0, 2.4))
    assert rec.answer == "Reston, VA (other passages say: Virginia)" and rec.cited_chunks == [b]


def test_among_quotes_whose_sentences_hold_as_much_the_best_supported_answers(model):
    """Both sentences name CNRI and nothing else asked: the quote with the higher confidence (the weaker of its support
    and grounding) answers, though the other's passage is the more relevant; the other is shown beside it."""
    rec, a, b = _two_quotes(model, "CNRI once argued a case under the law of Virginia.",
                            "CNRI has an office in Reston, VA.", ("Virginia", "Reston, VA"), (5.0, 3.0), (1.0, 2.4))
    confidence = {p.chunk: p.confidence for p in rec.partials}
    assert confidence[a] < confidence[b]
    assert rec.answer == "Reston, VA (other passages say: Virginia)" and rec.cited_chunks == [b]
    rec, a, b = _two_quotes(model, "CNRI once argued a case under the law of Virginia.",
                            "CNRI has an office in Reston, VA.", ("Virginia", "Reston, VA"), (5.0, 3.0), (4.0, 2.4))
    assert rec.answer == "Virginia (other passages say: Reston, VA)" and rec.cited_chunks == [a]


def _section_job(model, section: str, question: str):
    """A job over filler with `section` after its middle sentence; the passage that holds the whole section, and the
    section's byte offset."""
    filler, _ = documents(sentences_for(model, 3 * WINDOW), [], seed=5)
    cut = filler.index(". ", len(filler) // 2) + 2
    text = filler[:cut] + section + " " + filler[cut:]
    job = MapJob(model, WINDOW, question, model.tokenize(text), False, Request(head=[], max_tokens=16))
    holder = next(c.index for c in job.chunks if evidence.normalized(section)[0] in job._excerpt(c)[0])
    return job, holder, cut


def _section_quoted(model, section: str, question: str, quote: str):
    """_section_job's passage the most relevant, quoting `quote`, which the check supports (_quoted): the job, the
    passage and the record."""
    job, holder, _ = _section_job(model, section, question)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    return job, holder, _quoted(model, steps, quote, support=6.0, grounding=9.0)


def test_a_heading_that_gives_way_is_weighed_as_the_sentence_after_it(model):
    """The heading holds the most of the question's words and gives way to the sentence after it, which holds no more
    of them than the quote's sentence does: the reader's quote stays the answer."""
    section = ('The "continue" statement\n\n"continue" may only occur syntactically nested in a loop. '
               "It continues with the next cycle of the nearest enclosing loop.")
    job, holder, rec = _section_quoted(model, section, "What does the continue statement continue with?",
                                       " the next cycle of the nearest enclosing loop")
    assert rec.answer == "the next cycle of the nearest enclosing loop" and job.held is None


def test_a_list_is_the_union_of_its_distinct_supported_answers_in_document_order(model):
    keys = ((0.2, 31877), (0.7, 90452))
    job, holders, ats = _job(model, "What are the two pass keys?", keys)
    assert job.kind == "list"
    steps = protocol(job, [])
    read = _map(model, job, steps, set(holders))
    chosen = job.selected()
    assert set(holders) <= set(chosen) and len(read.requests) == len(chosen)
    assert len(chosen) == LIST_MIN > READ_TOP  # two stand out; a list reads at least LIST_MIN, more than a lookup
    said = {holders[0]: " The pass key is 31877 and 31878", holders[1]: " 90452"}  # one invents a second key
    check = steps.send([_record(model, said.get(i, " none")) for i in chosen])
    assert len(check.requests) == 4  # two located quotes, each scored twice
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, nll=9.0, scored=len(r.body)) for r in check.requests])
    rec = end.value.value
    # each item is the sentence that holds its quote: the invented "31878" is not the document's, "90452" is a
    # sentence's
    assert rec.answer == "The pass key is 31877. The pass key is 90452." and rec.cited_chunks == holders
    assert all(s <= at < e for (s, e), at in zip(rec.citations, ats, strict=True))


def test_a_list_adds_the_sentence_that_holds_the_questions_words_with_the_items_it_introduces(model):
    """The reader quotes one item; the sentence that introduces the list, through the colon, holds the question's
    words and the items, and stands for the quote's shorter sentence."""
    section = 'Here are the values that are considered false: zero and "None".'
    job, holder, cut = _section_job(model, section, "Which values are considered false?")
    assert job.kind == "list"
    steps = protocol(job, [])
    read = _map(model, job, steps, {holder})
    check = steps.send([_record(model, ' zero' if i == holder else " none") for i in job.selected()])
    rec = _ended(model, steps, [_record(model, nll=9.0, scored=len(r.body)) for r in check.requests])
    assert len(read.requests) == LIST_MIN and job.partials[holder].verdict == "answer"
    assert job.held is not None and job.held.answer == section
    assert rec.answer == section and rec.cited_chunks == [holder] and rec.citations == [(cut, cut + len(section))]
    assert "1 supported (with the sentence that holds the question's words)" in map_summary(rec, 4)


# two parallel sentences that hold as much of the question's words
LOOP_SECTION = ('"break" may only occur nested in a loop. It ends the loop. '
                '"continue" may only occur nested in a loop. It goes on with the next cycle.')
LOOP_QUESTION = "Which statements may occur only nested in a loop?"


def test_a_list_keeps_every_parallel_sentence_and_the_summary_counts_them(model):
    """Two sentences hold as much of the question's words: both are items, and the summary says two were kept."""
    job, holder, _ = _section_job(model, LOOP_SECTION, LOOP_QUESTION)
    assert job.kind == "list"
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    rec = _ended(model, steps, [_record(model, " none")] * len(job.selected()))  # nothing quoted: no check round
    first, second = '"break" may only occur nested in a loop.', '"continue" may only occur nested in a loop.'
    assert rec.found and rec.answer.startswith(first) and second in rec.answer
    assert [p.answer for p in rec.partials if p.verdict == "sentence"] == [first, second]
    assert "0 supported (with the 2 sentences that hold the question's words)" in map_summary(rec, 4)


def test_of_parallel_sentences_a_list_keeps_those_the_reader_given_each_alone_answers_from(model):
    job, holder, _ = _section_job(model, LOOP_SECTION, LOOP_QUESTION)
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    alone = steps.send([_record(model, " none")] * len(job.selected()))
    assert alone.name == "alone" and len(alone.requests) == 2
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, " none"), _record(model, ' "continue"')])
    rec = end.value.value
    second = '"continue" may only occur nested in a loop.'
    assert rec.found and rec.answer == second and [p.verdict for p in rec.partials[-2:]] == ["sentence", "unanswered"]
    assert "0 supported (with the sentence that holds the question's words)" in map_summary(rec, 4)


def test_a_list_also_reads_the_passage_that_holds_the_questions_words_where_relevance_did_not_choose_it(model):
    job, (holder,), _ = _job(model, "What are the pass keys?")
    assert job.kind == "list"
    others = [i for i in range(len(job.chunks)) if i not in (holder - 1, holder, holder + 1)][:LIST_MIN]
    read = _map(model, job, protocol(job, []), set(others))
    assert job.selected() == [*others, holder] and len(read.requests) == LIST_MIN + 1
    job, (holder,), _ = _job(model, "What are the pass keys?")
    others[-1] = holder  # chosen already: read once
    _map(model, job, protocol(job, []), set(others))
    assert sorted(job.selected()) == sorted(others)


def test_a_lists_introduction_runs_on_through_its_marked_items_past_the_passage(model):
    """The reader quotes one item; the sentence that introduces the list (in the passage that holds section 6's
    heading) answers with every marked item after it, each by its first sentence, read off the document past the
    passage's end, and cites them through the last."""
    ways = [f"    {m}) Convey the object code {how}, as this paragraph says at some length so that the list of ways\n"
            "    runs on past the passage that holds its introduction. It says more here." for m, how in
            zip("abcde", ("in a physical product", "with a written offer", "in individual copies",
                          "from a designated place", "by peer-to-peer transmission"), strict=True)]
    section = ("6. Conveying Non-Source Forms.\n\n  You may convey object code in one of these ways:\n\n"
               + "\n\n".join(ways) + "\n\n  A separable portion need not be included.")
    filler, _ = documents(sentences_for(model, 3 * WINDOW), [], seed=5)
    cut = filler.index(". ", len(filler) // 2) + 2
    text = filler[:cut] + section + " " + filler[cut:]
    job = MapJob(model, WINDOW, "What are the ways of conveying object code listed in section 6?", model.tokenize(text),
                 False, Request(head=[], max_tokens=16))
    assert job.kind == "list"
    holder = next(c.index for c in job.chunks if "one of these ways:" in job._excerpt(c)[0])
    assert "peer-to-peer" not in job._excerpt(job.chunks[holder])[0]  # the items run on past the passage
    steps = protocol(job, [])
    _map(model, job, steps, {holder})
    check = steps.send([_record(model, " Convey the object code in a physical product" if i == holder else " none")
                        for i in job.selected()])
    rec = _ended(model, steps, [_record(model, nll=9.0, scored=len(r.body)) for r in check.requests])
    firsts = [" ".join(w.split()).split(" It says")[0].strip() for w in ways]
    assert job.held is not None and job.held.answer == " ".join(
        ["You may convey object code in one of these ways:", *firsts])
    assert rec.answer == job.held.answer  # the quote's sentence, item a's, is one of its items
    start = cut + section.index("You may convey")
    assert rec.citations == [(start, cut + section.index("  A separable") - 2)]


def test_overview_collapses_the_chunks_summaries(model):
    text, _ = document(sentences_for(model, 4 * WINDOW), 0.5, KEY, seed=5)
    job = MapJob(model, WINDOW, "What is this document about?", model.tokenize(text), False,
                 Request(head=[], max_tokens=16))
    assert job.kind == "overview" and job.size > 700  # window-sized chunks, not passages
    steps = protocol(job, [])
    first = next(steps)
    assert first.name == "map" and len(first.requests) == len(job.chunks) and not first.requests[0].score
    final = steps.send([_record(model, f" the weather in part {i}") for i in range(len(first.requests))])
    assert final.name == "reduce 1" and len(final.requests) == 1
    with pytest.raises(StopIteration) as end:
        steps.send([_record(model, " the weather in a valley.")])
    rec = end.value.value
    assert rec.found and rec.reduce_rounds == 1
    head, rest = rec.answer.split("\n", 1)
    assert head == "The document is about the weather in a valley."
    # the outline: each part's own summary after the collapsed answer, as many as the outline holds, first and last
    lines = rest.split("\n")[1:]
    n = len(first.requests)
    assert len(lines) == min(n, OUTLINE_PARTS) and lines[0] == "- the weather in part 0 (part 1)"
    assert lines[-1] == f"- the weather in part {n - 1} (part {n})"


def test_the_outline_keeps_each_topic_once_and_not_the_answers_own():
    said = "The document is about the GNU General Public License."
    ps = [Partial(i, (0, 1), (i, i + 1), a, 0.5) for i, a in enumerate(
        ["the GNU General Public License.", "the terms of this License.", "the general terms of this License.",
         "the free software you can download.", "the terms of this License."])]
    assert outline(ps, said) == ["the terms of this License (parts 2, 3, 5)",
                                  "the free software you can download (part 4)"]
    many = [Partial(i, (0, 1), (i, i + 1), f"topic number {i}", 0.5) for i in range(20)]
    assert [x.split(" (")[0] for x in outline(many, said, 4)] == ["topic number 0", "topic number 6",
                                                                    "topic number 13", "topic number 19"]


def _yesno(model, job, steps, holder):
    """The map, then the read round: the most relevant passage, then an empty excerpt; returns a function making a
    record whose first word's alternatives give yes and no these log-probabilities."""
    read = _map(model, job, steps, {holder})
    assert read.name == "read" and len(read.requests) == 2 and read.requests[1].body == []
    assert job.selected()[0] == holder and len(job.selected()) == YESNO_TOP
    yes, no = job._yes[0], job._no[0]

    def said(y: float, n: float) -> Record:
        r = _record(model, " yes")
        r.logprobs = [(yes, y, ((yes, y), (no, n)))]
        return r

    return said


def test_yes_or_no_is_judged_against_the_models_prior_for_the_question(model):
    """No sentence holds more than half of the question's words ("pass key", not "prime number"), so the model's
    lean decides. The passage makes "yes" likelier than "no" (-0.5 against -1.0), but with nothing to read the model
    says "yes" far more readily (-0.2 against -2.0): the passage leans to "no", so the answer is no."""
    job, (holder,), _ = _job(model, "Is the pass key a prime number?")
    assert job.kind == "yesno"
    steps = protocol(job, [])
    said = _yesno(model, job, steps, holder)
    with pytest.raises(StopIteration) as end:
        steps.send([said(-0.5, -1.0), said(-0.2, -2.0)])
    rec = end.value.value
    assert rec.found and rec.answer.startswith("No, from: ") and rec.cited_chunks == [holder]
    assert job.partials[holder].support == pytest.approx(-1.3) and job.partials[holder].verdict == "answer"


@pytest.mark.parametrize("key, expected", [(KEY, "Yes"), (KEY + 1, "No")])
def test_yes_or_no_comes_from_the_sentence_that_holds_the_questions_words(model, key, expected):
    """The key's sentence holds the question's words: it answers (the other number: the rest of the claim, of
    another number), whatever the model's lean, and it is the citation, not the whole passage."""
    job, (holder,), (at,) = _job(model, f"Is the pass key {key}?")
    steps = protocol(job, [])
    said = _yesno(model, job, steps, holder)
    with pytest.raises(StopIteration) as end:
        steps.send([said(-0.5, -1.0) if expected == "Yes" else said(-1.0, -0.5), said(-0.2, -2.0)])
    rec = end.value.value
    assert rec.answer == f'{expected}, from: "The pass key is {KEY}."' and rec.cited_chunks == [holder]
    assert rec.citations == [(at, at + len(f"The pass key is {KEY}."))]
