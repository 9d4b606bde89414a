"""The FastAPI app: middleware (guard.py: body limit and API key; CORS), OpenAI-shaped errors, and the small routes
(health, models, metrics, tokenize, detokenize). The generating routes live in their own modules.

Every route answers with and without the /v1 prefix, as llama-server's do. /health and the model list are
public; everything else needs the key when one is set (Authorization: Bearer KEY, or x-api-key: KEY).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

from fastapi import APIRouter, FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.sampling import SamplingParams
from sentiric_cli.errors import SentiricError
from sentiric_cli.serve import anthropic, completions, embeddings, responses
from sentiric_cli.serve.drive import Server, server
from sentiric_cli.serve.errors import BadRequest, error
from sentiric_cli.serve.errors import response as error_response
from sentiric_cli.serve.guard import Guard
from sentiric_cli.serve.scheduler import Scheduler
from sentiric_cli.serve.schemas import DetokenizeBody, TokenizeBody
from sentiric_cli.settings import Settings

router = APIRouter()


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
                                 ("copied_prefixes", c.copied_prefixes,
                                  "Prompts whose cached start was copied from another slot to the lowest free one"),
                                 ("drafted_tokens", c.drafted_tokens,
                                  "Tokens proposed from the request's own text (prompt-lookup drafting)"),
                                 ("accepted_tokens", c.accepted_tokens, "Drafted tokens the model confirmed"),
                                 ("rejected", c.rejected, "Requests refused with 429"),
                                 ("cancelled", c.cancelled, "Requests whose client went away")):
            yield CounterMetricFamily(f"sentiric_{name}", doc, value=value)
        host = self.s.host
        if host is not None:  # cache_ram: prompt caches kept in host RAM (hostcache.py)
            t = host.tally
            for name, value, doc in (("cache_ram_saves", t.saved, "Slot caches saved to host RAM"),
                                     ("cache_ram_hits", t.hits, "Prompts that went on from a cache saved in host RAM"),
                                     ("cache_ram_restored_tokens", t.restored_tokens,
                                      "Prompt tokens restored from host RAM instead of read"),
                                     ("cache_ram_evictions", t.evicted, "Saved caches dropped for the cache_ram budget"),
                                     ("cache_ram_saved_bytes", c.saved_bytes, "Bytes of slot caches saved to host RAM")):
                yield CounterMetricFamily(f"sentiric_{name}", doc, value=value)
            yield GaugeMetricFamily("sentiric_cache_ram_bytes", "Bytes of prompt caches held in host RAM", value=host.bytes)
            yield GaugeMetricFamily("sentiric_cache_ram_entries", "Prompt caches held in host RAM",
                                    value=len(host.entries))
            yield GaugeMetricFamily("sentiric_cache_ram_budget_bytes", "The cache_ram budget", value=host.budget)
        yield GaugeMetricFamily("sentiric_active_slots", "Slots serving a request", value=st["busy"])
        yield GaugeMetricFamily("sentiric_queue_depth", "Requests waiting for a slot", value=st["queue"])
        yield GaugeMetricFamily("sentiric_free_slots", "Slots free for a request", value=st["free"])
        yield GaugeMetricFamily("sentiric_total_slots", "Slots (requests served at once)", value=st["total"])
        yield GaugeMetricFamily("sentiric_ready", "1 while serving, 0 while draining", value=int(self.s.accepting))
        # llama-server's names for the same two gauges: what routers and autoscalers built for llama.cpp scrape
        # (the Kubernetes Gateway API inference extension's llama.cpp model server reads these)
        yield GaugeMetricFamily("llamacpp:requests_processing", "Requests being processed", value=st["busy"])
        yield GaugeMetricFamily("llamacpp:requests_deferred", "Requests waiting for a slot", value=st["queue"])


def origin_pattern(origins: list[str]) -> str:
    """CORS origins as one regex: `*` is any origin; an origin without a port matches it on any port."""
    if "*" in origins:
        return ".*"
    alts = [re.escape(o.rstrip("/")) + ("" if re.search(r":\d+$", o.rstrip("/")) else r"(:\d+)?") for o in origins]
    return "^(" + "|".join(alts) + ")$" if alts else "^$"


def fingerprint(engine: Engine, settings: Settings) -> str:
    """OpenAI's system_fingerprint: changes when what decides the answers besides the request does (the versions,
    the model file, the CPU path, the context and slots)."""
    import llama_cpp

    from sentiric_cli import __version__
    parts = (__version__, llama_cpp.__version__, str(settings.model), engine.cpu.describe(), settings.context_size,
             settings.threads)
    # llama-server's form, "b<build>-<commit>" (its tests check the "b"): here the bindings' version and a hash
    return f"b{llama_cpp.__version__}-{hashlib.sha1(repr(parts).encode()).hexdigest()[:10]}"


def create_app(engine: Engine, settings: Settings, profile: str | None = None, model_id: str = "sentiric") -> FastAPI:
    registry = CollectorRegistry()
    scheduler = Scheduler(engine, settings.queue_size)
    registry.register(_Stats(scheduler))
    latency = Histogram("sentiric_request_seconds", "Request latency", ["endpoint"], registry=registry,
                        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
    srv = Server(engine, scheduler, settings, model_id, profile, latency, fingerprint=fingerprint(engine, settings))
    if settings.embeddings:
        srv.embedder = embeddings.Embedder(engine.model, settings)
    app = FastAPI(title="sentiric", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = srv
    app.state.scheduler = scheduler
    app.state.registry = registry

    app.add_middleware(Guard, settings=settings, router=app.router)
    # added last, so outermost: preflights are answered before the key check, errors carry CORS headers too
    app.add_middleware(CORSMiddleware, allow_origin_regex=origin_pattern(settings.cors_origins),
                       allow_methods=["*"], allow_headers=["*"], allow_credentials=False, max_age=600)

    @app.exception_handler(BadRequest)
    async def bad(request: HTTPRequest, exc: BadRequest):
        return error_response(exc, request.url.path)

    @app.exception_handler(SentiricError)
    async def refused(request: HTTPRequest, exc: SentiricError):  # what the engine refuses is the request's fault
        return error(400, str(exc), path=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HTTPRequest, exc: RequestValidationError):
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, "invalid JSON in the request body", path=request.url.path)
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
        msg = first.get("msg", "invalid")
        return error(400, f"{where}: {msg}" if where else msg, param=where, path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: HTTPRequest, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), path=request.url.path)

    for module in (completions, responses, embeddings, anthropic):
        app.include_router(module.router)
    app.include_router(router)

    @app.on_event("shutdown")
    def _stop() -> None:
        scheduler.shutdown(settings.shutdown_timeout)
        if srv.embedder is not None:
            srv.embedder.close()

    return app


@router.get("/health")
@router.get("/v1/health", include_in_schema=False)
@router.get("/readyz", include_in_schema=False)
async def health(http: HTTPRequest):
    """Readiness: 200 while serving; 503 while draining (and while loading: replica.py), so a router takes this
    replica out of rotation. The slots and queue are here for a least-busy router."""
    srv = server(http)
    st = srv.scheduler.status()
    body = {"status": "ok" if srv.scheduler.accepting else "stopping", "model": srv.model_id, "profile": srv.profile,
            "slots": {k: st[k] for k in ("total", "busy", "free")}, "queue": st["queue"]}
    if not srv.scheduler.accepting:
        return JSONResponse({**body, "error": {"code": 503, "message": "the server is shutting down",
                                               "type": "unavailable_error"}}, status_code=503)
    return body


@router.get("/livez")
@router.get("/v1/livez", include_in_schema=False)
async def livez(http: HTTPRequest):
    """Liveness: the process answers (loaded or not, draining or not); only no answer means restart it."""
    return {"status": "ok", "ready": server(http).scheduler.accepting}


@router.get("/props")
@router.get("/v1/props", include_in_schema=False)
async def props(http: HTTPRequest):
    """llama-server's /props: the settings a request starts from, the slots, the model's template and tokens."""
    import llama_cpp

    from sentiric_cli import __version__
    srv = server(http)
    s, model = srv.settings, srv.model
    sp = SamplingParams.from_settings(s)  # what a request starts from, penalties' defaults included
    params = {"temperature": sp.temperature, "top_k": sp.top_k, "top_p": sp.top_p, "min_p": sp.min_p,
              "repeat_penalty": sp.repeat_penalty, "repeat_last_n": sp.penalty_last_n,
              "presence_penalty": sp.presence_penalty, "frequency_penalty": sp.frequency_penalty, "seed": sp.seed,
              "n_predict": s.max_tokens, "stop": []}
    return {"default_generation_settings": {"n_ctx": s.context_size, "params": params},
            "total_slots": s.threads, "model_alias": srv.model_id, "model_path": str(model.path),
            "chat_template": model.chat_template() or "", "bos_token": model.special_text(model.bos),
            "eos_token": model.special_text(model.eos), "modalities": {"vision": False, "audio": False},
            "build_info": f"sentiric {__version__}, llama-cpp-python {llama_cpp.__version__}",
            "system_fingerprint": srv.fingerprint}


@router.get("/metrics")
async def metrics(http: HTTPRequest):
    return PlainTextResponse(generate_latest(http.app.state.registry).decode(), media_type="text/plain; version=0.0.4")


def _model(srv: Server) -> dict:
    return {"id": srv.model_id, "object": "model", "created": srv.started, "owned_by": "sentiric",
            "meta": {"n_ctx": srv.settings.context_size, "threads": srv.settings.threads,
                     "n_vocab": srv.model.n_vocab}}


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def models(http: HTTPRequest):
    return {"object": "list", "data": [_model(server(http))]}


@router.get("/v1/models/{model_id:path}")
@router.get("/models/{model_id:path}", include_in_schema=False)
async def one_model(model_id: str, http: HTTPRequest):
    srv = server(http)
    if model_id != srv.model_id:
        raise BadRequest(f"the model '{model_id}' does not exist; this server has '{srv.model_id}'", "model",
                         status=404, kind="invalid_request_error")
    return _model(srv)


@router.post("/tokenize")
@router.post("/v1/tokenize", include_in_schema=False)
async def tokenize(body: TokenizeBody, http: HTTPRequest):
    model = server(http).model
    def piece(t: int):
        raw = model.piece(t)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:  # part of a character: the bytes, as llama-server sends them
            return list(raw)

    def answer() -> bytes:
        # tokens and their JSON made in a worker thread: a 3.6 MB text is 800k tokens, and encoding them on
        # the event loop (FastAPI's encoder walks every item) held up every other request for a second
        toks = model.tokenize(body.content, body.add_special, body.parse_special)
        out = [{"id": t, "piece": piece(t)} for t in toks] if body.with_pieces else toks
        return json.dumps({"tokens": out}, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(await asyncio.to_thread(answer), media_type="application/json")


@router.post("/detokenize")
@router.post("/v1/detokenize", include_in_schema=False)
async def detokenize(body: DetokenizeBody, http: HTTPRequest):
    model = server(http).model
    bad = next((t for t in body.tokens if t < 0 or t >= model.n_vocab), None)
    if bad is not None:
        raise BadRequest(f"tokens: {bad} is not a token id (0..{model.n_vocab - 1})", "tokens")
    raw = await asyncio.to_thread(lambda: b"".join(model.piece(t) for t in body.tokens))  # maybe millions
    return {"content": raw.decode("utf-8", errors="replace")}
