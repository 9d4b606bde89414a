"""Long-document prompt layout: a pinned head, the document streamed through the window, a tail.

    head: BOS + instruction + question + "Document:"     (pinned: every chunk is read with the question in mind)
    body: the document                                    (evicted oldest-first when the window is full)
    tail: the question again + the answer cue             (read last, right before the answer)

With the model's chat template (from the GGUF) the same text is one user turn, split around the
document; base models without a template get the plain-text version.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentiric_cli.engine.bindings import Model
from sentiric_cli.engine.doctokens import tokenize_document

INSTRUCTION = "Read the document below, then answer the question."
MARK = "\u2063SENTIRIC-DOCUMENT\u2063"  # invisible separator: cannot occur in the rendered template by accident


@dataclass
class Layout:
    head: list[int]
    body: list[int]
    tail: list[int]
    templated: bool


def layout(model: Model, prompt: str, document: str | None, instruction: str = INSTRUCTION, raw: bool = False,
           progress=None) -> Layout:
    """The three parts, tokenized; progress(chars done, chars) is called while a long document is tokenized."""
    if document:
        content = f"{instruction}\n\nQuestion: {prompt}\n\nDocument:\n{MARK}\n\nQuestion: {prompt}"
        plain_tail = "\nAnswer:"
    else:  # a prompt alone is the body: a long one streams through the window like a document
        content, plain_tail = MARK, ""
        document = prompt
    head, tail, templated = frame(model, content, plain_tail, raw)
    body = tokenize_document(model, document, progress=progress)  # linear and interruptible, same tokens
    return Layout(head, body, tail, templated)


def frame(model: Model, content: str, plain_tail: str = "", raw: bool = False) -> tuple[list[int], list[int], bool]:
    """Head and tail tokens around MARK in `content`: one user turn of the model's chat template, or plain text
    (then `plain_tail` is the answer cue). Returns (head, tail, templated)."""
    template = None if raw else model.chat_template()
    if template:
        rendered = model.apply_template(template, [("user", content)])
        if MARK not in rendered:
            raise RuntimeError("the chat template dropped the document marker")
        head_text, tail_text = rendered.split(MARK, 1)
        head = model.tokenize(head_text, add_special=True, parse_special=True)
        tail = model.tokenize(tail_text, add_special=False, parse_special=True)
    else:
        head_text, tail_text = content.split(MARK, 1)
        head = model.tokenize(head_text, add_special=True, parse_special=False)
        tail = model.tokenize(tail_text + plain_tail, add_special=False, parse_special=False)
    return head, tail, bool(template)


def byte_offsets(model: Model, tokens: list[int]) -> list[int]:
    """Start of each token in the detokenized text (UTF-8 bytes), plus the end: maps token spans to text."""
    out, at = [0], 0
    for t in tokens:
        at += len(model.piece(t))
        out.append(at)
    return out
