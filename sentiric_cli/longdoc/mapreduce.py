"""Map-reduce over one tokenized document, as data: MapJob makes the requests (a chunk's partial answer, a group's
reduce) and reads their records (confidence, grounding, citations); protocol.py puts them in order.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from itertools import accumulate

from sentiric_cli.engine.prompt import MARK, frame
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.longdoc.chunks import split

NOT_FOUND = "The document does not seem to contain the answer."
# Few-shot frames: base models follow a worked example far better than an instruction. Each chunk is read
# as the excerpt of a third example; the reduce step combines one-line partial answers the same way.
MAP_FRAME = ("Answer the question using only the excerpt. When the excerpt does not contain the answer, answer: none."
             "\n\nQuestion: What is the name of the mayor?"
             "\nExcerpt: The library opens at nine. The roof was repaired last year by the town."
             "\nQuestion: What is the name of the mayor?\nAnswer: none"
             "\n\nQuestion: When do the two trains leave?"
             "\nExcerpt: The train leaves at 7:40 from platform 3. Tickets are sold at the door."
             "\nQuestion: When do the two trains leave?\nAnswer: 7:40"
             "\n\nQuestion: {question}\nExcerpt: {excerpt}\nQuestion: {question}")
REDUCE_FRAME = ("Combine the partial answers, found in different parts of a document, into one answer to the question."
                "\n\nQuestion: When do the trains leave?\nPartial answers:\n- 7:40 (part 2)\n- 9:15 (part 5)"
                "\nAnswer: 7:40 and 9:15"
                "\n\nQuestion: Who repaired the roof?\nPartial answers:\n- the town (part 1)\nAnswer: the town"
                "\n\nQuestion: {question}\nPartial answers:\n{excerpt}")
PARTIAL_TOKENS = 16  # a partial answer is short: a fact, a name, a number
CONFIDENCE_TOKENS = 8  # confidence looks at an answer's first tokens: where a guess and a quote differ
CONFIDENT = 0.6  # at which a partial answer counts; bundled model: quotes 0.68-0.97, guesses 0.43-0.53
MAX_OVERLAP = 64
SHORT_WORDS = 4  # an answer this short is a quote (a number, a name) or a guess: it must be in its excerpt
_NONE = ("none", "")


@dataclass
class Phase:
    name: str
    tokens_read: int
    generated_tokens: int
    seconds: float


@dataclass
class Partial:
    chunk: int
    token_span: tuple[int, int]
    byte_span: tuple[int, int]
    answer: str
    confidence: float


@dataclass
class LongRecord:
    strategy: str  # what ran: "window", "single" (auto, it fit) or "map"
    answer: str
    found: bool  # False: no chunk gave a confident answer
    document_tokens: int
    chunk_tokens: int = 0
    overlap_tokens: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)  # byte spans of every chunk
    partials: list[Partial] = field(default_factory=list)
    cited_chunks: list[int] = field(default_factory=list)  # chunks the answer drew on
    citations: list[tuple[int, int]] = field(default_factory=list)  # their byte spans in the document
    reduce_rounds: int = 0
    phases: list[Phase] = field(default_factory=list)
    finish_reason: str = "stop"
    window_record: Record | None = None  # the engine's record of the final (or only) read
    tokens: list[int] = field(default_factory=list, repr=False)  # the document's tokens (not reported)


def record_dict(r: LongRecord) -> dict:
    """What `run --json` and the server's `sentiric` field report: all but the engine record and the tokens."""
    d = {f.name: getattr(r, f.name) for f in fields(r) if f.name not in ("window_record", "tokens")}  # no deep copies
    d["partials"] = [asdict(p) for p in r.partials]
    d["phases"] = [asdict(p) for p in r.phases]
    return d


def confidence(lps: list[float]) -> float:
    """The model's own belief in an answer, from its tokens' probabilities.

    The first token chooses what to say (a number, a name, "none": several candidates compete, so it is
    unsure even when right); the next ones show whether the model is quoting the excerpt (near-certain)
    or making it up (unsure all along). So: the geometric mean of tokens 2..CONFIDENCE_TOKENS, or of the
    first token for a one-token answer. Later tokens of a long guess (12345678...) become predictable,
    so they do not count.
    """
    lps = lps[1:CONFIDENCE_TOKENS] if len(lps) > 1 else lps
    return math.exp(sum(lps) / len(lps)) if lps else 0.0


_MARKER = re.compile(r"^(?:(?:and|or)\s+|\d{1,2}[.)]\s+|[-*]\s+)", re.IGNORECASE)  # "1. ", not "10007. "
_PARTS = re.compile(r"[^,;]+?(?=\s*(?:,|;|\band\b|\bor\b|$))", re.IGNORECASE)


def grounded(text: str, pieces: list[bytes], lps: list[float], excerpt: str) -> tuple[str, list[float]]:
    """Keep the parts of a list-like answer ("A and B", "A, B") that the excerpt contains, when some do.

    Asked for two facts, a chunk holding one answers with it and invents the other ("17145 and 27145"
    where only 27145 is there). Parts found verbatim in the excerpt are kept, with the log-probabilities
    of the tokens that wrote them (so the confidence is that of the quote). A short answer (a number, a
    name) with no part in the excerpt is a guess: it gets no log-probabilities, so no confidence. A longer
    one (a paraphrase, a summary) is left as it is.
    """
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    spans: list[tuple[int, int, str]] = []
    parts, exact = 0, True
    for m in _PARTS.finditer(stripped):
        part = m.group(0).strip().strip(".").strip()
        if not part:
            continue
        parts += 1
        word = _MARKER.sub("", part)  # "and 64390", "1. The pass key is 64390": the quote is after the marker
        if word and word.lower() in excerpt.lower():
            at = m.start() + m.group(0).find(word)
            if all(w.lower() != word.lower() for _, _, w in spans):  # "31877 and 31877": once
                spans.append((lead + at, lead + at + len(word), word))
            exact = exact and word == part
    if not spans and len(stripped.split()) <= SHORT_WORDS:
        return stripped, []  # a short answer the excerpt does not contain is a guess: no confidence
    if not spans or (len(spans) == parts and exact):
        return stripped, lps
    ends, at = [], 0  # each token's character span in the answer text
    for p in pieces:
        n = len(p.decode("utf-8", errors="replace"))
        ends.append((at, at + n))
        at += n
    keep = [lp for (a, b), lp in zip(ends, lps, strict=False) if any(a < e and b > s for s, e, _ in spans)]
    return " and ".join(w for _, _, w in spans), keep or lps


# the protocol's own reads (partial answers, intermediate reduces): greedy, unconstrained, one answer, with each
# token's probability (confidence); the user's sampling and grammar are for the answer only
_OWN = dict(sampling=SamplingParams(), stop=("\n",), token_logprobs=True, n=1, top_logprobs=-1, trace=False,
            score=False)


class MapJob:
    def __init__(self, model, window: int, prompt: str, tokens: list[int], raw: bool, base: Request,
                 overlap: int = MAX_OVERLAP) -> None:
        self.model, self.window, self.tokens, self.base = model, window, tokens, base
        self.head, self.tail, self.templated = frame(model, MAP_FRAME.format(question=prompt, excerpt=MARK),
                                                     "\nAnswer:", raw)
        self.size = window - len(self.head) - len(self.tail) - PARTIAL_TOKENS - 1
        if self.size < 64:
            raise SentiricError(f"a {window}-token window leaves {max(self.size, 0)} tokens per chunk after the "
                                "question", "raise the context size or shorten the question")
        self.overlap = min(overlap, self.size // 8)
        pieces = [model.piece(t) for t in tokens]  # once: the chunk boundaries and the excerpts both need them
        offsets = list(accumulate((len(x) for x in pieces), initial=0))
        self.data = b"".join(pieces)
        self.chunks = split(offsets, self.data, self.size, self.overlap)
        self.partials: list[Partial | None] = [None] * len(self.chunks)
        self.question_words = _content(prompt)
        self.rhead, self.rtail, _ = frame(model, REDUCE_FRAME.format(question=prompt, excerpt=MARK), "\nAnswer:", raw)
        # a base model would write on past its answer line into a new example: stop at the line's end
        self.final_stop = base.stop if self.templated else (*base.stop, "\n")

    def map_requests(self) -> list[Request]:
        """One greedy one-line partial answer per chunk, each chunk read fresh, with its tokens' probabilities."""
        return [self.base.reading(self.head, self.tokens[c.start:c.end], self.tail, max_tokens=PARTIAL_TOKENS, **_OWN)
                for c in self.chunks]

    def add_partial(self, i: int, rec: Record) -> Partial:
        c = self.chunks[i]
        excerpt = self.data[c.byte_start:c.byte_end].decode("utf-8", errors="replace")
        raw = rec.text
        if rec.finish_reason == "length":  # cut mid-sentence at the token limit: keep the complete sentences
            ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", raw)]
            raw = raw[:ends[-1]] if ends else raw
        text, lps = grounded(raw, [self.model.piece(t) for t in rec.tokens], rec.token_logprobs, excerpt)
        if len(text.split()) > SHORT_WORDS and not (_content(text) & self.question_words):
            lps = []  # a long answer with not one word of the question: a copy of the excerpt, not an answer
        conf = 0.0 if text.lower().strip(".") in _NONE else round(confidence(lps), 4)
        p = self.partials[i] = Partial(c.index, (c.start, c.end), (c.byte_start, c.byte_end), text, conf)
        return p

    def confident(self) -> list[Partial]:
        return sorted((p for p in self.partials if p is not None and p.confidence >= CONFIDENT),
                      key=lambda p: -p.confidence)

    def groups(self, items: list[Partial]) -> list[list[Partial]]:
        """Partial answers in groups whose listing fits the reduce window."""
        room = self.window - len(self.rhead) - len(self.rtail) - min(self.base.max_tokens, self.window // 4) - 1
        groups: list[list[Partial]] = []
        cur: list[Partial] = []
        used = 0
        for p in items:
            # each line tokenized once; their sum bounds the listing (which writes a repeated answer once)
            n = len(self.model.tokenize(_listing([p])))
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
        return self.base.reading(self.rhead, body, self.rtail, max_tokens=PARTIAL_TOKENS * 2, **_OWN)

    @staticmethod
    def merged(group: list[Partial], rec: Record) -> Partial:
        """An intermediate round's answer stands for its group (labelled with the group's first chunk)."""
        span = (min(p.byte_span[0] for p in group), max(p.byte_span[1] for p in group))
        return Partial(group[0].chunk, (group[0].token_span[0], group[-1].token_span[1]), span, clean(rec.text),
                       max(p.confidence for p in group))

    def record(self, answer: str, phases: list[Phase], rounds: int = 0, final: Record | None = None) -> LongRecord:
        confident = self.confident()
        found = bool(confident) and final is not None
        cited = cited_partials(answer, confident) if found else []
        return LongRecord("map", answer, found, len(self.tokens), self.size, self.overlap,
                          [(c.byte_start, c.byte_end) for c in self.chunks], [p for p in self.partials if p],
                          [p.chunk for p in cited], [p.byte_span for p in cited], rounds, phases,
                          final.finish_reason if final else "stop", final, self.tokens)


def _listing(ps: list[Partial]) -> str:
    """One line per distinct answer, with the parts it came from (the same answer from several parts once)."""
    parts: dict[str, list[int]] = {}
    for p in sorted(ps, key=lambda p: p.chunk):
        parts.setdefault(p.answer, []).append(p.chunk + 1)
    label = {a: ("part " if len(c) == 1 else "parts ") + ", ".join(map(str, c)) for a, c in parts.items()}
    return "".join(f"- {a} ({label[a]})\n" for a in parts)


_PART_LABEL = re.compile(r"\s*\(parts? [\d, ]+\)")


def clean(text: str) -> str:
    """The answer without the part labels a base model may copy from the listing (the record keeps sources)."""
    return _PART_LABEL.sub("", text).strip()


_STOP = set("""what which who whom whose when where why how the and for are was were is be been this that these those
with from into onto about does did do has have had its it's their there they them than then not but you your our
any all can could would should will shall may might must""".split())


def _content(text: str) -> set[str]:
    """Content words (3+ letters, not a function word), lower case, for the question-relevance check."""
    return {w for w in _words(text) if not w.isdigit() and w not in _STOP}


def _words(text: str) -> set[str]:
    words = (w.strip(".,;:!?\"'()[]").lower() for w in text.split())
    return {w for w in words if len(w) >= 3 or w.isdigit()}


def cited_partials(text: str, confident: list[Partial]) -> list[Partial]:
    """The partial answers the final answer drew on: those sharing a distinctive word with it; else the best."""
    answer = _words(text)
    shared = set.intersection(*(_words(p.answer) for p in confident)) if len(confident) > 1 else set()
    hits = [p for p in confident if (_words(p.answer) - shared) & answer]
    return sorted(hits or confident[:1], key=lambda p: p.chunk)
