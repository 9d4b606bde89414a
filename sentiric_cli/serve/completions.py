"""POST /v1/chat/completions and /v1/completions: OpenAI's shapes, streamed or not, n answers, logprobs,
structured output and tool calls; a `sentiric` field routes to the long-document strategies (longdoc.py)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from sentiric_cli.engine.types import Piece, Record
from sentiric_cli.serve import tools as toolcalls
from sentiric_cli.serve.drive import (
    Server,
    build_request,
    collect,
    events,
    off_loop,
    reason,
    server,
    started,
    submit,
    text_size,
    usage,
)
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.grammar import body_grammar
from sentiric_cli.serve.longdoc import serve_long
from sentiric_cli.serve.messages import chat_tokens, part_text, to_dicts, turn_stops
from sentiric_cli.serve.schemas import ChatBody, CompletionBody
from sentiric_cli.serve.shapes import DONE, chat_logprobs, legacy_logprobs, sse

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
        return {"id": self.id, "object": obj, "created": self.created, "model": self.srv.model_id}

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
            else:
                lp = legacy_logprobs(model, r.logprobs) if self.logprobs else None
                choices.append({"index": r.index, "text": r.text, "logprobs": lp, "finish_reason": reason(r)})
        return {**self.head(self.object), "choices": choices, "usage": usage(records)}

    def chunk(self, choice: dict) -> str:
        data = {**self.head(self.chunk_object),
                "choices": [choice]}
        if self.include_usage:
            data["usage"] = None
        return sse(data)

    async def stream(self, job, replay: list):
        records: list[Record] = []
        offsets = [0] * self.n
        try:
            if self.kind == "chat":  # the role first, once per answer
                for i in range(self.n):
                    yield self.chunk({"index": i, "delta": {"role": "assistant"}, "logprobs": None,
                                      "finish_reason": None})
            try:
                async for ev in events(job, replay):
                    if isinstance(ev, Piece):
                        if ev.text and self.tools is None:  # tool calls are sent whole, once parsed
                            yield self.chunk(self._piece(ev, offsets))
                        continue
                    records.append(ev)
                    yield self.chunk(self._last(ev))
            except BadRequest as e:
                yield sse({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.status}})
                yield DONE
                return
            if self.include_usage and records:
                yield sse({**self.head(self.chunk_object),
                           "choices": [], "usage": usage(sorted(records, key=lambda r: r.index))})
            yield DONE
            self.srv.latency.labels(f"{self.kind}_completions").observe(time.perf_counter() - self.t0)
        finally:
            job.cancel()

    def _piece(self, ev: Piece, offsets: list[int]) -> dict:
        model = self.srv.model
        if self.kind == "chat":
            lp = chat_logprobs(model, ev.logprobs or []) if self.logprobs else None
            return {"index": ev.index, "delta": {"content": ev.text}, "logprobs": lp, "finish_reason": None}
        lp = legacy_logprobs(model, ev.logprobs or [], offsets[ev.index]) if self.logprobs else None
        offsets[ev.index] += len(ev.text)
        return {"index": ev.index, "text": ev.text, "logprobs": lp, "finish_reason": None}

    def _last(self, r: Record) -> dict:
        if self.kind != "chat":
            return {"index": r.index, "text": "", "logprobs": None, "finish_reason": reason(r)}
        if self.tools is None:
            return {"index": r.index, "delta": {}, "logprobs": None, "finish_reason": reason(r)}
        msg, why = self.message(r)
        delta = {}
        if msg["content"]:
            delta["content"] = msg["content"]
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(msg["tool_calls"])]
        return {"index": r.index, "delta": delta, "logprobs": None, "finish_reason": why}

    async def respond(self, http: HTTPRequest, req, streaming: bool):
        job = submit(self.srv, req, stream=streaming)
        if streaming:
            replay = await started(http, job)
            return StreamingResponse(self.stream(job, replay), media_type="text/event-stream")
        records = await collect(http, job)
        self.srv.latency.labels(f"{self.kind}_completions").observe(time.perf_counter() - self.t0)
        return JSONResponse(self.final(records))


@router.post("/v1/completions")
@router.post("/completions", include_in_schema=False)
async def completions(body: CompletionBody, http: HTTPRequest):
    srv = server(http)
    model = srv.model
    prompt = body.prompt if isinstance(body.prompt, str) else (body.prompt[0] if len(body.prompt) == 1 else None)
    if prompt is None:
        raise BadRequest("one prompt per request (send a string, or a list of one)", "prompt")
    if body.sentiric is not None:
        return await serve_long(http, srv, body, prompt, "text")
    grammar = body_grammar(body)
    toks = await off_loop(len(prompt), model.tokenize, prompt, True, True)
    if not toks:
        raise BadRequest("the prompt is empty", "prompt")
    split = 1 if toks[0] == model.bos else 0  # pin BOS; the rest streams through the window
    top = body.logprobs if body.logprobs is not None else -1
    req = build_request(srv, body, toks[:split], toks[split:], grammar, top, body.n)
    reply = Reply(srv, "text", body.n, body.logprobs is not None,
                  include_usage=bool(body.stream_options and body.stream_options.include_usage))
    return await reply.respond(http, req, body.stream)


@router.post("/v1/chat/completions")
@router.post("/chat/completions", include_in_schema=False)
async def chat(body: ChatBody, http: HTTPRequest):
    srv = server(http)
    model = srv.model
    if body.top_logprobs is not None and not body.logprobs:
        raise BadRequest("top_logprobs: needs logprobs: true", "top_logprobs")
    if body.sentiric is not None:
        question = next((part_text(m.content, f"messages[{i}]") for i, m in reversed(list(enumerate(body.messages)))
                         if m.role == "user"), None)
        if not question:
            raise BadRequest("a long-document request needs a user message with the question", "messages")
        return await serve_long(http, srv, body, question, "chat")
    template = model.chat_template()
    messages = to_dicts(body.messages)
    use = toolcalls.plan(body, template)
    grammar = body_grammar(body)
    if use is not None and use.grammar:
        if grammar is not None:
            raise BadRequest("tools with a required call and response_format/grammar together: send one", "tools")
        grammar = use.grammar
    messages = toolcalls.with_instruction(messages, use)
    in_template = use.tools if use is not None and use.format == toolcalls.HERMES else None
    size = text_size(messages) + (len(repr(in_template)) if in_template else 0)
    head, rest = await off_loop(size, chat_tokens, model, messages, in_template)
    top = (body.top_logprobs or 0) if body.logprobs else -1
    req = build_request(srv, body, head, rest, grammar, top, body.n)
    req.stop = (*req.stop, *turn_stops(model))
    reply = Reply(srv, "chat", body.n, body.logprobs, use,
                  include_usage=bool(body.stream_options and body.stream_options.include_usage))
    return await reply.respond(http, req, body.stream)
