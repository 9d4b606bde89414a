"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API over the same conversation, template,
tools and grammar machinery as chat completions (conversation.py), streamed as Anthropic's typed events.

What has no local meaning is accepted and ignored (docs/serve.md lists it): `metadata`, `thinking`, `cache_control`
(the prefix cache is automatic), `service_tier`, `container`, `output_config.effort`. `output_config.format` (a JSON
schema) is honoured as a grammar. Images and documents are refused by name: this server reads text.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentiric_cli.engine.types import Piece, Record
from sentiric_cli.serve import tools as toolcalls
from sentiric_cli.serve.callstream import Arguments, CallStart, CallStream, Text
from sentiric_cli.serve.conversation import chat_request, prompt_tokens
from sentiric_cli.serve.drive import Server, collect, events, server, started, submit
from sentiric_cli.serve.errors import BadRequest, anthropic_body
from sentiric_cli.serve.grammar import body_grammar, schema_grammar
from sentiric_cli.serve.schemas import MAX_STOPS, Sampling, Stop
from sentiric_cli.serve.shapes import sse

router = APIRouter()


class Block(BaseModel):
    """One content block; which types are read is decided in `template_messages`."""
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class Turn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["user", "assistant"]
    content: str | list[Block]


class AnthropicTool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    type: str | None = None  # absent or "custom"; Anthropic's server tools (web search, ...) have their own type
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class CountBody(Sampling):
    """count_tokens: the conversation, no max_tokens."""
    messages: list[Turn] = Field(min_length=1)
    system: str | list[Block] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: ToolChoice | None = None
    stop_sequences: list[Stop] | None = Field(None, max_length=MAX_STOPS)
    output_config: dict[str, Any] | None = None
    output_format: dict[str, Any] | None = None  # the structured-outputs beta's name for output_config.format
    # accepted, no local meaning: docs/serve.md
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None
    service_tier: str | None = None
    container: Any = None

    @model_validator(mode="after")
    def _stops(self):
        if self.stop_sequences is not None:
            self.stop = self.stop_sequences
        return self


class MessagesBody(CountBody):
    max_tokens: int = Field(ge=1, le=1_048_576)  # required, as Anthropic requires it


def _text(blocks: str | list, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    out = []
    for j, b in enumerate(blocks):
        kind = b.type if isinstance(b, Block) else b.get("type")
        text = b.text if isinstance(b, Block) else b.get("text")
        if kind != "text":
            raise BadRequest(f"{where}[{j}]: '{kind}' blocks are not supported here: this server reads text only",
                             f"{where}[{j}]")
        if text is None:
            raise BadRequest(f"{where}[{j}].text: required for a text block", f"{where}[{j}].text")
        out.append(text)
    return "".join(out)


def template_messages(body: CountBody) -> list[dict]:
    """Anthropic turns as template messages: text blocks joined, tool_use blocks as the assistant's tool calls,
    tool_result blocks as tool turns (before the user's text), thinking blocks of earlier answers dropped."""
    out: list[dict] = []
    if body.system:
        out.append({"role": "system", "content": _text(body.system, "system")})
    for i, turn in enumerate(body.messages):
        where = f"messages[{i}].content"
        if isinstance(turn.content, str):
            out.append({"role": turn.role, "content": turn.content})
            continue
        texts, calls, results = [], [], []
        for j, b in enumerate(turn.content):
            at = f"{where}[{j}]"
            if b.type == "text":
                texts.append(_text([b], where) if b.text is None else b.text)
            elif b.type == "tool_use" and turn.role == "assistant":
                if not b.name:
                    raise BadRequest(f"{at}.name: required for a tool_use block", f"{at}.name")
                calls.append({"id": b.id or f"toolu_{i}_{j}", "type": "function",
                              "function": {"name": b.name, "arguments": b.input if b.input is not None else {}}})
            elif b.type == "tool_result" and turn.role == "user":
                if not b.tool_use_id:
                    raise BadRequest(f"{at}.tool_use_id: required for a tool_result block", f"{at}.tool_use_id")
                result = _text(b.content or "", f"{at}.content")
                results.append({"role": "tool", "tool_call_id": b.tool_use_id,
                                "content": f"Error: {result}" if b.is_error else result})
            elif b.type in ("thinking", "redacted_thinking") and turn.role == "assistant":
                continue  # a reasoning model's earlier thoughts: not part of the conversation's text
            else:
                what = "this server reads text only" if b.type in ("image", "document") else \
                    f"not a block a {turn.role} turn can hold here"
                raise BadRequest(f"{at}: '{b.type}' blocks are not supported: {what}", at)
        if turn.role == "assistant":
            out.append({"role": "assistant", "content": "".join(texts), **({"tool_calls": calls} if calls else {})})
        else:
            out += results
            if texts or not results:
                out.append({"role": "user", "content": "".join(texts)})
    return out


def with_prefill(turns: list[dict]) -> tuple[list[dict], str]:
    """A last assistant turn is the start of the answer, which the model continues (Anthropic's prefill): the
    conversation before it, and its text. The answer holds only what comes after it."""
    if len(turns) > 1 and turns[-1]["role"] == "assistant" and not turns[-1].get("tool_calls"):
        return turns[:-1], turns[-1]["content"]
    return turns, ""


def tool_plan(body: CountBody) -> tuple[list[dict], str, str | None, bool]:
    """(functions, choice, name, parallel) in the terms tools.plan takes."""
    functions = []
    for k, t in enumerate(body.tools or []):
        if t.type not in (None, "custom"):
            raise BadRequest(f"tools[{k}]: '{t.type}' is one of Anthropic's server tools; this server runs none "
                             "(declare your own tool with an input_schema)", f"tools[{k}].type")
        functions.append({"name": t.name, **({"description": t.description} if t.description else {}),
                          "parameters": t.input_schema or {"type": "object"}})
    c = body.tool_choice
    if c is None:
        return functions, "auto", None, True
    if c.type == "tool" and not c.name:
        raise BadRequest("tool_choice.name: required when tool_choice.type is 'tool'", "tool_choice.name")
    choice = {"auto": "auto", "any": "required", "tool": "named", "none": "none"}[c.type]
    if choice != "none" and not functions:
        raise BadRequest(f"tool_choice: '{c.type}' needs tools", "tool_choice")
    return functions, choice, c.name, not c.disable_parallel_tool_use


def _grammar(body: CountBody) -> str | None:
    fmt = (body.output_config or {}).get("format") or body.output_format
    if fmt is None:
        return body_grammar(body)
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise BadRequest("output_config.format: only {'type': 'json_schema', 'schema': {...}} is known",
                         "output_config.format")
    return schema_grammar(fmt.get("schema"), "output_config.format.schema")


def _usage(r: Record | None, prompt: int) -> dict:
    """Anthropic counts cache reads apart: input_tokens + cache_read_input_tokens is the whole prompt."""
    reused = r.reused_tokens if r is not None else 0
    return {"input_tokens": (r.prompt_tokens if r is not None else prompt) - reused,
            "output_tokens": r.generated_tokens if r is not None else 0,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": reused}


class Reply:
    """One messages request's answer: its id, content blocks, stop reason and usage, whole or as Anthropic's events."""

    def __init__(self, srv: Server, body: MessagesBody, use: toolcalls.ToolUse | None, prompt: int) -> None:
        self.srv, self.body, self.use, self.prompt = srv, body, use, prompt
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.t0 = time.perf_counter()

    def stop(self, r: Record, called: bool) -> tuple[str, str | None]:
        """(stop_reason, stop_sequence)."""
        if r.finish_reason in ("length", "interrupted"):
            return "max_tokens", None
        if called:
            return "tool_use", None
        if r.stop_string is not None and r.stop_string in (self.body.stop_sequences or ()):
            return "stop_sequence", r.stop_string
        return "end_turn", None

    def message(self, content: list[dict], r: Record | None, stop: tuple[str | None, str | None]) -> dict:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.srv.model_id,
                "content": content, "stop_reason": stop[0], "stop_sequence": stop[1],
                "usage": _usage(r, self.prompt)}

    def tool_use(self, call: dict) -> dict:
        args = call.get("arguments", {})
        return {"type": "tool_use", "id": self._id(), "name": call["name"],
                "input": args if isinstance(args, dict) else {"arguments": args}}

    def _id(self) -> str:
        return self.use.new_id("toolu_") if self.use is not None else f"toolu_{uuid.uuid4().hex[:24]}"

    def final(self, r: Record) -> dict:
        if self.use is None:
            return self.message([{"type": "text", "text": r.text}], r, self.stop(r, False))
        content, calls = toolcalls.found(r.text, self.use)
        blocks = [{"type": "text", "text": content}] if content or not calls else []
        blocks += [self.tool_use(c) for c in calls]
        return self.message(blocks, r, self.stop(r, bool(calls)))

    async def stream(self, job, replay: list):
        def ev(kind: str, **data) -> str:
            return sse({"type": kind, **data}, kind)

        index, open_kind = -1, None  # the content block being written

        def start(block: dict):
            nonlocal index, open_kind
            out: list[str] = [ev("content_block_stop", index=index)] if open_kind else []
            index, open_kind = index + 1, block["type"]
            return [*out, ev("content_block_start", index=index, content_block=block)]

        def text(t: str) -> list[str]:
            out = [] if open_kind == "text" else start({"type": "text", "text": ""})
            return [*out, ev("content_block_delta", index=index, delta={"type": "text_delta", "text": t})]

        def part(c: Text | CallStart | Arguments) -> list[str]:
            """A piece of free text, the start of a tool call or some of its arguments, as events."""
            if isinstance(c, Text):
                return text(c.text)
            if isinstance(c, CallStart):
                return start({"type": "tool_use", "id": self._id(), "name": c.name, "input": {}})
            return [ev("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": c.text})]

        calls = CallStream(self.use) if self.use is not None else None
        try:
            yield ev("message_start", message=self.message([], None, (None, None)))
            if calls is None:
                for line in start({"type": "text", "text": ""}):
                    yield line
            yield ev("ping")
            record = None
            try:
                async for e in events(job, replay):
                    if isinstance(e, Record):
                        record = e
                        continue
                    if not isinstance(e, Piece) or not e.text:
                        continue
                    if calls is None:
                        yield ev("content_block_delta", index=index, delta={"type": "text_delta", "text": e.text})
                        continue
                    for c in calls.feed(e.text):
                        for line in part(c):
                            yield line
            except BadRequest as e:
                yield sse(anthropic_body(e.status, e.message), "error")
                return
            called = False
            if calls is not None:
                rest, found, streamed = calls.finish()
                called = bool(found)
                if rest:
                    for line in text(rest):
                        yield line
                for call in found[streamed:]:  # calls the stream could not follow as they were written: whole
                    block = self.tool_use(call)
                    for line in start({**block, "input": {}}):
                        yield line
                    yield ev("content_block_delta", index=index,
                             delta={"type": "input_json_delta", "partial_json": json.dumps(block["input"])})
            if open_kind:
                yield ev("content_block_stop", index=index)
            reason = self.stop(record, called) if record is not None else ("end_turn", None)
            yield ev("message_delta", delta={"stop_reason": reason[0], "stop_sequence": reason[1]},
                     usage=_usage(record, self.prompt))
            yield ev("message_stop")
            self.srv.latency.labels("messages").observe(time.perf_counter() - self.t0)
        finally:
            job.cancel()


def conversation(body: CountBody) -> dict:
    """The body as conversation.py's arguments: template messages, the prefill, the tools and how they may be used."""
    functions, choice, name, parallel = tool_plan(body)
    messages, prefill = with_prefill(template_messages(body))
    return dict(messages=messages, prefill=prefill, functions=functions, choice=choice, name=name, parallel=parallel)


@router.post("/v1/messages")
@router.post("/messages", include_in_schema=False)
async def messages(body: MessagesBody, http: HTTPRequest):
    srv = server(http)
    req, use = await chat_request(srv, body, grammar=_grammar(body), **conversation(body))
    reply = Reply(srv, body, use, len(req.head) + len(req.body) + len(req.tail))
    job = submit(srv, req, stream=body.stream)
    if body.stream:
        replay = await started(http, job)
        return StreamingResponse(reply.stream(job, replay), media_type="text/event-stream")
    record = (await collect(http, job))[0]
    srv.latency.labels("messages").observe(time.perf_counter() - reply.t0)
    return JSONResponse(reply.final(record))


@router.post("/v1/messages/count_tokens")
@router.post("/messages/count_tokens", include_in_schema=False)
async def count_tokens(body: CountBody, http: HTTPRequest):
    head, rest, _ = await prompt_tokens(server(http), **conversation(body))
    return {"input_tokens": len(head) + len(rest)}
