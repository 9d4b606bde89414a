"""Long-document strategies for API users: the `sentiric` extension of a request body, run through the scheduler.

    {"messages": [...], "sentiric": {"document": "<text of any length>", "strategy": "auto", "kind": "list"}}

The question is the last user message (or the completion prompt); the document travels apart from it so
that `map` can read it in chunks with the question pinned before each. Other servers ignore the field.
The map requests go through the same scheduler as everyone else's, at most `threads` at a time per long
request, so other clients keep being served between chunks. The answer comes back as usual, with the
record in a `sentiric` field of the response (and of the last streamed chunk).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from sentiric_cli.engine.doctokens import tokenize_document
from sentiric_cli.engine.prompt import INSTRUCTION
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.longdoc import LongRecord, MapJob, Phase
from sentiric_cli.longdoc.mapreduce import record_dict
from sentiric_cli.longdoc.protocol import Protocol, protocol
from sentiric_cli.longdoc.strategies import one_read
from sentiric_cli.serve.drive import build_request
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.scheduler import Busy, QueueFull, Scheduler, ShuttingDown
from sentiric_cli.serve.shapes import DONE, sse


async def _one(scheduler: Scheduler, req: Request) -> Record:
    job = scheduler.submit(req, stream=False, internal=True)
    record = None
    try:
        while True:
            ev = await job.events.get()
            if ev is None:
                break
            if isinstance(ev, Exception):
                raise ev
            if isinstance(ev, Record):
                record = ev
    except BaseException:
        job.cancel()
        raise
    if record is None or record.finish_reason == "interrupted":
        raise SentiricError("the long-document request was cut (server stopping or client gone)")
    return record


async def run_many(scheduler: Scheduler, requests: list[Request], limit: int, on_done=None) -> list[Record]:
    """Every request through the scheduler, at most `limit` in flight; records in request order."""
    todo = deque(enumerate(requests))
    out: list[Record | None] = [None] * len(requests)
    inflight: dict[asyncio.Task, int] = {}
    try:
        while todo or inflight:
            while todo and len(inflight) < limit:
                i, r = todo.popleft()
                inflight[asyncio.ensure_future(_one(scheduler, r))] = i
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                out[inflight.pop(task)] = task.result()
                if on_done:
                    on_done(len(requests) - len(todo) - len(inflight), len(requests))
    finally:
        for task in inflight:
            task.cancel()
    records = [r for r in out if r is not None]
    assert len(records) == len(out)  # each task ended with its record or raised
    return records


async def drive(scheduler: Scheduler, steps: Protocol, slots: int, on_progress=None) -> LongRecord:
    """The asynchronous driver of the map-reduce protocol: each round through the scheduler, at most `slots` of its
    requests in flight (other clients are served between them)."""
    try:
        step = next(steps)
        while True:
            if on_progress:
                on_progress(step.name, 0, len(step.requests))
            recs = await run_many(scheduler, step.requests, slots,
                                  lambda d, n, name=step.name: on_progress and on_progress(name, d, n))
            step = steps.send(recs)
    except StopIteration as end:
        return end.value


async def long_answer(scheduler: Scheduler, model, question: str, document: str, strategy: str, base: Request,
                      raw: bool = False, on_progress=None, kind: str | None = None) -> LongRecord:
    window = scheduler.engine.ctx.n_ctx_seq
    slots = scheduler.engine.ctx.n_seq_max
    t0 = time.perf_counter()
    tokens = await asyncio.to_thread(tokenize_document, model, document)  # long: off the event loop
    phases = [Phase("tokenize", len(tokens), 0, time.perf_counter() - t0)]
    req = one_read(model, window, question, tokens, strategy, INSTRUCTION, raw, base)
    if req is not None:
        t0 = time.perf_counter()
        rec = await _one(scheduler, req)
        phases.append(Phase("read", rec.prompt_tokens, rec.generated_tokens, time.perf_counter() - t0))
        return LongRecord("window" if strategy == "window" else "single", rec.text, True, len(tokens), phases=phases,
                          finish_reason=rec.finish_reason, window_record=rec)
    job = await asyncio.to_thread(MapJob, model, window, question, tokens, raw, base, kind=kind)
    return await drive(scheduler, protocol(job, phases), slots, on_progress)


def record_json(r: LongRecord) -> dict:
    """The response's `sentiric` field: the record without the answer (the message has it)."""
    d = record_dict(r)
    d.pop("answer")
    return d


def usage(r: LongRecord) -> dict:
    """Tokens read and written over every phase: a map-reduce costs what it read, not only the question."""
    prompt = sum(p.tokens_read for p in r.phases if p.name != "tokenize")
    completion = sum(p.generated_tokens for p in r.phases)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def serve_long(http: HTTPRequest, srv, body, question: str, kind: str):
    """A question over body.sentiric.document with a long-document strategy: the answer in OpenAI's shape with the
    record in a `sentiric` field; streamed as SSE comments per phase, then the answer."""
    if body.n != 1:
        raise BadRequest("n: one answer per long-document request", "n")
    t0 = time.perf_counter()
    strategy = body.sentiric.strategy or srv.settings.strategy
    base = build_request(srv, body, [], [])
    rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    head = {"id": rid, "created": int(time.time()), "model": srv.model_id}
    progress: asyncio.Queue = asyncio.Queue()
    task = asyncio.ensure_future(long_answer(srv.scheduler, srv.model, question, body.sentiric.document, strategy,
                                             base, on_progress=lambda *p: progress.put_nowait(p),
                                             kind=body.sentiric.kind))
    if body.stream:
        return StreamingResponse(_stream(srv, task, progress, head, kind, t0), media_type="text/event-stream")
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if not task.done() and await http.is_disconnected():
                task.cancel()
        rec = task.result()
    except QueueFull as e:
        raise BadRequest(str(e), status=429, headers={"Retry-After": "1"}) from None
    except ShuttingDown as e:
        raise BadRequest(str(e), status=503) from None
    except SentiricError as e:
        raise BadRequest(str(e)) from None
    finally:
        task.cancel()
    srv.latency.labels(f"{kind}_completions").observe(time.perf_counter() - t0)
    out = {**head, "object": "chat.completion" if kind == "chat" else "text_completion",
           "choices": [_choice(rec, True, kind, False)], "usage": usage(rec), "sentiric": record_json(rec)}
    return JSONResponse(out)


def _choice(rec: LongRecord | None, last: bool, kind: str, stream: bool) -> dict:
    why = None if not last else ("length" if rec is not None and rec.finish_reason == "length" else "stop")
    text = rec.answer if rec is not None and not (last and stream) else ""
    if kind == "chat":
        part = {"role": "assistant", "content": text} if not stream else ({} if last else {"content": text})
        return {"index": 0, ("delta" if stream else "message"): part, "logprobs": None, "finish_reason": why}
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": why}


async def _stream(srv, task: asyncio.Future, progress: asyncio.Queue, head: dict, kind: str, t0: float):
    """SSE: the phases as comments while the task runs, then the answer and a last chunk with the record."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    try:
        if kind == "chat":
            yield sse({**head, "object": obj, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                           "logprobs": None, "finish_reason": None}]})
        while not task.done():
            await asyncio.wait({task}, timeout=1.0)
            while not progress.empty():  # SSE comments: clients ignore them; they show the phases
                phase, done, total = progress.get_nowait()
                yield f": {phase} {done}/{total}\n\n"
        try:
            rec = task.result()
        except (SentiricError, Busy) as e:
            yield sse({"error": {"message": str(e), "type": "invalid_request_error", "param": None, "code": 400}})
            yield DONE
            return
        yield sse({**head, "object": obj, "choices": [_choice(rec, False, kind, True)]})
        yield sse({**head, "object": obj, "choices": [_choice(rec, True, kind, True)], "usage": usage(rec),
                   "sentiric": record_json(rec)})
        yield DONE
        srv.latency.labels(f"{kind}_completions").observe(time.perf_counter() - t0)
    finally:  # the client went away mid-stream: stop submitting chunks, cut the ones in flight
        task.cancel()
