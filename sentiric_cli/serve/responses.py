"""POST /v1/responses: OpenAI's Responses API, stateless and text-only, streamed as its typed events.

`input` is a string or a list of messages; `instructions` is the system turn; `text.format` takes the
same json_object / json_schema as chat's response_format. Nothing is stored, so `previous_response_id`
is refused, and so are tools (use chat completions for those).
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from sentiric_cli.engine.types import Piece, Record
from sentiric_cli.serve.drive import build_request, collect, events, off_loop, server, started, submit, text_size
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.grammar import body_grammar, response_format
from sentiric_cli.serve.messages import chat_tokens, part_text, turn_stops
from sentiric_cli.serve.schemas import ResponsesBody
from sentiric_cli.serve.shapes import sse

router = APIRouter()


def _messages(body: ResponsesBody) -> list[dict]:
    out = [{"role": "system", "content": body.instructions}] if body.instructions else []
    if isinstance(body.input, str):
        return [*out, {"role": "user", "content": body.input}]
    for i, item in enumerate(body.input):
        role = "system" if item.role == "developer" else item.role
        out.append({"role": role, "content": part_text(item.content, f"input[{i}]") or ""})
    return out


def _response(rid: str, created: int, body: ResponsesBody, model: str, status: str, text: str | None,
              record: Record | None) -> dict:
    output = []
    if text is not None:
        output.append({"type": "message", "id": f"msg_{rid[5:]}", "status": status, "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
    inp = record.prompt_tokens if record else 0
    out = record.generated_tokens if record else 0
    fmt = (body.text.format if body.text and body.text.format else None) or {"type": "text"}
    return {"id": rid, "object": "response", "created_at": created, "status": status, "model": model,
            "output": output, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature, "top_p": body.top_p, "parallel_tool_calls": False,
            "tool_choice": "none", "tools": [], "text": {"format": fmt}, "previous_response_id": None,
            "usage": None if record is None else {
                "input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
                "input_tokens_details": {"cached_tokens": record.reused_tokens},
                "output_tokens_details": {"reasoning_tokens": 0}}}


@router.post("/v1/responses")
@router.post("/responses", include_in_schema=False)
async def responses(body: ResponsesBody, http: HTTPRequest):
    srv = server(http)
    if body.previous_response_id:
        raise BadRequest("previous_response_id: this server stores no responses; send the conversation as input",
                         "previous_response_id")
    if body.tools:
        raise BadRequest("tools: not supported on /v1/responses here; use /v1/chat/completions", "tools")
    grammar = body_grammar(body)
    if body.text and body.text.format and grammar is None:  # Responses puts the schema at the top of `format`
        fmt = dict(body.text.format)
        if fmt.get("type") == "json_schema" and "json_schema" not in fmt:
            fmt = {"type": "json_schema", "json_schema": {"schema": fmt.get("schema")}}
        grammar = response_format(fmt, "text.format")
    messages = _messages(body)
    head, rest = await off_loop(text_size(messages), chat_tokens, srv.model, messages)
    req = build_request(srv, body, head, rest, grammar)
    req.stop = (*req.stop, *turn_stops(srv.model))
    rid, created = f"resp_{uuid.uuid4().hex[:24]}", int(time.time())
    job = submit(srv, req, stream=body.stream)
    if not body.stream:
        rec = (await collect(http, job))[0]
        status = "incomplete" if rec.finish_reason in ("length", "interrupted") else "completed"
        return JSONResponse(_response(rid, created, body, srv.model_id, status, rec.text, rec))
    replay = await started(http, job)
    return StreamingResponse(_stream(job, replay, rid, created, body, srv.model_id), media_type="text/event-stream")


async def _stream(job, replay: list, rid: str, created: int, body: ResponsesBody, model: str):
    seq = 0
    mid = f"msg_{rid[5:]}"

    def ev(kind: str, **data) -> str:
        nonlocal seq
        seq += 1
        return sse({"type": kind, "sequence_number": seq - 1, **data}, kind)

    text = ""
    try:
        yield ev("response.created", response=_response(rid, created, body, model, "in_progress", None, None))
        yield ev("response.in_progress", response=_response(rid, created, body, model, "in_progress", None, None))
        item = {"type": "message", "id": mid, "status": "in_progress", "role": "assistant", "content": []}
        yield ev("response.output_item.added", output_index=0, item=item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield ev("response.content_part.added", item_id=mid, output_index=0, content_index=0, part=part)
        record = None
        try:
            async for e in events(job, replay):
                if isinstance(e, Piece) and e.text:
                    text += e.text
                    yield ev("response.output_text.delta", item_id=mid, output_index=0, content_index=0,
                             delta=e.text, logprobs=[])
                elif isinstance(e, Record):
                    record = e
        except BadRequest as e:
            yield ev("error", code=str(e.status), message=e.message, param=e.param)
            return
        status = "incomplete" if record is not None and record.finish_reason in ("length", "interrupted") else "completed"
        yield ev("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=text, logprobs=[])
        yield ev("response.content_part.done", item_id=mid, output_index=0, content_index=0, part={**part, "text": text})
        final = _response(rid, created, body, model, status, text, record)
        yield ev("response.output_item.done", output_index=0, item=final["output"][0])
        yield ev(f"response.{status}", response=final)
    finally:
        job.cancel()
