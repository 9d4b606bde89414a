"""The OpenAI-compatible HTTP API on FastAPI: completions, chat completions, models, health, metrics.

Handlers tokenize, hand a Request to the scheduler and await its events; they never touch the
llama.cpp context. Errors use OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Literal

import numpy as np
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import Engine, Piece, Record, Request, log_softmax
from .errors import SentiricError
from .scheduler import QueueFull, Scheduler
from .serve_longdoc import long_answer, record_json, usage
from .settings import Settings


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str


class LongDocument(BaseModel):
    """The `sentiric` extension: a document answered with a long-document strategy (docs/serve.md)."""
    model_config = ConfigDict(extra="forbid")
    document: str = Field(min_length=1)
    strategy: Literal["auto", "window", "map"] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=1_048_576)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_048_576)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, ge=0.0, le=10.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)
    sentiric: LongDocument | None = None


class CompletionBody(_Common):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)


class ChatBody(_Common):
    messages: list[Message] = Field(min_length=1)


def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
          headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status, headers=headers)


class _Stats:
    """Prometheus view of the scheduler, read at scrape time."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler

    def collect(self):
        c, st = self.s.counters, self.s.status()
        for name, value, doc in (("requests", c.requests, "Requests completed"),
                                 ("prompt_tokens", c.prompt_tokens, "Prompt tokens read"),
                                 ("generated_tokens", c.generated_tokens, "Tokens generated"),
                                 ("shifts", c.shifts, "Window shifts"),
                                 ("evicted_tokens", c.evicted_tokens, "Document tokens evicted from windows"),
                                 ("reused_tokens", c.reused_tokens, "Prompt tokens reused from a slot's cache"),
                                 ("rejected", c.rejected, "Requests refused with 429"),
                                 ("cancelled", c.cancelled, "Requests whose client went away")):
            yield CounterMetricFamily(f"sentiric_{name}", doc, value=value)
        yield GaugeMetricFamily("sentiric_active_slots", "Slots serving a request", value=st["busy"])
        yield GaugeMetricFamily("sentiric_queue_depth", "Requests waiting for a slot", value=st["queue"])


def create_app(engine: Engine, settings: Settings, profile: str | None = None, model_id: str = "sentiric") -> FastAPI:
    scheduler = Scheduler(engine, settings.queue_size)
    registry = CollectorRegistry()
    registry.register(_Stats(scheduler))
    latency = Histogram("sentiric_request_seconds", "Request latency", ["endpoint"], registry=registry,
                        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
    app = FastAPI(title="sentiric", docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler
    model = engine.model

    @app.middleware("http")
    async def guard(request: HTTPRequest, call_next):
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > settings.max_body_bytes:
            return error(413, f"request body over {settings.max_body_bytes} bytes", param="body")
        if settings.api_key and request.url.path != "/health":
            if request.headers.get("authorization", "") != f"Bearer {settings.api_key}":
                return error(401, "missing or wrong API key (send Authorization: Bearer KEY)", "authentication_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request, exc: RequestValidationError):
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, "invalid JSON in the request body")
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
        msg = first.get("msg", "invalid")
        return error(400, f"{where}: {msg}" if where else msg, param=where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else "invalid_request_error")

    @app.get("/health")
    async def health():
        st = scheduler.status()
        return {"status": "ok" if scheduler.accepting else "stopping", "model": model_id, "profile": profile,
                "slots": {k: st[k] for k in ("total", "busy", "free")}, "queue": st["queue"]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": int(time.time()),
                                            "owned_by": "sentiric"}]}

    def request_for(body: _Common, head: list[int], rest: list[int]) -> Request:
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        overrides = {k: v for k, v in {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
                                       "min_p": body.min_p, "repeat_penalty": body.repeat_penalty,
                                       "seed": body.seed}.items() if v is not None}
        max_tokens = body.max_completion_tokens or body.max_tokens or settings.max_tokens
        return Request.from_settings(settings, head, rest, stop=stop, max_tokens=max_tokens, **overrides)

    async def serve(http: HTTPRequest, req: Request, kind: str, endpoint: str, streaming: bool,
                    req_logprobs: int | None = None):
        t0 = time.perf_counter()
        try:
            job = scheduler.submit(req, stream=streaming)
        except QueueFull as e:
            return error(429, str(e), "rate_limit_error", headers={"Retry-After": "1"})
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if streaming:
            return StreamingResponse(_sse(job, rid, created, kind, t0, endpoint), media_type="text/event-stream")
        text, record = "", None
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(job.events.get(), timeout=0.5)
                except asyncio.TimeoutError:  # nothing yet: is the client still there?
                    if await http.is_disconnected():
                        job.cancel()
                    continue
                if ev is None:
                    break
                if isinstance(ev, Exception):
                    return error(500 if not isinstance(ev, SentiricError) else 400, str(ev),
                                 "server_error" if not isinstance(ev, SentiricError) else "invalid_request_error")
                if isinstance(ev, Record):
                    record = ev
                    text = ev.text
        except BaseException:
            job.cancel()
            raise
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        response = _final(rid, created, kind, text, record, model_id)
        if req_logprobs is not None and record is not None:
            body = json.loads(response.body)
            body["choices"][0]["logprobs"] = _logprobs(model, record, req_logprobs)
            response = JSONResponse(body)
        return response

    async def _sse(job, rid, created, kind, t0, endpoint):
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        record = None
        try:
            if kind == "chat":
                yield _event(rid, created, obj, {"index": 0, "delta": {"role": "assistant", "content": ""},
                                                 "finish_reason": None}, model=model_id)
            while True:
                ev = await job.events.get()
                if ev is None:
                    break
                if isinstance(ev, Exception):
                    yield f"data: {json.dumps({'error': {'message': str(ev), 'type': 'server_error'}})}\n\n"
                    break
                if isinstance(ev, Piece) and ev.text:
                    choice = ({"index": 0, "delta": {"content": ev.text}, "finish_reason": None} if kind == "chat"
                              else {"index": 0, "text": ev.text, "logprobs": None, "finish_reason": None})
                    yield _event(rid, created, obj, choice, model=model_id)
                elif isinstance(ev, Record):
                    record = ev
            if record is not None:
                reason = _reason(record)
                choice = ({"index": 0, "delta": {}, "finish_reason": reason} if kind == "chat"
                          else {"index": 0, "text": "", "logprobs": None, "finish_reason": reason})
                yield _event(rid, created, obj, choice, _usage(record), model=model_id)
            yield "data: [DONE]\n\n"
            latency.labels(endpoint).observe(time.perf_counter() - t0)
        finally:  # the client went away mid-stream (or we are done): free the slot at the next step
            job.cancel()

    async def serve_long(http: HTTPRequest, body: _Common, question: str, kind: str, endpoint: str):
        """A question over body.sentiric.document with a long-document strategy (serve_longdoc.py)."""
        t0 = time.perf_counter()
        strategy = body.sentiric.strategy or settings.strategy
        base = request_for(body, [], [])
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        progress: asyncio.Queue = asyncio.Queue()
        task = asyncio.ensure_future(long_answer(scheduler, model, question, body.sentiric.document, strategy, base,
                                                 on_progress=lambda *p: progress.put_nowait(p)))
        if body.stream:
            return StreamingResponse(_sse_long(task, progress, rid, created, kind, t0, endpoint),
                                     media_type="text/event-stream")
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if not task.done() and await http.is_disconnected():
                    task.cancel()
            rec = task.result()
        except QueueFull as e:
            return error(429, str(e), "rate_limit_error", headers={"Retry-After": "1"})
        except SentiricError as e:
            return error(400, str(e))
        finally:
            task.cancel()
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        out = json.loads(_final(rid, created, kind, rec.answer, None, model_id).body)
        out["choices"][0]["finish_reason"] = "length" if rec.finish_reason == "length" else "stop"
        out["usage"] = usage(rec)
        out["sentiric"] = record_json(rec)
        return JSONResponse(out)

    async def _sse_long(task, progress, rid, created, kind, t0, endpoint):
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        try:
            if kind == "chat":
                yield _event(rid, created, obj, {"index": 0, "delta": {"role": "assistant", "content": ""},
                                                 "finish_reason": None}, model=model_id)
            while not task.done():
                await asyncio.wait({task}, timeout=1.0)
                while not progress.empty():  # SSE comments: clients ignore them; they show the phases
                    phase, done, total = progress.get_nowait()
                    yield f": {phase} {done}/{total}\n\n"
            try:
                rec = task.result()
            except (SentiricError, QueueFull) as e:
                yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'invalid_request_error'}})}\n\n"
                yield "data: [DONE]\n\n"
                return
            reason = "length" if rec.finish_reason == "length" else "stop"
            text = ({"index": 0, "delta": {"content": rec.answer}, "finish_reason": None} if kind == "chat"
                    else {"index": 0, "text": rec.answer, "logprobs": None, "finish_reason": None})
            yield _event(rid, created, obj, text, model=model_id)
            last = ({"index": 0, "delta": {}, "finish_reason": reason} if kind == "chat"
                    else {"index": 0, "text": "", "logprobs": None, "finish_reason": reason})
            data = json.loads(_event(rid, created, obj, last, usage(rec), model=model_id)[len("data: "):])
            data["sentiric"] = record_json(rec)
            yield f"data: {json.dumps(data)}\n\n"
            yield "data: [DONE]\n\n"
            latency.labels(endpoint).observe(time.perf_counter() - t0)
        finally:  # the client went away mid-stream: stop submitting chunks, cut the ones in flight
            task.cancel()

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, http: HTTPRequest):
        prompt = body.prompt if isinstance(body.prompt, str) else (body.prompt[0] if len(body.prompt) == 1 else None)
        if prompt is None:
            return error(400, "one prompt per request (send a string, or a list of one)", param="prompt")
        if body.sentiric is not None:
            return await serve_long(http, body, prompt, "text", "completions")
        toks = model.tokenize(prompt, add_special=True, parse_special=True)
        if not toks:
            return error(400, "the prompt is empty", param="prompt")
        split = 1 if toks[0] == model.bos else 0  # pin BOS; the rest streams through the window
        req = request_for(body, toks[:split], toks[split:])
        req.trace = body.logprobs is not None
        return await serve(http, req, "text", "completions", body.stream, body.logprobs)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, http: HTTPRequest):
        if body.sentiric is not None:
            question = next((m.content for m in reversed(body.messages) if m.role == "user"), None)
            if not question:
                return error(400, "a long-document request needs a user message with the question", param="messages")
            return await serve_long(http, body, question, "chat", "chat_completions")
        head, rest = chat_tokens(model, [(m.role, m.content) for m in body.messages])
        req = request_for(body, head, rest)
        if not model.chat_template():  # plain `role: text` turns: the next turn ends the answer
            req.stop = (*req.stop, "\nuser:", "\nsystem:")
        return await serve(http, req, "chat", "chat_completions", body.stream)

    @app.on_event("shutdown")
    def _stop() -> None:
        scheduler.shutdown(settings.shutdown_timeout)

    return app


def chat_tokens(model, messages: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """The conversation in the model's chat template (plain `role: text` lines without one). The system
    messages at the start are the pinned head; the rest streams through the window."""
    template = model.chat_template()
    n_sys = next((i for i, (role, _) in enumerate(messages) if role != "system"), len(messages))

    def render(msgs, ass: bool) -> str:
        if template:
            return model.apply_template(template, msgs, add_assistant=ass)
        return "".join(f"{role}: {text}\n" for role, text in msgs) + ("assistant:" if ass else "")

    full = render(messages, True)
    prefix = render(messages[:n_sys], False) if n_sys else ""
    if not full.startswith(prefix):
        prefix = ""
    toks = model.tokenize(full, add_special=True, parse_special=bool(template))
    n_head = len(model.tokenize(prefix, add_special=True, parse_special=bool(template))) if prefix else 1
    n_head = max(1, min(n_head, len(toks) - 1))
    return toks[:n_head], toks[n_head:]


def _logprobs(model, r: Record, top: int) -> dict:
    """OpenAI's legacy completion logprobs: each sampled token's log-probability and the top alternatives."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    at = 0
    for tok, logits in zip(r.tokens, r.logits, strict=False):
        lp = log_softmax(logits)
        piece = model.piece(tok).decode("utf-8", errors="replace")
        out["tokens"].append(piece)
        out["token_logprobs"].append(float(lp[tok]))
        best = np.argsort(lp)[::-1][:top]
        out["top_logprobs"].append({model.piece(int(t)).decode("utf-8", errors="replace"): float(lp[t]) for t in best})
        out["text_offset"].append(at)
        at += len(piece)
    return out


def _reason(r: Record) -> str:
    return "length" if r.finish_reason == "length" else "stop"


def _usage(r: Record) -> dict:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.generated_tokens,
            "total_tokens": r.prompt_tokens + r.generated_tokens}


def _event(rid: str, created: int, obj: str, choice: dict, usage: dict | None = None, model: str = "sentiric") -> str:
    data = {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}
    if usage is not None:
        data["usage"] = usage
    return f"data: {json.dumps(data)}\n\n"


def _final(rid: str, created: int, kind: str, text: str, record: Record | None, model: str) -> JSONResponse:
    reason = _reason(record) if record else "stop"
    usage = _usage(record) if record else {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if kind == "chat":
        body = {"id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
                "usage": usage}
    else:
        body = {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}], "usage": usage}
    return JSONResponse(body)
