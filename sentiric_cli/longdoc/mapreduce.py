"""Map-reduce over one tokenized document, as data: MapJob makes each round's requests and reads their records;
protocol.py puts the rounds in order. No I/O here.

Facts (lookup, list, yes/no): the document is cut into passages of a few sentences.
- map: every passage is read fresh with the question after it, scoring the question's tokens. Its relevance
  is how much likelier the question is after the passage than after nothing (nats per question token): the
  model's own baseline, per question, not a constant fitted to one model.
- read: the most relevant passages (for a lookup, the most relevant and the one that holds most of the question's
  rare words; for a list, that one too) are read with a quoting frame; each gives a short answer, trimmed to its
  first sentence, recognised as "not here" in its usual forms, and located in the passage (evidence.py). An echo
  of the question's words points at the sentence that holds them: that sentence is the candidate. A quote that
  starts inside its phrase ("debugger for Python programs", from "defines an interactive source code debugger for
  Python programs") is shown from the phrase's start (phrase.py); the check judges what the reader wrote.
- check: a located quote's first tokens, as written, are scored again with a neutral question in place of
  the user's, and with an empty excerpt in place of the passage. Its support is how much likelier the
  question made them, its grounding how much likelier the passage made them (nats per token): a quote the
  model copies whatever it is asked (the passage's first line) gains no support, one it would say with
  nothing to read (its prior for the question: "C" for a programming language) gains no grounding. An echo's
  sentence, which the read did not write, is also scored after the passage with the user's question; the echo
  chose it, so it needs only to be no likelier with the neutral question.
- reduce, by kind: lookup, the supported quote whose sentence holds the question's names and most of its words, then
  the best-supported (others shown as conflicts); or the sentence of the passages read that holds the question's
  words, where the quote's sentence holds fewer of them or lacks a name asked about (held.py); list, the union
  of the distinct sentences that hold the supported answers and of the sentences that hold the question's words
  (an introduction with the marked items after it: items.py);
  a sentence that holds the question's words answers only where the reader, given it alone, does not say "none": it
  holds the words, in another sense ("certain countries" for which countries are excluded, the "&" operator's
  sentence for who designed the bitwise operators), where the model's own reading finds nothing it answers.
  yes/no, from the sentence of the most relevant passages that holds the question's words (a negation there: no),
  else from the model's lean on the most relevant one. None supported: NOT_FOUND.
Overview: window-sized chunks each say what they are about; those partial summaries are collapsed in rounds
within the window budget, and the last round writes the answer with the user's sampling.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from dataclasses import asdict, dataclass, field, fields
from itertools import accumulate

from sentiric_cli.engine.prompt import MARK, byte_offsets, frame
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.longdoc import evidence, frames, held, items, phrase, polarity
from sentiric_cli.longdoc.chunks import Chunk, split
from sentiric_cli.longdoc.kinds import KINDS, detect

NOT_FOUND = "The document does not seem to contain the answer."
PASSAGE_TOKENS = 160  # a passage: a few sentences, what a small model reads well and a citation can point at
PASSAGE_OVERLAP = 16  # a fact cut by one passage boundary is whole in the next passage
# lookup: passages read for an answer: the most relevant, and the one that holds most of the question's rare words
# (else the second most relevant). On the eval's tuning half the passage holding the answer was the most relevant for
# 21 of 25 lookups, the second for 2, the third for none: a third read only added a chance to quote something the
# question does not ask. Of the misses, the word match ranked the holder first for "str.join()", "str.lower()", what
# "Copyright" also means and the title of section 8 (bench/longdoc_eval.py, docs/benchmarks-history.md)
READ_TOP = 2
LIST_MIN, LIST_TOP = 3, 8  # list: at least and at most this many passages read (its facts are spread out)
ANSWER_TOKENS = 32  # a partial answer: a quote, cut to its first sentence
ALONE_TOKENS = 6  # a held sentence read alone: enough for "none" in its usual forms ("The excerpt does not say")
CHECK_TOKENS = 8  # support looks at a quote's first tokens: where a choice made for the question shows
# a quote counts when the question makes it at least 50% likelier per token than a neutral question does, and the
# passage at least 50% likelier than an empty excerpt: ratios between two readings by the same model, not a
# probability fitted to one model
MIN_SUPPORT = math.log(1.5)
SUMMARY_TOKENS = 40
OUTLINE_PARTS = 8  # overview: at most this many distinct chunk summaries follow the collapsed answer
TOP_LOGPROBS = 20  # yes/no: the first word's alternatives looked at
YESNO_TOP = 3  # yes/no: passages searched for the sentence that holds the question's words, most relevant first
MAX_OVERLAP = 64


@dataclass
class Phase:
    name: str
    tokens_read: int
    generated_tokens: int
    seconds: float


@dataclass
class Partial:
    chunk: int  # the passage (facts) or chunk (overview)
    token_span: tuple[int, int]
    byte_span: tuple[int, int]  # the passage's bytes in the document
    answer: str  # the quote (the document's own words), a yes/no, or a summary; "" when it gave none
    confidence: float  # facts: 1 - e^-min(support, grounding) (0: none counts); yes/no: the share of the question's
    # words its sentence holds, or the lean as a probability; overview: the summary's mean token probability
    relevance: float = 0.0  # nats per question token the passage adds to the question's likelihood
    support: float = 0.0  # nats per token the question adds to the quote's likelihood (vs a neutral question)
    grounding: float = 0.0  # nats per token the passage adds to the quote's likelihood (vs an empty excerpt)
    verdict: str = ""  # answer | none | unverified (not in the passage) | echo (the question's words, in a sentence
    # of nothing else; an echo in a sentence that says more is that sentence, checked) | unsupported
    # (as likely with a neutral question) | ungrounded (as likely with an empty excerpt) | lean (yes/no: the model's
    # word on the most relevant passage, shown where a sentence that holds the question's words answered instead) |
    # sentence (lookup: the sentence of the passages read that holds the question's words, the answer where no quote
    # was supported or the quote's sentence holds fewer of them or lacks a name asked about; list: such sentences,
    # an introduction with its marked items; held.py, items.py) | unanswered (such a sentence that the reader,
    # given it alone, said does not answer: shown, not an answer)
    evidence: str = ""  # the sentence that holds the quote
    evidence_span: tuple[int, int] | None = None  # its bytes in the document (the citation)


@dataclass
class LongRecord:
    strategy: str  # what ran: "window", "single" (auto, it fit) or "map"
    answer: str
    found: bool  # False: nothing in the document supported an answer
    document_tokens: int
    chunk_tokens: int = 0
    overlap_tokens: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)  # byte spans of every passage (or chunk)
    partials: list[Partial] = field(default_factory=list)  # the passages read for an answer (or every chunk)
    cited_chunks: list[int] = field(default_factory=list)  # passages the answer drew on
    citations: list[tuple[int, int]] = field(default_factory=list)  # the evidence sentences' bytes in the document
    reduce_rounds: int = 0
    phases: list[Phase] = field(default_factory=list)
    finish_reason: str = "stop"
    window_record: Record | None = None  # the engine's record of the final (or only) read
    tokens: list[int] = field(default_factory=list, repr=False)  # the document's tokens (not reported)
    kind: str = ""  # lookup | list | overview | yesno ("" for a single read)
    conflicts: list[str] = field(default_factory=list)  # lookup: other supported answers, shown not hidden
    backends: list[dict] = field(default_factory=list)  # run --backend: each backend's share (remote.py)
    retried: list[dict] = field(default_factory=list)  # run --backend: requests sent again after a backend failed
    vocabulary: str = ""  # run --backend: what cut the document (the GGUF's path, or a backend's /tokenize)


def record_dict(r: LongRecord) -> dict:
    """What `run --json` and the server's `sentiric` field report: all but the engine record and the tokens."""
    d = {f.name: getattr(r, f.name) for f in fields(r) if f.name not in ("window_record", "tokens")}  # no deep copies
    d["partials"] = [asdict(p) for p in r.partials]
    d["phases"] = [asdict(p) for p in r.phases]
    return d


# the protocol's own reads: greedy, one answer, no user grammar; the user's sampling is for a written answer only
_OWN = dict(sampling=SamplingParams(), n=1, top_logprobs=-1, trace=False)
_SCORE = dict(_OWN, max_tokens=1, score=True, token_logprobs=False, stop=())


class MapJob:
    def __init__(self, model, window: int, prompt: str, tokens: list[int], raw: bool, base: Request,
                 overlap: int = MAX_OVERLAP, kind: str | None = None) -> None:
        if kind is not None and kind not in KINDS:
            raise SentiricError(f"unknown question kind {kind!r}", f"one of {', '.join(KINDS)}")
        self.model, self.window, self.tokens, self.base, self.raw = model, window, tokens, base, raw
        self.question = prompt
        self.kind = kind or detect(prompt)
        pieces = [model.piece(t) for t in tokens]  # once: the chunk boundaries and the excerpts both need them
        offsets = list(accumulate((len(x) for x in pieces), initial=0))
        self.data = b"".join(pieces)
        self.q_tokens = model.tokenize(" " + prompt.strip(), add_special=False)
        if self.kind == "overview":
            self.head, self.tail, _ = frame(model, frames.SUMMARY.format(excerpt=MARK), frames.SUMMARY_CUE, raw)
            size = window - len(self.head) - len(self.tail) - SUMMARY_TOKENS - 1
            size -= max(size, 0) // 16  # the normalized text the model reads may take a few more tokens
            overlap = min(overlap, max(size, 0) // 8)
        else:
            cue = frames.ANSWER_CUE
            self.head, self.tail = self._frame(frames.READ.format(question=prompt, excerpt=MARK), cue)
            self.nhead, self.ntail = self._frame(frames.READ.format(question=frames.NEUTRAL, excerpt=MARK), cue)
            room = window - max(len(self.head) + len(self.tail), len(self.nhead) + len(self.ntail)) - ANSWER_TOKENS
            size = min(PASSAGE_TOKENS, room - 16)  # normalized text may take a few more tokens than the original
            overlap = PASSAGE_OVERLAP
        if size < 32:
            raise SentiricError(f"a {window}-token window leaves {max(size, 0)} tokens per passage after the "
                                "question", "raise the context size or shorten the question")
        self.size, self.overlap = size, min(overlap, size // 8)
        self.chunks = split(offsets, self.data, self.size, self.overlap)
        self.relevance: list[float] = []
        def first_tokens(spellings: list[str]) -> list[int]:
            return sorted({t for w in spellings for t in model.tokenize(w, add_special=False)[:1]})

        self._yes, self._no = first_tokens([" yes", " Yes", "yes", "Yes"]), first_tokens([" no", " No", "no", "No"])
        self.partials: dict[int, Partial] = {}
        self._bodies: dict[int, list[int]] = {}  # the tokens of each passage read for an answer (the check reuses them)
        self._checks: list[int] = []  # passages whose quote was located: the check round scores them
        self._echoed: list[int] = []  # of those, the ones whose reader echoed the question: their sentence is checked
        self._written: dict[int, list[int]] = {}  # their first tokens as written
        self._asked: dict[int, float] = {}  # and those tokens' negative log-likelihood, asked the user's question
        self.held: Partial | None = None  # lookup: the sentence that holds the question's words, where it answers
        self.also: list[Partial] = []  # list: other sentences that hold as much of them
        self.unanswered: list[Partial] = []  # those the reader, given each alone, said do not answer (add_alone)
        self._texts: list[str] = []  # facts: every passage's text as the map read it (normalized)
        self._weights: dict[str, float] | None = None  # the question's words by rarity (_weight)
        self.rhead, self.rtail, self.templated = frame(model, frames.COLLAPSE.format(excerpt=MARK),
                                                       frames.COLLAPSE_CUE, raw)
        # a base model would write on past its answer line into a new example: stop at the line's end
        self.final_stop = base.stop if self.templated else (*base.stop, "\n")

    def _frame(self, content: str, cue: str) -> tuple[list[int], list[int]]:
        """Head and tail around a passage. With a chat template the answer turn starts with the cue ("Answer:"), as
        every worked example's answer does: the model answers in the examples' form, not by repeating the question."""
        head, tail, templated = frame(self.model, content, cue, self.raw)
        if templated:
            tail = tail + self.model.tokenize(cue.strip(), add_special=False, parse_special=False)
        return head, tail

    # ---- passages

    def text(self, c: Chunk) -> str:
        return self.data[c.byte_start:c.byte_end].decode("utf-8", errors="replace")

    def _excerpt(self, c: Chunk) -> tuple[str, list[int]]:
        return evidence.normalized(self.text(c))

    def _tokens(self, c: Chunk) -> list[int]:
        return self._tokens_of(self.text(c))

    def _tokens_of(self, text: str) -> list[int]:
        """A text as the reads give it to the model: normalized (evidence.py), then tokenized."""
        return self.model.tokenize(evidence.normalized(text)[0], add_special=False)

    def _bytes(self, c: Chunk, char: int) -> int:
        """The document byte offset of a character of the passage's text."""
        return c.byte_start + len(self.text(c)[:char].encode("utf-8", errors="replace"))

    # ---- map: relevance of every passage

    def map_requests(self) -> list[Request]:
        """Facts: each passage then the question, the question's tokens scored; last, the question after an empty
        excerpt (the baseline). Overview: each chunk's one-line summary."""
        if self.kind == "overview":
            return [self.base.reading(self.head, self._tokens(c), self.tail, max_tokens=SUMMARY_TOKENS,
                                      stop=("\n",), token_logprobs=True, score=False, **_OWN) for c in self.chunks]
        self._texts = [self._excerpt(c)[0] for c in self.chunks]  # kept: add_held weighs the question's words by them
        heads = [self._relevance_head(t) for t in self._texts] + [self._relevance_head("")]
        return [self.base.reading(h, self.q_tokens, [], **_SCORE) for h in heads]

    def _relevance_head(self, excerpt: str) -> list[int]:
        return self.model.tokenize(frames.RELEVANCE.format(excerpt=excerpt), add_special=True)

    def add_map(self, recs: list[Record]) -> None:
        if self.kind == "overview":
            for i, rec in enumerate(recs):
                c = self.chunks[i]
                lps = rec.token_logprobs
                conf = round(math.exp(sum(lps) / len(lps)), 4) if lps else 0.0
                text = evidence.first_sentence(rec.text)
                self.partials[i] = Partial(c.index, (c.start, c.end), (c.byte_start, c.byte_end), text, conf,
                                           verdict="answer" if text else "none")
            return
        base = recs[-1].nll
        self.relevance = [round((base - r.nll) / max(1, r.scored_tokens), 4) for r in recs[:-1]]

    def selected(self) -> list[int]:
        """The passages read for an answer: the most relevant; for a lookup, the most relevant and the one that holds
        most of the question's rare words (held.passage), where that is another; for a list, every one that stands
        out of the document's own spread (above the midpoint between the median and the best), LIST_MIN to
        LIST_TOP, and that one where it is not among them (the introduction of a list can say the question's words
        in a passage the model ranks low)."""
        order = sorted(range(len(self.relevance)), key=lambda i: -self.relevance[i])
        if self.kind == "yesno":
            return order[:YESNO_TOP]
        lex = held.passage(self.question, [self._texts[i] for i in order], self._weight())
        words = [] if lex is None else [order[lex]]
        if self.kind != "list":
            first = order[:READ_TOP - 1]
            return first + words if words and words[0] not in first else order[:READ_TOP]
        med, top = statistics.median(self.relevance), self.relevance[order[0]]
        standing = [i for i in order if self.relevance[i] >= (med + top) / 2]
        chosen = order[:max(LIST_MIN, min(LIST_TOP, len(standing)))]
        return chosen + [i for i in words if i not in chosen]

    # ---- read: the answer each selected passage gives

    def read_requests(self, chosen: list[int]) -> list[Request]:
        """Facts: each chosen passage read for a quote. Yes/no: the most relevant passage, then an empty excerpt (the
        baseline), each asked for one word, with the alternatives' log-probabilities."""
        if self.kind == "yesno":
            head, tail = self._frame(frames.YESNO.format(question=self.question, excerpt=MARK), frames.ANSWER_CUE)
            own = dict(_OWN, top_logprobs=TOP_LOGPROBS)
            return [self.base.reading(head, body, tail, max_tokens=1, stop=(), token_logprobs=False, score=False, **own)
                    for body in (self._tokens(self.chunks[chosen[0]]), [])]
        for i in chosen:
            self._bodies[i] = self._tokens(self.chunks[i])
        return [self.base.reading(self.head, self._bodies[i], self.tail, max_tokens=ANSWER_TOKENS, stop=("\n",),
                                  token_logprobs=True, score=False, **_OWN) for i in chosen]

    def add_yesno(self, chosen: list[int], passage: Record, empty: Record) -> None:
        """Yes or no. First from the sentence of the chosen passages that holds most of the question's words: "no"
        when a negation stands among them (polarity.py). Where no sentence holds more than half of them, from the
        model's lean on the most relevant passage: which word it makes likelier than the model says with nothing to
        read (its prior for this question), so a model that answers "yes" to everything does not answer "yes" here."""
        c = self.chunks[chosen[0]]
        excerpts = [self._excerpt(self.chunks[i]) for i in chosen]
        lean = self._yes_over_no(passage) - self._yes_over_no(empty)
        self.partials[chosen[0]] = Partial(
            c.index, (c.start, c.end), (c.byte_start, c.byte_end), "Yes" if lean > 0 else "No",
            round(1 / (1 + math.exp(-abs(lean))), 4), relevance=self.relevance[chosen[0]], support=round(lean, 4),
            verdict="answer", evidence=_short(excerpts[0][0]), evidence_span=(c.byte_start, c.byte_end))
        said = polarity.answer(self.question, [text for text, _ in excerpts])
        if said is None:
            return
        self.partials[chosen[0]].verdict = "lean"  # shown, not the answer: the sentence says it
        i, (text, where), (s, e) = chosen[said.passage], excerpts[said.passage], said.sentence
        c = self.chunks[i]
        p = self.partials.get(i) or Partial(c.index, (c.start, c.end), (c.byte_start, c.byte_end), "", 0.0,
                                            relevance=self.relevance[i])
        p.answer, p.confidence, p.verdict = said.answer, round(said.held / said.asked, 4), "answer"
        p.evidence, p.evidence_span = text[s:e], (self._bytes(c, where[s]), self._bytes(c, where[e - 1] + 1))
        self.partials[i] = p

    def _yes_over_no(self, rec: Record) -> float:
        """log P(yes) - log P(no) for the first word, over its spellings among the top alternatives; a word with
        no spelling there counts as the least likely of them."""
        top = dict(rec.logprobs[0][2]) if rec.logprobs else {}
        floor = min(top.values(), default=-30.0)

        def lp(ids: list[int]) -> float:
            vals = [top[t] for t in ids if t in top] or [floor]
            m = max(vals)
            return m + math.log(sum(math.exp(v - m) for v in vals))

        return lp(self._yes) - lp(self._no)

    def add_read(self, i: int, rec: Record) -> Partial:
        c = self.chunks[i]
        p = Partial(c.index, (c.start, c.end), (c.byte_start, c.byte_end), "", 0.0, relevance=self.relevance[i])
        self.partials[i] = p
        said = evidence.first_sentence(rec.text)
        if evidence.not_found(said):
            p.verdict = "none"
            return p
        excerpt, where = self._excerpt(c)
        at = evidence.locate(said, excerpt)
        if at is None:  # a list-like answer may hold a quote beside an invention: keep the longest part it holds
            held = [a for a in (evidence.locate(x, excerpt) for x in evidence.parts(said)) if a is not None]
            at = max(held, key=lambda a: a.end - a.start, default=None)
        if at is None:
            p.answer, p.verdict = said, "unverified"  # not in the passage: made up
            return p
        p.answer = excerpt[at.start:at.end]
        s, e = at.sentence
        p.evidence = excerpt[s:e]
        p.evidence_span = (self._bytes(c, where[s]), self._bytes(c, where[e - 1] + 1))
        if evidence.echoes(p.answer, self.question):
            # the reader found where the passage says the question's words and copied them, not what they say
            # there ("You institute patent litigation", for "When does the license terminate if you institute
            # patent litigation?"): the sentence that holds them is the candidate (add_checks says how it is judged)
            if evidence.echoes(p.evidence, self.question):
                p.verdict = "echo"
                return p
            p.answer = p.evidence
            self._written[i] = self.model.tokenize(" " + p.evidence, add_special=False)[:CHECK_TOKENS]
            self._echoed.append(i)  # the check round scores it asked the user's question too: the read wrote no such tokens
        else:
            # the answer's own tokens (not the stop string's or end-of-generation's, which no server reports): the
            # check judges what the reader wrote; the answer shown starts where its phrase does (phrase.py)
            self._written[i] = rec.tokens[:min(CHECK_TOKENS, self._text_tokens(rec))]
            self._asked[i] = -sum(rec.token_logprobs[:len(self._written[i])])
            p.answer = excerpt[phrase.start(self.question, excerpt, s, at.start):at.end]
        p.verdict = "unsupported"  # until the check round says otherwise
        self._checks.append(i)
        return p

    def _text_tokens(self, rec: Record) -> int:
        """How many of the generated tokens start inside the answer's text."""
        starts = byte_offsets(self.model, rec.tokens)[:-1]
        return bisect.bisect_left(starts, len(rec.text.encode("utf-8")))

    # ---- check: does the question drive the quote?

    def check_requests(self) -> list[Request]:
        """Two scorings per located quote, of its first tokens as written: after the passage with the neutral
        question, then after an empty excerpt with the user's question. (After the passage with the user's question,
        their log-probabilities came with the read; an echo's sentence, which the read did not write, is scored
        there too, last.)"""
        return ([self.base.reading(self.nhead + self._bodies[i] + self.ntail, self._written[i], [], **_SCORE)
                 for i in self._checks]
                + [self.base.reading(self.head + self.tail, self._written[i], [], **_SCORE) for i in self._checks]
                + [self.base.reading(self.head + self._bodies[i] + self.tail, self._written[i], [], **_SCORE)
                   for i in self._echoed])

    def add_checks(self, recs: list[Record]) -> None:
        n = len(self._checks)
        for i, rec in zip(self._echoed, recs[2 * n:], strict=True):
            self._asked[i] = rec.nll
        for i, neutral, empty in zip(self._checks, recs[:n], recs[n:2 * n], strict=True):
            p, echo = self.partials[i], i in self._echoed
            p.support = round((neutral.nll - self._asked[i]) / max(1, neutral.scored_tokens), 4)
            p.grounding = round((empty.nll - self._asked[i]) / max(1, empty.scored_tokens), 4)
            # copied: as likely whatever the question. An echo's sentence needs only to be no less likely than
            # with a neutral question: the echo (the question's words) chose it, and a sentence copied whole is as
            # likely either way from its second token on, so its support is its first token's, spread over eight.
            # One the neutral question prefers ("Remove all items from the dictionary.", for what get() returns)
            # was not the question's choice
            if p.support < (0.0 if echo else MIN_SUPPORT):
                continue
            if p.grounding < MIN_SUPPORT:  # the model's prior for the question ("C" for a language), not the passage
                p.verdict = "ungrounded"
                continue
            p.verdict = "answer"
            p.confidence = round(1 - math.exp(-(p.grounding if echo else min(p.support, p.grounding))), 4)

    def add_held(self, chosen: list[int]) -> None:
        """The sentence of the chosen passages that holds the question's words (held.py). Lookup: the answer where no
        quote was supported, or where the best-supported quote's sentence holds fewer of those words than that
        sentence does: the reader quoted another sentence of the right passage ("all copyright, patent, trademark,
        and attribution notices", for what modified files must carry) or wrote what the passage does not say. List:
        more items of the union: the sentence that introduces a list ("the following values are interpreted as
        false: ..."), which the reader seldom quotes whole, with the marked items after it read off the document
        (items.py), and every other sentence that holds as much of the question's words."""
        if self.kind not in ("lookup", "list"):
            return
        listed = self.kind == "list"
        excerpts = [self._excerpt(self.chunks[i]) for i in chosen]
        weight = self._weight()
        found = held.sentences(self.question, [text for text, _ in excerpts], weight, listed)
        if not found:
            return
        quoted = self._best()
        helds = [self._held(chosen[h.passage], excerpts[h.passage], h) for h in found]
        # weighed as the sentence that answers: a heading that held the words gave way to the sentence after it. A
        # quote's sentence without a name the question asks about holds less: '"This License" refers to ...' does
        # not answer what "the Program" refers to, though it holds "refers". A quote from the held sentence itself
        # (its clause after a semicolon: "containers") is that sentence's answer, read closer
        if not listed and quoted and (_within(quoted[0].evidence_span, helds[0].evidence_span) or (
                held.asked(self.question).named <= held.stems(quoted[0].evidence) and (
                held.holds(weight, quoted[0].evidence) >= held.holds(weight, helds[0].evidence)))):
            return
        self.held, *self.also = helds

    def alone_requests(self) -> list[Request]:
        """Each sentence that holds the question's words (add_held), read alone with the question for its first
        words: where the reader says "none", the sentence holds the words in another sense than the question's."""
        return [self.base.reading(self.head, self._tokens_of(p.answer), self.tail, max_tokens=ALONE_TOKENS,
                                  stop=("\n",), token_logprobs=False, score=False, **_OWN) for p in self._helds()]

    def add_alone(self, recs: list[Record]) -> None:
        """A held sentence the reader, given it alone, says does not answer is no answer: "none" is the model's own
        judgement of what that sentence says, asked as every passage is asked, not a threshold. Read alone, none of
        56 sentences that answered a lookup right (the eval's two halves and an outside set: 22 held, 34 quotes'
        sentences) got "none"; two of the four held sentences outside sets gave absent questions did
        (docs/benchmarks-history.md)."""
        kept = []
        for p, rec in zip(self._helds(), recs, strict=True):
            if evidence.not_found(evidence.first_sentence(rec.text)):
                p.verdict = "unanswered"
                self.unanswered.append(p)
            else:
                kept.append(p)
        self.held, self.also = (kept[0], kept[1:]) if kept else (None, [])

    def _held(self, i: int, excerpt: tuple[str, list[int]], said: held.Held) -> Partial:
        """A held sentence as a partial answer; one that introduces marked items runs on through them (items.py),
        read off the document's text after its colon, however far past the passage they go."""
        c, (text, where), (s, e) = self.chunks[i], excerpt, said.sentence
        answer, span = text[s:e], (self._bytes(c, where[s]), self._bytes(c, where[e - 1] + 1))
        colon = items.colon(text[s:], e - s) if self.kind == "list" else None
        if colon is not None:
            after = self._bytes(c, where[s + colon] + 1)
            raw = self.data[after:after + items.SCAN_CHARS * 4].decode("utf-8", errors="replace")
            listed = items.following(raw)
            if listed:
                answer = " ".join([answer[:colon + 1], *(x.text for x in listed)])
                span = (span[0], after + len(raw[:listed[-1].end].encode("utf-8", errors="replace")))
        return Partial(c.index, (c.start, c.end), (c.byte_start, c.byte_end), answer, round(said.held / said.asked, 4),
                       relevance=self.relevance[i], verdict="sentence", evidence=answer, evidence_span=span)

    def _best(self) -> list[Partial]:
        """Supported quotes, the best first: the one whose sentence holds the question's names and the most weight of
        its words (as add_held weighs the sentence that holds them), then the best-supported (the highest confidence:
        the weaker of support and grounding), then the more relevant passage. Neither relevance nor support alone
        says which quote answers: "2021", from a list of copyright years, was better supported than "2001", from "In
        2001, the Python Software Foundation ... was formed"; "Virginia", from a governing-law clause, came from a
        more relevant passage than "Reston, VA", from the sentence that names CNRI's office."""
        named, weight = held.asked(self.question).named, self._weight()
        return sorted(self.supported(), key=lambda p: (not named <= held.stems(p.evidence),
                                                       -held.holds(weight, p.evidence), -p.confidence, -p.relevance))

    def _weight(self) -> dict[str, float]:
        """The question's words, weighed by how rarely the document's passages say them (held.weights); once."""
        if self._weights is None:
            self._weights = held.weights(held.asked(self.question), self._texts)
        return self._weights

    # ---- reduce

    def _helds(self) -> list[Partial]:
        """The sentences that hold the question's words (add_held): the first, then a list's others."""
        return ([self.held] if self.held else []) + self.also

    def supported(self) -> list[Partial]:
        return [p for p in self.partials.values() if p.verdict == "answer" and p.answer]

    def record(self, phases: list[Phase]) -> LongRecord:
        """Facts: the answer by kind from the supported partial answers; none: NOT_FOUND."""
        found = self.supported() + self._helds()
        conflicts: list[str] = []
        if not found:
            answer, cited = NOT_FOUND, []
        elif self.kind == "list":
            # each quote's whole sentence: a list's items are written together, and the reader quotes one or two
            # of them ("loss of goodwill", from "loss of goodwill, work stoppage, computer failure or malfunction")
            cited = _distinct(sorted(found, key=lambda p: (p.evidence_span or p.byte_span)[0]), _said, longest=True)
            answer = _joined([_said(p) for p in cited])
        elif self.kind == "yesno":
            cited = found[:1]
            answer = f"{cited[0].answer}, from: \"{cited[0].evidence}\""
        else:
            # the sentence that holds the question's words where it answers (add_held), else the best-supported quote
            ranked = _distinct(([self.held] if self.held else []) + self._best())
            cited, conflicts = ranked[:1], [p.answer for p in ranked[1:]]
            answer = cited[0].answer + (f" (other passages say: {'; '.join(conflicts)})" if conflicts else "")
        return self._record(answer, bool(found), phases, cited, conflicts)

    def _record(self, answer: str, found: bool, phases: list[Phase], cited: list[Partial], conflicts: list[str],
                rounds: int = 0, final: Record | None = None) -> LongRecord:
        spans = [p.evidence_span or p.byte_span for p in cited]
        return LongRecord("map", answer, found, len(self.tokens), self.size, self.overlap,
                          [(c.byte_start, c.byte_end) for c in self.chunks],
                          [self.partials[i] for i in sorted(self.partials)] + self._helds() + self.unanswered,
                          [p.chunk for p in cited], spans, rounds,
                          phases, final.finish_reason if final else "stop", final, self.tokens, self.kind, conflicts)

    # ---- overview: collapse partial summaries in rounds

    def summaries(self) -> list[Partial]:
        return [self.partials[i] for i in sorted(self.partials) if self.partials[i].answer]

    def groups(self, items: list[Partial]) -> list[list[Partial]]:
        """Partial summaries in groups whose listing fits the collapse window."""
        room = self.window - len(self.rhead) - len(self.rtail) - min(self.base.max_tokens, self.window // 4) - 1
        groups: list[list[Partial]] = []
        cur: list[Partial] = []
        used = 0
        for p in items:
            n = len(self.model.tokenize(_listing([p])))  # each line once; their sum bounds the listing
            if cur and used + n > room:
                groups.append(cur)
                cur, used = [], 0
            cur.append(p)
            used += n
        groups.append(cur)
        return groups

    def reduce_request(self, group: list[Partial], final: bool) -> Request:
        body = self.model.tokenize(_listing(group))
        if final:  # the answer: the user's sampling, length and logprobs, one answer
            return self.base.reading(self.rhead, body, self.rtail, stop=self.final_stop, n=1)
        return self.base.reading(self.rhead, body, self.rtail, max_tokens=SUMMARY_TOKENS * 2, stop=("\n",),
                                 token_logprobs=False, score=False, **_OWN)

    @staticmethod
    def merged(group: list[Partial], rec: Record) -> Partial:
        """An intermediate round's summary stands for its group (labelled with the group's first chunk)."""
        span = (min(p.byte_span[0] for p in group), max(p.byte_span[1] for p in group))
        return Partial(group[0].chunk, (group[0].token_span[0], group[-1].token_span[1]), span, clean(rec.text),
                       max(p.confidence for p in group), verdict="answer")

    def overview_record(self, answer: str, phases: list[Phase], rounds: int, final: Record | None) -> LongRecord:
        """The collapsed answer, then an outline: the distinct chunk summaries in document order. A small model's
        collapse keeps one topic of many (the first chunk's, often); the outline keeps what each part said."""
        cited = self.summaries()
        if not answer.strip():
            return self._record(NOT_FOUND, False, phases, cited, [], rounds, final)
        text = f"{frames.ABOUT} {answer.strip()}"
        lines = outline(cited, text)
        if lines:
            text += "\n" + frames.OUTLINE + "".join(f"\n- {line}" for line in lines)
        return self._record(text, True, phases, cited, [], rounds, final)


def _same(ps: list[Partial], key) -> list[list[Partial]]:
    """The partials grouped by what they say, in order: one whose word set (`key`, of a partial) holds, or is held
    by, a group's first is that group's."""
    groups: list[tuple[set[str], list[Partial]]] = []
    for p in ps:
        mine = key(p)
        same = next((g for g in groups if mine <= g[0] or g[0] <= mine), None)
        if same is None:
            groups.append((mine, [p]))
        else:
            same[1].append(p)
    return [g for _, g in groups]


def _distinct(ps: list[Partial], said=lambda p: p.answer, longest: bool = False) -> list[Partial]:
    """Each answer once: one whose words another kept answer already holds (or holds all of) is the same fact; the
    first of them is kept, or with `longest` the one with most to say."""
    groups = _same(ps, lambda p: {w for w, _, _ in evidence.words(said(p))})
    return [max(g, key=lambda p: len(said(p))) if longest else g[0] for g in groups]


def _said(p: Partial) -> str:
    """A list item: the sentence that holds the quote (the quote where it has none)."""
    return p.evidence or p.answer


def _joined(items: list[str]) -> str:
    """A list's items: after a whole sentence a space, after a phrase "; "."""
    out = ""
    for t in items:
        out += ("" if not out else " " if out[-1] in ".!?" else "; ") + t
    return out


def outline(summaries: list[Partial], said: str, n: int = OUTLINE_PARTS) -> list[str]:
    """Up to n distinct summaries (not one the answer already says), evenly spread over the document, each with
    the parts that said it: a summary another holds, or that holds another, is the same topic."""
    told = evidence.content(said)
    groups = _same([p for p in summaries if (mine := evidence.content(p.answer)) and not mine <= told],
                   lambda p: evidence.content(p.answer))
    if len(groups) > n:  # keep the first and last, and the rest at even steps between
        groups = [groups[round(i * (len(groups) - 1) / max(1, n - 1))] for i in range(n)]
    return [f"{g[0].answer.rstrip('.:;, ')} ({'part' if len(g) == 1 else 'parts'} "
            f"{', '.join(str(p.chunk + 1) for p in g)})" for g in groups]


def _within(inner: tuple[int, int] | None, outer: tuple[int, int] | None) -> bool:
    return inner is not None and outer is not None and outer[0] <= inner[0] and inner[1] <= outer[1]


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " ..."


def _listing(ps: list[Partial]) -> str:
    """One line per distinct summary, with the parts it came from."""
    parts: dict[str, list[int]] = {}
    for p in sorted(ps, key=lambda p: p.chunk):
        parts.setdefault(p.answer, []).append(p.chunk + 1)
    label = {a: ("part " if len(c) == 1 else "parts ") + ", ".join(map(str, c)) for a, c in parts.items()}
    return "".join(f"- {a} ({label[a]})\n" for a in parts)


_PART_LABEL = re.compile(r"\s*\(parts? [\d, ]+\)")


def clean(text: str) -> str:
    """The answer without the part labels a base model may copy from the listing (the record keeps sources)."""
    return _PART_LABEL.sub("", text).strip()
