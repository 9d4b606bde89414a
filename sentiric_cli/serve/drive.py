"""Running one request through the scheduler for a route: submit, wait (watching the client), or stream.

Routes shape what comes back; this module only moves events. A client that goes away cancels its job:
its slots are freed at the next step.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request as HTTPRequest
from llama_cpp import llama_cpp as C
from prometheus_client import Histogram

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.sampling import SamplingParams, grammar_sampler
from sentiric_cli.engine.types import Piece, Record, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.scheduler import Job, QueueFull, Scheduler, ShuttingDown
from sentiric_cli.settings import Settings

if TYPE_CHECKING:
    from sentiric_cli.serve.embeddings import Embedder


@dataclass
class Server:
    """What every route needs: the loaded model, its scheduler, the settings; created once by create_app."""
    engine: Engine
    scheduler: Scheduler
    settings: Settings
    model_id: str
    profile: str | None
    latency: Histogram
    embedder: Embedder | None = None
    started: int = field(default_factory=lambda: int(time.time()))
    fingerprint: str = ""  # system_fingerprint: what decides the answers besides the request (create_app sets it)

    @property
    def model(self):
        return self.engine.model


def server(http: HTTPRequest) -> Server:
    return http.app.state.server


INLINE_CHARS = 2048  # text this short tokenizes in under a millisecond (0.5 s per MB): a thread hop costs more


async def off_loop(chars: int, fn, *args):
    """`fn(*args)` in a worker thread when the text is long (the event loop keeps serving), inline when short."""
    if chars <= INLINE_CHARS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def text_size(messages: list[dict]) -> int:
    """Characters of the messages' text, near enough to pick inline or threaded tokenizing."""
    return sum(len(m["content"]) if isinstance(m.get("content"), str) else len(repr(m.get("content"))) + 64
               for m in messages) + 512 * sum(bool(m.get("tool_calls")) for m in messages)


def submit(srv: Server, req: Request, stream: bool) -> Job:
    try:
        return srv.scheduler.submit(req, stream=stream)
    except QueueFull as e:
        raise BadRequest(str(e), status=429, headers={"Retry-After": "1"}) from None
    except ShuttingDown as e:
        raise BadRequest(str(e), status=503) from None
    except SentiricError as e:
        raise BadRequest(str(e), "n") from None


def _failure(ev: Exception) -> BadRequest:
    if isinstance(ev, ShuttingDown):
        return BadRequest(str(ev), status=503)
    if isinstance(ev, SentiricError):
        return BadRequest(str(ev))
    return BadRequest(str(ev), status=500)


async def _next(http: HTTPRequest, job: Job):
    """The job's next event, watching for the client going away while it waits (it then cancels the job)."""
    if not job.events.empty():  # already here (a record's end-of-stream marker comes with it): no timer, no task
        return job.events.get_nowait()
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), timeout=0.5)
        except asyncio.TimeoutError:  # nothing yet: is the client still there?
            if await http.is_disconnected():
                job.cancel()


async def started(http: HTTPRequest, job: Job) -> list:
    """Wait until the job has a slot and has run (its first event), so that a refusal (queue drained at
    shutdown, a prompt that cannot fit) is an HTTP status rather than an error inside a 200 stream.
    Returns the events to replay into the stream."""
    try:
        ev = await _next(http, job)
    except BaseException:
        job.cancel()
        raise
    if isinstance(ev, Exception):
        job.cancel()
        raise _failure(ev)
    if ev is None:
        raise BadRequest("the request was cut before it started (server stopping)", status=503)
    return [ev]


async def collect(http: HTTPRequest, job: Job) -> list[Record]:
    """Every answer's record (index order), watching for the client going away while it waits."""
    records: dict[int, Record] = {}
    try:
        while True:
            ev = await _next(http, job)
            if ev is None:
                break
            if isinstance(ev, Exception):
                raise _failure(ev)
            if isinstance(ev, Record):
                records[ev.index] = ev
    finally:
        job.cancel()  # no-op when done; frees the slots when the handler is cancelled or failed
    if not records:
        raise BadRequest("the request was cut before it started (server stopping)", status=503)
    return [records[i] for i in sorted(records)]


async def events(job: Job, replay: Iterable = ()) -> AsyncIterator[Piece | Record]:
    """The job's pieces and records as they come (after `replay`); an error event raises BadRequest.
    Pieces that queued up while the client was being written to go out as one (one chunk, not one per token)."""
    pending = deque(replay)
    queue = job.events

    def ready() -> bool:
        return bool(pending) or not queue.empty()

    def take_nowait():
        return pending.popleft() if pending else queue.get_nowait()

    try:
        while True:
            ev = pending.popleft() if pending else await queue.get()
            while isinstance(ev, Piece) and ready():
                nxt = take_nowait()
                if not (isinstance(nxt, Piece) and nxt.index == ev.index):
                    pending.appendleft(nxt)
                    break
                lps = None if ev.logprobs is None else ev.logprobs + (nxt.logprobs or [])
                ev = Piece(ev.text + nxt.text, ev.index, lps)
            if ev is None:
                return
            if isinstance(ev, Exception):
                raise _failure(ev)
            if isinstance(ev, Piece | Record):
                yield ev
    finally:  # the client went away mid-stream (or we are done): free the slots at the next step
        job.cancel()


async def merged(jobs: list[Job], replays: list[list]) -> AsyncIterator[tuple[int, Piece | Record]]:
    """Several jobs' events as they come, each with its job's position; an error in any raises BadRequest."""
    if len(jobs) == 1:
        async for ev in events(jobs[0], replays[0]):
            yield 0, ev
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(k: int, job: Job, replay: list) -> None:
        try:
            async for ev in events(job, replay):
                await queue.put((k, ev))
        except BadRequest as e:
            await queue.put((k, e))
        finally:
            await queue.put((k, None))
    tasks = [asyncio.create_task(pump(k, j, r)) for k, (j, r) in enumerate(zip(jobs, replays, strict=True))]
    left = len(tasks)
    try:
        while left:
            k, ev = await queue.get()
            if ev is None:
                left -= 1
            elif isinstance(ev, BadRequest):
                raise ev
            else:
                yield k, ev
    finally:
        for t in tasks:
            t.cancel()
        for job in jobs:
            job.cancel()


def usage(records: list[Record], n: int = 1) -> dict:
    """A prompt is read once for its n answers (records n*k .. n*k+n-1 answer prompt k); each answer's tokens count."""
    prompt = sum(r.prompt_tokens for r in records if r.index % n == 0)
    done = sum(r.generated_tokens for r in records)
    cached = sum(r.reused_tokens for r in records if r.index % n == 0)  # held by the slot or restored from RAM
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done,
            "prompt_tokens_details": {"cached_tokens": cached}}


def reason(r: Record) -> str:
    """OpenAI's finish_reason: an answer cut (max_tokens, or the server stopping) is "length"."""
    return "length" if r.finish_reason in ("length", "interrupted") else "stop"


# sampling fields of other servers this one does not apply, with the values that mean "off": any other is a 400
NEUTRAL: dict[str, tuple] = {"typical_p": (None, 1.0), "tfs_z": (None, 1.0), "mirostat": (None, 0),
                             "dynatemp_range": (None, 0.0), "xtc_probability": (None, 0.0), "dry_multiplier": (None, 0.0),
                             "top_n_sigma": (None, -1.0, 0.0), "ignore_eos": (None, False), "best_of": (None, 1),
                             "echo": (None, False), "suffix": (None, "")}


def unsupported(body, handled: tuple[str, ...] = ()) -> None:
    """A 400 naming the first sampling field set that this server would otherwise ignore (`handled`: the route's own)."""
    for name, neutral in NEUTRAL.items():
        value = getattr(body, name, None)
        if name in handled:
            continue
        if value not in neutral:
            raise BadRequest(f"{name}: not supported by this server (only {neutral[1]!r} is accepted); leave it out",
                             name)


BAN = float("-inf")


def logit_bias(model, given) -> tuple[tuple[int, float], ...]:
    """(token id, bias) pairs from OpenAI's {"id": bias} or llama-server's forms: a text key or item stands for each
    of its tokens, `false` bans. A bias at or below -100 bans the token, as OpenAI documents -100."""
    items = given.items() if isinstance(given, dict) else given
    out: dict[int, float] = {}
    for key, value in items:
        bias = BAN if value is False or (not isinstance(value, bool) and value <= -100) else float(value)
        if value is True:
            raise BadRequest("logit_bias: a bias is a number, or false to ban the token", "logit_bias")
        if isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit()):
            tok = int(key)
            if not 0 <= tok < model.n_vocab:
                raise BadRequest(f"logit_bias: {tok} is not a token id (0..{model.n_vocab - 1})", "logit_bias")
            out[tok] = bias
        else:
            toks = model.tokenize(key, add_special=False, parse_special=False)
            if not toks:
                raise BadRequest("logit_bias: an empty text has no tokens to bias", "logit_bias")
            out.update((t, bias) for t in toks)
    return tuple(out.items())


def build_request(srv: Server, body, head: list[int], rest: list[int], grammar: str | None = None,
                  top_logprobs: int = -1, n: int = 1, triggers: tuple[str, ...] = (),
                  handled: tuple[str, ...] = ()) -> Request:
    """The engine request for a body's sampling fields, over the server's settings."""
    if n > srv.settings.threads:
        raise BadRequest(f"n: at most {srv.settings.threads} (this server's threads); got {n}", "n")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if any(not s for s in stop):
        raise BadRequest("stop: empty strings cannot end an answer", "stop")
    unsupported(body, handled)
    overrides = {k: v for k, v in {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
                                   "min_p": body.min_p, "repeat_penalty": body.repeat_penalty,
                                   "presence_penalty": getattr(body, "presence_penalty", None),
                                   "frequency_penalty": getattr(body, "frequency_penalty", None),
                                   "seed": body.seed}.items() if v is not None}
    if overrides.get("seed", 0) < 0:
        overrides["seed"] = -1
    last_n = getattr(body, "repeat_last_n", None)
    if last_n is not None:
        overrides["penalty_last_n"] = srv.settings.context_size if last_n == -1 else last_n
    if getattr(body, "logit_bias", None):
        overrides["logit_bias"] = logit_bias(srv.model, body.logit_bias)
    longest = (getattr(body, "max_completion_tokens", None) or getattr(body, "max_output_tokens", None)
               or body.max_tokens or srv.settings.max_tokens)
    if grammar is not None:
        try:
            C.llama_sampler_free(grammar_sampler(srv.model, grammar, triggers))  # parses it: a bad one is a 400
        except SentiricError as e:
            raise BadRequest(str(e), "grammar") from None
    sampling = SamplingParams.from_settings(srv.settings, grammar=grammar, grammar_triggers=triggers, **overrides)
    draft = getattr(body, "draft_tokens", None)
    extra = {} if draft is None else {"draft": draft}
    return Request.from_settings(srv.settings, head, rest, stop=stop, max_tokens=longest, sampling=sampling,
                                 top_logprobs=top_logprobs, n=n, **extra)
