"""`run --backend`: the map-reduce's requests go to OpenAI-compatible servers instead of this machine's slots.

The protocol (protocol.py) is the same; this is its third driver. The document is cut with the local model's
vocabulary (a vocabulary-only load) and every engine Request becomes one /v1/completions request over token ids,
so a backend must share that vocabulary (checked first: `Fleet.check`):
- a scored request (relevance, support): `echo` with `logprobs: 0`, its body's tokens' log-probabilities summed
  as the engine's `score` sums them (from the prompt's log-probabilities, which sentiric serve and vLLM return);
- a read: its answer with each token's log-probability (`logprobs: 0`), or k alternatives (yes/no);
- tokens come back as `token_id:N` (vLLM's `return_tokens_as_token_ids`, which sentiric serve honours too).
Concurrency follows each backend's slots (/props, or backend_slots). A backend that fails or times out rests,
with backoff, and its requests go to the others; each request's record is taken once, from the one answer that
came back, so no chunk is lost or counted twice. The record lists each backend's share and every retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httpx

from sentiric_cli.engine.doctokens import tokenize_document
from sentiric_cli.engine.logprobs import TokenLogprob
from sentiric_cli.engine.prompt import layout
from sentiric_cli.engine.types import Piece, Record, Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.longdoc.mapreduce import LongRecord, MapJob, Phase
from sentiric_cli.longdoc.protocol import Protocol, protocol
from sentiric_cli.longdoc.strategies import PhaseProgress, one_read, rounds

PROBE = "Sentiric reads the vocabulary: naïve café, 1234 kilometres, ünïcödé, <b>bold</b>."
DEFAULT_SLOTS = 2  # a backend that does not say (vLLM, a LiteLLM proxy): set backend_slots for more
TRIES = 4  # sends of one request, over every backend, before the run gives up
REST = (0.5, 10.0)  # a failed backend rests 0.5 s, doubled per failure in a row, at most 10 s


class Unavailable(Exception):
    """A failure another backend may not have: a refused connection, a timeout, a 5xx or 429."""


@dataclass
class Backend:
    url: str  # the base, without /v1
    model: str  # the id its /v1/models gives (or the one named after # in the URL)
    slots: int
    window: int | None  # tokens per slot, where it says (/props)
    busy: int = 0
    served: int = 0
    failed: int = 0
    in_a_row: int = 0
    rest_until: float = 0.0

    def report(self) -> dict:
        return {"url": self.url, "model": self.model, "slots": self.slots, "requests": self.served,
                "failures": self.failed}


@dataclass
class Retry:
    round: str
    request: int  # its index in the round: for map, the passage (the last: the empty-excerpt baseline)
    backend: str  # the one that failed
    error: str


@dataclass
class Fleet:
    backends: list[Backend]
    http: httpx.Client
    retries: list[Retry] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def window(self) -> int | None:
        sizes = [b.window for b in self.backends if b.window]
        return min(sizes) if sizes else None

    def shares(self) -> dict[str, int]:
        return {b.url: b.served for b in self.backends}

    # ---- one request

    def body(self, b: Backend, req: Request) -> dict:
        s = req.sampling
        out: dict = {"model": b.model, "prompt": req.head + req.body + req.tail, "max_tokens": req.max_tokens,
                     "temperature": s.temperature, "stop": list(req.stop) or None, "n": 1,
                     "return_tokens_as_token_ids": True}
        if s.temperature > 0:
            out.update(top_p=s.top_p, top_k=s.top_k, min_p=s.min_p)
            if s.seed >= 0:
                out["seed"] = s.seed
        if req.score:  # sentiric serve scores from the body on (logprobs_from); another server scores it all
            out.update(echo=True, logprobs=0, logprobs_from=len(req.head))
        elif req.top_logprobs >= 0:
            out["logprobs"] = req.top_logprobs
        elif req.token_logprobs:
            out["logprobs"] = 0
        return {k: v for k, v in out.items() if v is not None}

    def send(self, b: Backend, req: Request) -> Record:
        try:
            r = self.http.post(f"{b.url}/v1/completions", json=self.body(b, req))
        except httpx.TimeoutException:
            raise Unavailable("timed out") from None
        except httpx.TransportError as e:
            raise Unavailable(_short(str(e) or type(e).__name__)) from None
        if r.status_code >= 500 or r.status_code == 429:
            raise Unavailable(f"HTTP {r.status_code}: {_message(r)}")
        if r.status_code != 200:
            raise SentiricError(f"backend {b.url} refused a request: HTTP {r.status_code}: {_message(r)}",
                                "is it an OpenAI-compatible completions server serving the local model?")
        try:
            data = r.json()
            return record(req, data["choices"][0], data.get("usage") or {})
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise SentiricError(f"backend {b.url} answered in a shape this client cannot read ({e!r})",
                                "sentiric serve, vLLM, or a LiteLLM proxy in front of them") from None

    def one(self, name: str, i: int, req: Request) -> Record:
        """One request's record: sent to the least busy backend at rest no longer; on a failure another one
        (the same again only when it is the only one), TRIES times in all."""
        failed: Backend | None = None
        error = ""
        for _ in range(TRIES * len(self.backends)):
            b = self._take(avoid=failed)
            try:
                rec = self.send(b, req)
            except Unavailable as e:
                self._give(b, ok=False)
                with self.lock:
                    self.retries.append(Retry(name, i, b.url, str(e)))
                failed, error = b, f"{b.url}: {e}"
                continue
            except BaseException:
                self._give(b, ok=None)  # refused as asked (a 4xx), or interrupted: neither served nor down
                raise
            self._give(b, ok=True)
            return rec
        raise SentiricError(f"no backend answered a {name} request after {TRIES * len(self.backends)} tries "
                            f"(last: {error})", "check the backends (their /health) and backend_timeout")

    def _take(self, avoid: Backend | None) -> Backend:
        with self.lock:
            while True:
                now = time.monotonic()
                free = [b for b in self.backends if b.busy < b.slots and b.rest_until <= now]
                choice = [b for b in free if b is not avoid] or free
                if choice:
                    b = min(choice, key=lambda b: (b.busy / b.slots, -b.slots))
                    b.busy += 1
                    return b
                waits = [b.rest_until - now for b in self.backends if b.rest_until > now]
                self.lock.wait(timeout=min(waits) if waits else None)

    def _give(self, b: Backend, ok: bool | None) -> None:
        with self.lock:
            b.busy -= 1
            if ok:
                b.served += 1
                b.in_a_row = 0
            elif ok is False:
                b.failed += 1
                b.in_a_row += 1
                b.rest_until = time.monotonic() + min(REST[1], REST[0] * 2 ** (b.in_a_row - 1))
            self.lock.notify_all()

    # ---- a round

    def run(self, name: str, requests: list[Request]) -> Iterator[tuple[int, Record]]:
        """Each request's record as it comes, any order; as many in flight as the backends have slots."""
        workers = sum(b.slots for b in self.backends)
        pool = ThreadPoolExecutor(max_workers=min(workers, len(requests)) or 1, thread_name_prefix="sentiric-backend")
        try:
            pending: dict[Future, int] = {pool.submit(self.one, name, i, r): i for i, r in enumerate(requests)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield pending.pop(f), f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def record(req: Request, choice: dict, usage: dict) -> Record:
    """The engine's Record of one completions choice: what the protocol reads (text, the answer's tokens and their
    log-probabilities, alternatives, or the scored body's log-likelihood)."""
    lp = choice.get("logprobs") or {}
    names = lp.get("tokens") or []
    values = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or []
    n_prompt = len(req.head) + len(req.body) + len(req.tail)
    text = choice.get("text") or ""
    scored, nll = 0, 0.0
    if req.score:
        if len(values) < n_prompt:
            raise ValueError("no prompt log-probabilities (echo with logprobs)")
        body = values[len(req.head):len(req.head) + len(req.body)]
        if any(v is None for v in body):
            raise ValueError("no prompt log-probabilities (echo with logprobs)")
        scored, nll = len(body), -sum(body)
        names, values, tops = names[n_prompt:], values[n_prompt:], tops[n_prompt:]
        text = ""  # the echo: the protocol reads no text from a scoring
    ids = [token_id(t) for t in names]
    entries: list[TokenLogprob] = []
    if req.top_logprobs >= 0:
        entries = [(t, float(v), tuple((token_id(a), float(alp)) for a, alp in (top or {}).items()))
                   for t, v, top in zip(ids, values, tops, strict=False)]
    finish = choice.get("finish_reason") or "stop"
    generated = int(usage.get("completion_tokens") or len(ids))
    return Record(prompt_tokens=int(usage.get("prompt_tokens") or n_prompt), head_tokens=len(req.head),
                  document_tokens=len(req.body), n_keep=0, context_size=0, generated_tokens=generated,
                  finish_reason="length" if finish == "length" else "stop", path="none", shifts=0, evicted_tokens=0,
                  evicted_spans=[], kept_spans=[], recomputed_tokens=0, reused_tokens=0, max_fill=0,
                  prefill_seconds=0.0, prefill_tokens_per_s=0.0, generation_tokens_per_s=0.0, text=text,
                  tokens=ids, scored_tokens=scored, nll=nll,
                  token_logprobs=[float(v) for v in values] if req.token_logprobs else [], logprobs=entries)


def token_id(name: str) -> int:
    if not name.startswith("token_id:"):
        raise ValueError(f"token {name!r} is not named by id (return_tokens_as_token_ids)")
    return int(name[9:])


def _message(r: httpx.Response) -> str:
    try:
        err = r.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err or r.json().get("detail")
    except (ValueError, AttributeError):
        msg = None
    return _short(str(msg or r.text or r.reason_phrase))


def _short(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


# ---- connecting

def connect(urls: list[str], key: str | None, timeout: float, slots: int | None) -> Fleet:
    """A Fleet of the backends at `urls` (`URL#model` names the model to ask for), each probed: an
    OpenAI-compatible model list, its slots and window from /props where it has one. One line and exit 2 when
    a URL is bad or the server is not OpenAI-compatible."""
    if not urls:
        raise SentiricError("no backends given", "--backend URL (repeatable)")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
    try:
        return Fleet([_probe(http, u, slots) for u in dict.fromkeys(urls)], http)
    except BaseException:
        http.close()
        raise


def _probe(http: httpx.Client, given: str, slots: int | None) -> Backend:
    url, _, model = given.partition("#")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SentiricError(f"--backend {given!r} is not an http(s) URL", "e.g. --backend http://127.0.0.1:8080")
    url = url.rstrip("/").removesuffix("/v1")
    try:
        r = http.get(f"{url}/v1/models")
    except httpx.HTTPError as e:
        raise SentiricError(f"backend {url} does not answer ({_short(str(e) or type(e).__name__)})",
                            "is the server running, and is the URL right?") from None
    if r.status_code == 401:
        raise SentiricError(f"backend {url} wants a key (HTTP 401)", "set backend_api_key "
                            "(LLM_LLAMA_SERVICE_BACKEND_API_KEY)")
    try:
        ids = [m["id"] for m in r.json()["data"]] if r.status_code == 200 else []
    except (ValueError, KeyError, TypeError):
        ids = []
    if not ids:
        raise SentiricError(f"backend {url} is not an OpenAI-compatible server (GET /v1/models: HTTP "
                            f"{r.status_code}, no model list)", "sentiric serve, vLLM, or a LiteLLM proxy")
    if model and model not in ids:
        raise SentiricError(f"backend {url} has no model {model!r} (it has {', '.join(ids)})",
                            "name one of them after # in the URL")
    window, total = None, None
    try:
        p = http.get(f"{url}/props", timeout=5.0)
        if p.status_code == 200:
            props = p.json()
            total = props.get("total_slots")
            window = (props.get("default_generation_settings") or {}).get("n_ctx")
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    n = slots or (total if isinstance(total, int) and total > 0 else DEFAULT_SLOTS)
    return Backend(url, model or ids[0], n, window if isinstance(window, int) and window > 0 else None)


def check(fleet: Fleet, model) -> None:
    """Each backend reads the local vocabulary's token ids as the local model does, and returns a prompt's
    log-probabilities: one echo of a probe sentence, compared with the local text. A different vocabulary, a
    server without prompt log-probabilities: one line, exit 2."""
    ids = model.tokenize(PROBE, add_special=False)
    probe = Request(head=ids[:1], body=ids[1:], max_tokens=1, score=True)
    want = b"".join(model.piece(t) for t in ids).decode("utf-8", errors="replace")
    for b in fleet.backends:
        theirs = _tokenize(fleet.http, b)
        if theirs is not None and theirs != ids:
            raise SentiricError(f"backend {b.url} ({b.model}) has another vocabulary: it cuts {PROBE[:30]!r}... into "
                                f"{len(theirs)} tokens, the local model into {len(ids)}"
                                + (" (other ids)" if len(theirs) == len(ids) else ""),
                                "give --model the GGUF the backends serve (only its vocabulary is loaded)")
        try:
            r = fleet.http.post(f"{b.url}/v1/completions", json=fleet.body(b, probe))
        except httpx.HTTPError as e:
            raise SentiricError(f"backend {b.url} does not answer a completion ({_short(str(e))})") from None
        if r.status_code == 401:
            raise SentiricError(f"backend {b.url} wants a key (HTTP 401)",
                                "set backend_api_key (LLM_LLAMA_SERVICE_BACKEND_API_KEY)")
        if r.status_code != 200:
            raise SentiricError(f"backend {b.url} cannot score a prompt: HTTP {r.status_code}: {_message(r)}",
                                "the map needs /v1/completions with echo and logprobs (sentiric serve, vLLM)")
        try:
            choice = r.json()["choices"][0]
            said = choice["text"]
            record(probe, choice, {})
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise SentiricError(f"backend {b.url} does not return a prompt's log-probabilities as token ids ({e})",
                                "the map needs echo with logprobs and return_tokens_as_token_ids (sentiric serve, "
                                "vLLM); llama-server has neither") from None
        if not said.startswith(want):
            raise SentiricError(f"backend {b.url} ({b.model}) has another vocabulary: the local model's tokens for "
                                f"{PROBE[:30]!r}... read back there as {said[:40]!r}",
                                "give --model the GGUF the backends serve (only its vocabulary is loaded)")


def _tokenize(http: httpx.Client, b: Backend) -> list[int] | None:
    """The backend's tokens for PROBE from its /tokenize (llama-server's and sentiric's body; vLLM's), or None
    where it has none (a LiteLLM proxy): then the echo alone checks the vocabulary."""
    try:
        r = http.post(f"{b.url}/tokenize", json={"content": PROBE, "add_special": False, "prompt": PROBE,
                                                "model": b.model, "add_special_tokens": False}, timeout=10.0)
        toks = r.json().get("tokens") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return toks if isinstance(toks, list) and all(isinstance(t, int) for t in toks) else None


# ---- the driver

def drive(fleet: Fleet, steps: Protocol) -> Generator[PhaseProgress, None, LongRecord]:
    """The map-reduce protocol with each round's requests sent to the backends; progress says each one's share."""
    out = yield from rounds(steps, fleet.run, fleet.shares)
    out.backends = [b.report() for b in fleet.backends]
    out.retried = [asdict(r) for r in fleet.retries]
    return out


def answer(fleet: Fleet, model, window: int, prompt: str, document: str | None, strategy: str, *, instruction: str,
           raw: bool = False, base: Request, progress=None, kind: str | None = None) -> Iterator:
    """strategies.answer with the backends doing the reading; yields PhaseProgress and Piece events, then one
    LongRecord. `window`: the tokens a backend's slot holds."""
    if strategy == "window":
        raise SentiricError("--strategy window streams the document through one local window",
                            "with --backend use auto or map")
    if not document:
        lay = layout(model, prompt, None, instruction, raw, progress=progress)
        yield from _single(fleet, base.reading(lay.head, lay.body, lay.tail), [], [])
        return
    t0 = time.perf_counter()
    tokens = tokenize_document(model, document, progress=progress)
    phases = [Phase("tokenize", len(tokens), 0, time.perf_counter() - t0)]
    req = one_read(model, window, prompt, tokens, strategy, instruction, raw, base)
    if req is not None:
        yield from _single(fleet, req, tokens, phases)
        return
    record = yield from drive(fleet, protocol(MapJob(model, window, prompt, tokens, raw, base, kind=kind), phases))
    yield Piece(record.answer)
    yield record


def _single(fleet: Fleet, req: Request, tokens: list[int], phases: list[Phase]) -> Iterator:
    """The whole prompt in one request to one backend (it fits a slot), answered at once."""
    t0 = time.perf_counter()
    yield PhaseProgress("read", 0, 1, fleet.shares())
    rec = fleet.one("read", 0, req)
    yield PhaseProgress("read", 1, 1, fleet.shares())
    yield Piece(rec.text)
    phase = Phase("read", rec.prompt_tokens, rec.generated_tokens, time.perf_counter() - t0)
    out = LongRecord("single", rec.text, True, len(tokens), phases=[*phases, phase], finish_reason=rec.finish_reason,
                     window_record=rec, tokens=tokens)
    out.backends = [b.report() for b in fleet.backends]
    out.retried = [asdict(r) for r in fleet.retries]
    yield out
