"""POST /v1/chat/completions and /v1/completions: OpenAI's shapes, streamed or not, n answers, logprobs,
structured output and tool calls; a `sentiric` field routes to the long-document strategies (longdoc.py)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from sentiric_cli.engine.types import Piece, Record
from sentiric_cli.serve import tools as toolcalls
from sentiric_cli.serve.callstream import Arguments, CallStart, CallStream, Text
from sentiric_cli.serve.conversation import chat_request, prompt_text
from sentiric_cli.serve.drive import (
    Server,
    build_request,
    collect,
    merged,
    off_loop,
    reason,
    server,
    started,
    submit,
    usage,
)
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.grammar import body_grammar
from sentiric_cli.serve.longdoc import serve_long
from sentiric_cli.serve.messages import part_text, to_dicts
from sentiric_cli.serve.schemas import ChatBody, CompletionBody
from sentiric_cli.serve.shapes import DONE, chat_logprobs, echo_logprobs, legacy_logprobs, sse

router = APIRouter()


@dataclass
class Reply:
    """One response's identity and what shapes its answers."""
    srv: Server
    kind: str  # "chat" or "text"
    n: int
    logprobs: bool
    tools: toolcalls.ToolUse | None = None
    include_usage: bool = False
    echo: list[tuple[str, list[int]]] | None = None  # completions with echo: each prompt's text and tokens
    token_ids: bool = False  # logprobs name tokens `token_id:N` (vLLM's return_tokens_as_token_ids)

    def __post_init__(self) -> None:
        self.id = f"{'chatcmpl' if self.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.t0 = time.perf_counter()

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.srv.model_id,
                "system_fingerprint": self.srv.fingerprint}

    def message(self, r: Record) -> tuple[dict, str]:
        """The assistant message of one answer, and its finish reason."""
        why = reason(r)
        if self.tools is None:
            return {"role": "assistant", "content": r.text}, why
        content, calls = toolcalls.parse(r.text, self.tools)
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            msg["tool_calls"] = calls
            why = "tool_calls" if why == "stop" else why  # cut short: "length", with the calls written whole
        return msg, why

    def final(self, records: list[Record]) -> dict:
        model = self.srv.model
        choices = []
        for r in records:
            if self.kind == "chat":
                msg, why = self.message(r)
                lp = chat_logprobs(model, r.logprobs) if self.logprobs else None
                choices.append({"index": r.index, "message": msg, "logprobs": lp, "finish_reason": why})
            elif self.echo is not None:  # the prompt, then the answer (OpenAI's echo); r.index // n: its prompt
                text, toks = self.echo[r.index // self.n]
                lp = echo_logprobs(model, toks, r.prompt_logprobs, r.logprobs, self.token_ids) if self.logprobs else None
                choices.append({"index": r.index, "text": text + r.text, "logprobs": lp, "finish_reason": reason(r)})
            else:
                lp = legacy_logprobs(model, r.logprobs, ids=self.token_ids) if self.logprobs else None
                choices.append({"index": r.index, "text": r.text, "logprobs": lp, "finish_reason": reason(r)})
        return {**self.head(self.object), "choices": choices, "usage": usage(records, self.n)}

    def chunk(self, choice: dict) -> str:
        data = {**self.head(self.chunk_object),
                "choices": [choice]}
        if self.include_usage:
            data["usage"] = None
        return sse(data)

    async def stream(self, jobs: list, replays: list[list]):
        records: list[Record] = []
        offsets = [0] * self.n * len(jobs)
        calls = [CallStream(self.tools) for _ in range(self.n)] if self.tools is not None else None
        try:
            if self.kind == "chat":  # the role first, once per answer, with content null as OpenAI sends it
                for i in range(self.n):
                    yield self.chunk({"index": i, "delta": {"role": "assistant", "content": None}, "logprobs": None,
                                      "finish_reason": None})
            try:
                async for k, ev in merged(jobs, replays):
                    ev = replace(ev, index=ev.index + k * self.n) if k else ev
                    if isinstance(ev, Piece):
                        if not ev.text:
                            continue
                        if calls is None:
                            yield self.chunk(self._piece(ev, offsets))
                        else:
                            for delta in self._call_deltas(calls[ev.index], ev.text):
                                yield self.chunk({"index": ev.index, "delta": delta, "logprobs": None,
                                                  "finish_reason": None})
                        continue
                    records.append(ev)
                    yield self.chunk(self._last(ev, calls[ev.index] if calls is not None else None))
            except BadRequest as e:
                yield sse({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.status}})
                yield DONE
                return
            if self.include_usage and records:
                yield sse({**self.head(self.chunk_object),
                           "choices": [], "usage": usage(sorted(records, key=lambda r: r.index), self.n)})
            yield DONE
            self.srv.latency.labels(f"{self.kind}_completions").observe(time.perf_counter() - self.t0)
        finally:
            for job in jobs:
                job.cancel()

    def _call_deltas(self, stream: CallStream, text: str) -> list[dict]:
        """The free text and the tool calls in a piece of the answer, as OpenAI's deltas."""
        out: list[dict] = []
        use = stream.use
        for e in stream.feed(text):
            if isinstance(e, Text):
                out.append({"content": e.text})
            elif isinstance(e, CallStart):
                out.append({"tool_calls": [{"index": e.index, "id": use.new_id(), "type": "function",
                                            "function": {"name": e.name, "arguments": ""}}]})
            elif isinstance(e, Arguments):
                out.append({"tool_calls": [{"index": e.index, "function": {"arguments": e.text}}]})
        return out

    def _piece(self, ev: Piece, offsets: list[int]) -> dict:
        model = self.srv.model
        if self.kind == "chat":
            lp = chat_logprobs(model, ev.logprobs or []) if self.logprobs else None
            return {"index": ev.index, "delta": {"content": ev.text}, "logprobs": lp, "finish_reason": None}
        lp = legacy_logprobs(model, ev.logprobs or [], offsets[ev.index], self.token_ids) if self.logprobs else None
        offsets[ev.index] += len(ev.text)
        return {"index": ev.index, "text": ev.text, "logprobs": lp, "finish_reason": None}

    def _last(self, r: Record, calls: CallStream | None) -> dict:
        if self.kind != "chat":
            return {"index": r.index, "text": "", "logprobs": None, "finish_reason": reason(r)}
        if calls is None or self.tools is None:
            return {"index": r.index, "delta": {}, "logprobs": None, "finish_reason": reason(r)}
        rest, found, streamed = calls.finish()
        why = reason(r)
        delta: dict[str, Any] = {}
        if rest:
            delta["content"] = rest
        if found[streamed:]:  # calls the stream could not follow as they were written: whole, now
            delta["tool_calls"] = [{"index": k, **toolcalls.openai_call(c, self.tools)}
                                   for k, c in enumerate(found) if k >= streamed]
        if found and why == "stop":
            why = "tool_calls"
        return {"index": r.index, "delta": delta, "logprobs": None, "finish_reason": why}

    async def respond(self, http: HTTPRequest, reqs: list, streaming: bool):
        jobs = []
        try:
            for req in reqs:
                jobs.append(submit(self.srv, req, stream=streaming))
        except BadRequest:
            for job in jobs:
                job.cancel()
            raise
        if streaming:
            replays = [await started(http, job) for job in jobs]
            return StreamingResponse(self.stream(jobs, replays), media_type="text/event-stream")
        records = []
        for k, job in enumerate(jobs):
            records += [replace(r, index=r.index + k * self.n) for r in await collect(http, job)]
        self.srv.latency.labels(f"{self.kind}_completions").observe(time.perf_counter() - self.t0)
        return JSONResponse(self.final(records))


def prompts(given, model) -> list[list[int] | str]:
    """OpenAI's prompt forms: a text, token ids, a list of texts or of token-id lists (one answer each); llama-server's
    mixed list of texts and ids is one prompt."""
    if isinstance(given, str):
        return [given]
    if not given:
        raise BadRequest("prompt: empty", "prompt")
    if all(isinstance(p, int) for p in given):
        return [_ids(given, model)]
    if all(isinstance(p, str) for p in given):
        return list(given)
    if all(isinstance(p, list) for p in given):
        return [_ids(p, model) for p in given]
    if all(isinstance(p, int | str) for p in given):  # llama-server's mixed prompt: texts tokenized, ids as given
        return [_ids(given, model)]
    raise BadRequest("prompt: a text, a list of texts, token ids, or a list of token-id lists", "prompt")


def _text(model, toks: list[int]) -> str:
    return b"".join(model.piece(t) for t in toks).decode("utf-8", errors="replace")


def _ids(items: list, model) -> list[int]:
    out: list[int] = []
    for p in items:
        if isinstance(p, str):
            out += model.tokenize(p, add_special=False, parse_special=True)
            continue
        if not 0 <= p < model.n_vocab:
            raise BadRequest(f"prompt: {p} is not a token id (0..{model.n_vocab - 1})", "prompt")
        out.append(p)
    return out


@router.post("/v1/completions")
@router.post("/completions", include_in_schema=False)
async def completions(body: CompletionBody, http: HTTPRequest):
    srv = server(http)
    model = srv.model
    given = prompts(body.prompt, model)
    if len(given) * body.n > srv.settings.threads + srv.settings.queue_size:
        raise BadRequest(f"prompt: {len(given)} prompts x n={body.n} answers is more than this server queues "
                         f"({srv.settings.threads} slots + {srv.settings.queue_size} waiting)", "prompt")
    if body.sentiric is not None:
        if len(given) != 1 or not isinstance(given[0], str):
            raise BadRequest("a long-document request takes one prompt, as text", "prompt")
        return await serve_long(http, srv, body, given[0], "text")
    grammar = body_grammar(body)
    top = body.logprobs if body.logprobs is not None else -1
    if body.echo and body.stream:
        raise BadRequest("echo: not supported with stream; ask without stream", "echo")
    reqs, echoed = [], []
    for p in given:
        toks = p if isinstance(p, list) else await off_loop(len(p), model.tokenize, p, True, True)
        if not toks:
            raise BadRequest("the prompt is empty", "prompt")
        split = 1 if toks[0] == model.bos else 0  # pin BOS; the rest streams through the window
        if body.echo and body.logprobs_from:  # the context pinned and read, not scored
            split = max(split, min(body.logprobs_from, len(toks) - 1))
        req = build_request(srv, body, toks[:split], toks[split:], grammar, top, body.n, handled=("echo",))
        if body.echo and top >= 0:  # the prompt's log-probabilities: every token scored as it is read
            req = replace(req, score=True, prompt_logprobs=top)
        reqs.append(req)
        echoed.append((p if isinstance(p, str) else _text(model, toks), toks))
    reply = Reply(srv, "text", body.n, body.logprobs is not None,
                  include_usage=bool(body.stream_options and body.stream_options.include_usage),
                  echo=echoed if body.echo else None, token_ids=bool(body.return_tokens_as_token_ids))
    return await reply.respond(http, reqs, body.stream)


def tool_choice(body: ChatBody) -> tuple[str, str | None]:
    choice = body.tool_choice or "auto"
    return ("named", choice.function.name) if not isinstance(choice, str) else (choice, None)


@router.post("/v1/chat/completions")
@router.post("/chat/completions", include_in_schema=False)
async def chat(body: ChatBody, http: HTTPRequest):
    srv = server(http)
    if body.top_logprobs is not None and not body.logprobs:
        raise BadRequest("top_logprobs: needs logprobs: true", "top_logprobs")
    if body.sentiric is not None:
        question = next((part_text(m.content, f"messages[{i}]") for i, m in reversed(list(enumerate(body.messages)))
                         if m.role == "user"), None)
        if not question:
            raise BadRequest("a long-document request needs a user message with the question", "messages")
        return await serve_long(http, srv, body, question, "chat")
    functions = [t.function.model_dump(exclude_none=True) for t in body.tools or []]
    choice, name = tool_choice(body)
    top = (body.top_logprobs or 0) if body.logprobs else -1
    req, use = await chat_request(srv, body, to_dicts(body.messages), functions, choice, name,
                                  body.parallel_tool_calls, body_grammar(body), top, body.n)
    reply = Reply(srv, "chat", body.n, body.logprobs, use,
                  include_usage=bool(body.stream_options and body.stream_options.include_usage))
    return await reply.respond(http, [req], body.stream)


@router.post("/apply-template")
@router.post("/v1/apply-template", include_in_schema=False)
async def apply_template(body: ChatBody, http: HTTPRequest):
    """llama-server's: the prompt a chat request would read, as text (tools included), without running it."""
    srv = server(http)
    functions = [t.function.model_dump(exclude_none=True) for t in body.tools or []]
    choice, name = tool_choice(body)
    return {"prompt": await prompt_text(srv, to_dicts(body.messages), functions, choice, name,
                                        body.parallel_tool_calls)}
