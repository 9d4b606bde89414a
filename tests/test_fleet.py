"""Beyond one machine (issue 26): `serve` as a replica a router can use, and `run --backend` reading a long
document's chunks through OpenAI-compatible servers. Real processes on loopback; the LiteLLM proxy: test_proxy.py."""

from __future__ import annotations

import http.server
import json
import math
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from clirun import _env, assert_user_error, run
from live import server
from needles import KEY16, QUESTION
from needles import WINDOW16 as WINDOW
from waits import WAIT


@pytest.fixture(scope="module")
def replicas():
    with server("--threads", "2", "--context", WINDOW) as a, server("--threads", "2", "--context", WINDOW) as b:
        yield a, b


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=WAIT).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


# ---- the replica

def test_health_is_503_while_the_model_loads_and_livez_answers_throughout():
    env = {k: v for k, v in _env(None).items()}
    proc = subprocess.Popen([sys.executable, "-m", "sentiric_cli", "serve", "--port", "0", "--threads", "1",
                             "--context", "256", "--served-model-name", "fleet-model"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stderr.readline()  # printed once listening, before the model loads
        assert "listening on" in line and "loading" in line, line
        url = line.split("listening on ")[1].split()[0]
        seen: list[tuple[int, int]] = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            early = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, timeout=WAIT)
            live = httpx.get(f"{url}/livez", timeout=5)
            health = httpx.get(f"{url}/health", timeout=5)
            seen.append((health.status_code, live.status_code))
            if health.status_code == 200:
                break
            assert health.json()["error"] == {"code": 503, "message": "Loading model", "type": "unavailable_error",
                                               "param": None}
            # still loading after it, so loading when it came: 503, never a refused connection
            assert early.status_code == 503 and early.json()["error"]["code"] == 503
        statuses = [h for h, _ in seen]
        assert statuses[0] == 503 and statuses[-1] == 200, seen  # loading, then ready
        assert statuses == sorted(statuses, key=lambda s: s == 200)  # never back to 503 while serving
        assert all(live == 200 for _, live in seen)
        assert httpx.get(f"{url}/readyz").status_code == 200
        models = httpx.get(f"{url}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["fleet-model"]
        done = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, timeout=WAIT).json()
        assert done["model"] == "fleet-model"
        # the gauges a least-busy router or an autoscaler reads, also under llama-server's names
        for name in ("sentiric_active_slots", "sentiric_free_slots", "sentiric_total_slots", "sentiric_queue_depth",
                     "llamacpp:requests_processing", "llamacpp:requests_deferred", "sentiric_ready"):
            _metric(url, name)
        assert _metric(url, "sentiric_free_slots") == 1 and _metric(url, "sentiric_ready") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_health_is_503_while_draining_and_livez_still_200(bundled):
    """In-process: once SIGTERM's drain starts, uvicorn closes the listening socket, so a router sees refused
    connections; a request on a connection already open (a health check's keep-alive) gets this 503."""
    import asyncio

    from sentiric_cli.engine.core import Engine
    from sentiric_cli.serve.app import create_app
    from sentiric_cli.settings import Settings

    async def check(app) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as c:
            assert (await c.get("/health")).status_code == 200
            app.state.scheduler.drain(1.0)
            draining = await c.get("/health")
            assert draining.status_code == 503 and draining.json()["status"] == "stopping"
            assert (await c.get("/readyz")).status_code == 503
            live = await c.get("/livez")
            assert live.status_code == 200 and live.json()["ready"] is False

    settings = Settings(threads=1, context_size=256)
    with Engine(settings, bundled) as engine:
        app = create_app(engine, settings)
        try:
            asyncio.run(check(app))
        finally:
            app.state.scheduler.shutdown(1.0)


def test_a_stop_while_loading_exits_cleanly():
    proc = subprocess.Popen([sys.executable, "-m", "sentiric_cli", "serve", "--port", "0", "--threads", "1",
                             "--context", "256"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env(None))
    assert "listening on" in proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in proc.stderr.read()


# ---- what run --backend asks of a server: a prompt's log-probabilities, tokens by id

def test_echo_gives_the_prompts_log_probabilities_by_token_id(replicas):
    (url, _, _), _ = replicas
    ids = httpx.post(f"{url}/tokenize", json={"content": "The pass key is 48213. Remember it.", "add_special": True}
                     ).json()["tokens"]
    body = {"prompt": ids, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 0,
            "return_tokens_as_token_ids": True}
    full = httpx.post(f"{url}/v1/completions", json=body, timeout=WAIT).json()["choices"][0]
    lp = full["logprobs"]
    assert [int(t.removeprefix("token_id:")) for t in lp["tokens"][:len(ids)]] == ids
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # nothing predicts the first token
    assert all(v <= 0 for v in lp["token_logprobs"][1:]) and len(lp["token_logprobs"]) == len(ids) + 1
    text = httpx.post(f"{url}/detokenize", json={"tokens": ids}).json()["content"]
    assert full["text"].startswith(text.removeprefix("<bos>"))
    # the same log-probabilities from token 5 on, the context before it read but not scored
    part = httpx.post(f"{url}/v1/completions", json={**body, "logprobs_from": 5}, timeout=WAIT).json()["choices"][0]
    tail = part["logprobs"]["token_logprobs"]
    assert tail[:5] == [None] * 5
    assert all(math.isclose(a, b, abs_tol=0.05) for a, b in zip(tail[5:len(ids)], lp["token_logprobs"][5:len(ids)],
                                                               strict=True))
    streamed = httpx.post(f"{url}/v1/completions", json={**body, "stream": True}, timeout=WAIT)
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "echo"


# ---- run --backend

def test_run_through_two_backends_gives_the_local_answer_and_citations(replicas, doc16, local16):
    (a, _, _), (b, _, _) = replicas
    r = run("run", QUESTION, "-f", str(doc16[0]), "--backend", a, "--backend", b, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert str(KEY16) in out["answer"] and out["answer"] == local16["answer"]
    assert out["longdoc"]["citations"] == local16["longdoc"]["citations"]
    assert out["longdoc"]["chunks"] == local16["longdoc"]["chunks"]  # the same passages: the same vocabulary
    assert out["longdoc"]["vocabulary"] == f"{a}/tokenize"  # no --model: the first backend's vocabulary
    shares = {x["url"]: x["requests"] for x in out["longdoc"]["backends"]}
    assert len(shares) == 2 and all(n > 0 for n in shares.values())  # both read chunks
    assert out["longdoc"]["retried"] == []


def test_a_backend_killed_mid_map_has_its_chunks_retried_on_the_other(doc16, local16):
    with server("--threads", "2", "--context", WINDOW) as (a, _, _), \
            server("--threads", "2", "--context", WINDOW) as (b, victim, _):
        proc = subprocess.Popen([sys.executable, "-m", "sentiric_cli", "run", QUESTION, "-f", str(doc16[0]),
                                 "--backend", a, "--backend", b, "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env(None))
        try:
            deadline = time.monotonic() + WAIT
            while _metric(b, "sentiric_requests_total") < 4 and time.monotonic() < deadline:  # mid-map
                time.sleep(0.05)
            assert _metric(b, "sentiric_active_slots") > 0
            victim.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    rec = json.loads(out)
    assert rec["answer"] == local16["answer"] and rec["longdoc"]["citations"] == local16["longdoc"]["citations"]
    retried = rec["longdoc"]["retried"]
    assert retried and {r["backend"] for r in retried} == {b} and {r["round"] for r in retried} <= {"map", "read", "check", "alone"}
    by_url = {x["url"]: x for x in rec["longdoc"]["backends"]}
    assert by_url[b]["failures"] >= 1 and by_url[a]["requests"] > 0
    # every request answered once: the map's records are each passage's and the baseline, none twice
    n_map = len(local16["longdoc"]["chunks"]) + 1
    assert sum(x["requests"] for x in by_url.values()) >= n_map


def test_the_only_backend_killed_mid_map_is_one_line_and_exit_2(doc16):
    with server("--threads", "2", "--context", WINDOW) as (a, victim, _):
        proc = subprocess.Popen([sys.executable, "-m", "sentiric_cli", "run", QUESTION, "-f", str(doc16[0]),
                                 "--backend", a, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_env(None))
        try:
            deadline = time.monotonic() + WAIT
            while _metric(a, "sentiric_requests_total") < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_user_error(r, "no backend answered a map request", a)


class _NotOpenAI(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>hello</html>")

    def log_message(self, *args):
        pass


def test_bad_backends_are_one_line_and_exit_2(replicas, doc16, micro, bundled):
    path = str(doc16[0])
    assert_user_error(run("run", QUESTION, "-f", path, "--backend", "localhost:1"), "not an http(s) URL")
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert_user_error(run("run", QUESTION, "-f", path, "--backend", f"http://127.0.0.1:{port}"), "does not answer")
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotOpenAI)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        assert_user_error(run("run", QUESTION, "-f", path, "--backend", f"http://127.0.0.1:{web.server_port}"),
                          "not an OpenAI-compatible server")
    finally:
        web.shutdown()
    (a, _, _), _ = replicas
    with server("--model", str(micro), "--threads", "1", "--context", "256") as (other, _, _):
        # another model behind the URL than the GGUF given, or than the first backend's
        assert_user_error(run("run", QUESTION, "-f", path, "--model", str(bundled), "--backend", other),
                          "has another vocabulary")
        assert_user_error(run("run", QUESTION, "-f", path, "--backend", a, "--backend", other),
                          "has another vocabulary")
        assert_user_error(run("run", QUESTION, "-f", path, "--backend", f"{other}#no-such-model"), "has no model")


def test_the_backends_come_from_the_environment_too(replicas, doc16, local16, bundled):
    (a, _, _), _ = replicas
    r = run("run", QUESTION, "-f", str(doc16[0]), "--json", "--model", str(bundled),
            env={"LLM_LLAMA_SERVICE_BACKENDS": a, "LLM_LLAMA_SERVICE_BACKEND_SLOTS": "1"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"] == local16["answer"]
    assert out["longdoc"]["vocabulary"] == str(bundled)  # the GGUF given: its vocabulary, loaded alone
    assert [(x["url"], x["slots"]) for x in out["longdoc"]["backends"]] == [(a, 1)]


def test_a_keyed_backend_needs_the_key(doc16):
    with server("--threads", "1", "--context", WINDOW, env={"LLM_LLAMA_SERVICE_API_KEY": "s3cret"}) as (url, _, _):
        # /v1/models is public (as llama-server's), so the key is asked for at the first completion
        r = run("run", "Hi", "--backend", url)
        assert r.returncode == 2 and "401" in r.stderr and "Traceback" not in r.stderr
        ok = run("run", "Say hi.", "--backend", url, "-n", "4", env={"LLM_LLAMA_SERVICE_BACKEND_API_KEY": "s3cret"})
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip()
