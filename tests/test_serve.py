"""`sentiric serve` as clients use it: a real server process on a free port, the official openai client."""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import signal
import time

import httpx
import pytest
from live import after_a_first_read, client, server
from waits import WAIT

PROMPTS = [f"Question {i}: what colour is the {thing}? Answer:" for i, thing in
           enumerate(["sky", "grass", "sun", "snow", "night", "sea", "blood", "coal"])]


@pytest.fixture(scope="module")
def two():
    with server("--threads", "2", "--context", "512") as s:
        yield s


@pytest.mark.text
def test_openai_client_chat_and_completion_streaming_and_not(two):
    url, _, banner = two
    assert "http://127.0.0.1:" in banner and "plan on" in banner  # binds this machine only; says its plan
    c = client(url)
    done = after_a_first_read(c.completions.create, model="x", prompt="The capital of France is", max_tokens=8,
                              temperature=0)
    assert done.choices[0].text and done.usage.prompt_tokens > 0
    assert (done.choices[0].finish_reason, done.usage.completion_tokens) == ("length", 8) or (
        done.choices[0].finish_reason == "stop" and done.usage.completion_tokens < 8)  # an early end of text is the model's
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="x", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True))
    assert streamed == done.choices[0].text
    chat = after_a_first_read(c.chat.completions.create, model="x", messages=[{"role": "user", "content": "Say hello."}],
                              max_tokens=6, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")
    parts = list(c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=6, temperature=0, stream=True,
                                           stream_options={"include_usage": True}))
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == chat.choices[0].message.content
    assert parts[-1].usage.total_tokens == chat.usage.total_tokens
    assert [m.id for m in c.models.list().data]


def _ask(url: str, prompt: str, logprobs: int | None = None):
    r = client(url).completions.create(model="x", prompt=prompt, max_tokens=12, temperature=0, logprobs=logprobs)
    return r.choices[0] if logprobs is not None else r.choices[0].text


NEAR_TIE = 2.0  # nats between the top two candidates: llama.cpp's batch-split noise reaches ~1.5 (docs/run.md)


@pytest.mark.text
@pytest.mark.parametrize("threads", [2, 4])
def test_eight_concurrent_clients_get_what_they_get_alone(threads):
    """Identical to the same request served alone, or, where batched arithmetic flips a near tie
    (a token decoded beside other requests takes other CPU kernels), identical up to that token."""
    with server("--threads", str(threads), "--context", "512") as (url, _, _):
        alone = [_ask(url, p, logprobs=2) for p in PROMPTS]
        with cf.ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda p: _ask(url, p, logprobs=2), PROMPTS))
        metrics = httpx.get(f"{url}/metrics").text
    assert len(together) == 8 and all(t.text for t in together)
    for solo, both in zip(alone, together, strict=True):
        a, b = solo.logprobs.tokens, both.logprobs.tokens
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if k is None:
            assert solo.text == both.text
            continue
        top = sorted(solo.logprobs.top_logprobs[k].values(), reverse=True)
        assert top[0] - top[1] <= NEAR_TIE, (solo.text, both.text, k, top)
    assert re.search(r"^sentiric_requests_total 16", metrics, re.M)


@pytest.mark.text
def test_a_prompt_several_times_the_context_is_served_by_shifting(two):
    url, _, _ = two
    # the answer copies the phrase the prompt ends on: every kernel family checked so far gives " banana" here
    # (docs/cpu.md); a question after a document through the window is not that robust (test_run_cli.py says why)
    long_prompt = "The grass is green. The sky is blue. " * 400 + "The secret word is banana. The secret word is"
    r = client(url).completions.create(model="x", prompt=long_prompt, max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens > 4 * 512
    assert "banana" in r.choices[0].text
    metrics = httpx.get(f"{url}/metrics").text
    assert float(re.search(r"^sentiric_shifts_total (\S+)$", metrics, re.M).group(1)) > 0


def test_a_disconnecting_client_frees_its_slot(two):
    url, _, _ = two
    with httpx.Client(timeout=WAIT) as h, h.stream("POST", f"{url}/v1/completions",
                                                 json={"prompt": "Once upon a time", "max_tokens": 2000,
                                                       "stream": True, "temperature": 0.8}) as r:
        for _ in r.iter_lines():
            if httpx.get(f"{url}/health").json()["slots"]["busy"] == 1:
                break
    deadline = time.monotonic() + 60  # a step or two, even on a loaded machine; 2000 tokens take minutes
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/health").json()["slots"]["busy"] == 0:
            break
        time.sleep(0.1)
    assert httpx.get(f"{url}/health").json()["slots"]["busy"] == 0
    metrics = httpx.get(f"{url}/metrics").text
    assert float(re.search(r"^sentiric_cancelled_total (\S+)$", metrics, re.M).group(1)) >= 1


def test_flood_past_the_queue_gets_429_and_health_answers_throughout():
    with server("--threads", "1", "--context", "256", env={"LLM_LLAMA_SERVICE_QUEUE_SIZE": "2"}) as (url, _, _):
        body = {"prompt": "Once upon a time", "max_tokens": 64, "temperature": 0.8}
        with cf.ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v1/completions", json=body, timeout=WAIT) for _ in range(10)]
            health = []
            while not all(f.done() for f in futures):
                t0 = time.perf_counter()
                health.append((httpx.get(f"{url}/health", timeout=5).status_code, time.perf_counter() - t0))
                time.sleep(0.05)
        codes = [f.result().status_code for f in futures]
        rejected = [f.result() for f in futures if f.result().status_code == 429]
    assert codes.count(200) >= 3 and rejected  # one running + two queued at least; the rest refused
    assert set(codes) <= {200, 429}
    assert rejected[0].headers["retry-after"] and rejected[0].json()["error"]["type"] == "rate_limit_error"
    assert health and all(code == 200 and seconds < 1.0 for code, seconds in health)


def test_keep_alive_requests_are_not_held_by_nagle(two):
    """Connections get TCP_NODELAY (asyncio sets it only when the listening socket says IPPROTO_TCP): without it
    every request after the first on a kept-alive connection waited ~40 ms for a delayed ACK."""
    url, _, _ = two
    with httpx.Client() as http:
        times = []
        for _ in range(12):
            t0 = time.perf_counter()
            assert http.get(f"{url}/health").status_code == 200
            times.append(time.perf_counter() - t0)
    assert sorted(times[1:])[len(times) // 2] < 0.02, times


def test_queue_size_0_serves_on_a_free_slot_and_refuses_when_none_is():
    with server("--threads", "1", "--context", "256", env={"LLM_LLAMA_SERVICE_QUEUE_SIZE": "0"}) as (url, _, _):
        idle = httpx.post(f"{url}/v1/completions", json={"prompt": "Hello", "max_tokens": 2}, timeout=WAIT)
        assert idle.status_code == 200, idle.text  # nothing waits, and nothing had to
        with cf.ThreadPoolExecutor(1) as pool:
            busy = pool.submit(httpx.post, f"{url}/v1/completions", timeout=WAIT,
                               json={"prompt": "Once upon a time", "max_tokens": 300, "temperature": 0.8})
            while httpx.get(f"{url}/health").json()["slots"]["busy"] == 0:
                time.sleep(0.05)
            refused = httpx.post(f"{url}/v1/completions", json={"prompt": "Hello", "max_tokens": 2}, timeout=WAIT)
            assert busy.result().status_code == 200
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"


def test_bad_requests_get_their_4xx_and_the_server_keeps_serving(two):
    url, _, _ = two
    post = lambda path, **kw: httpx.post(f"{url}{path}", timeout=WAIT, **kw)  # noqa: E731
    cases = [
        (post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"}), 400),
        (post("/v1/completions", json={"prompt": 42}), 400),
        (post("/v1/completions", json={"prompt": "x", "max_tokens": "many"}), 400),
        (post("/v1/completions", json={"prompt": "x", "temperature": 9}), 400),
        (post("/v1/completions", json={"prompt": "x", "max_tokens": 0}), 400),
        (post("/v1/completions", json={"prompt": []}), 400),
        (post("/v1/completions", json={"prompt": [["a"], 3]}), 400),
        (post("/v1/chat/completions", json={"messages": []}), 400),
        (post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}), 400),
        (post("/v1/completions", content=b"x" * (17 * 1024 * 1024), headers={"content-type": "application/json"}), 413),
        (httpx.get(f"{url}/v1/nothing-here"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.status_code, response.text)
        err = response.json()["error"]
        assert err["message"] and err["type"] and err["code"] == status
    assert _ask(url, PROMPTS[0])  # still serving


def test_api_key_guards_every_route_but_health_and_models():
    with server("--threads", "1", "--context", "256", env={"LLM_LLAMA_SERVICE_API_KEY": "s3cret"}) as (url, _, _):
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 200  # public, as llama-server's
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/v1/nothing-here").status_code == 404  # unknown routes: 404, key or not
        refused = httpx.post(f"{url}/v1/completions", json={"prompt": "x"})
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        wrong = httpx.post(f"{url}/v1/completions", json={"prompt": "x"}, headers={"x-api-key": "s3cres"})
        assert wrong.status_code == 401
        by_header = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1},
                               headers={"x-api-key": "s3cret"})
        assert by_header.status_code == 200, by_header.text
        ok = client(url, "s3cret").completions.create(model="x", prompt="Hello", max_tokens=2)
        assert ok.choices[0].text is not None
        preflight = httpx.options(f"{url}/v1/chat/completions", headers={
            "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 200  # no key needed for a preflight
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"


def _stream_lines(url: str, body: dict) -> list[str]:
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=WAIT) as r:
        return [line for line in r.iter_lines() if line]


def test_sigterm_drains_within_the_bound_closes_streams_and_answers_the_queue_503():
    env = {"LLM_LLAMA_SERVICE_SHUTDOWN_TIMEOUT": "2"}
    with server("--threads", "1", "--context", "256", env=env) as (url, proc, _):
        long = {"prompt": "Once upon a time", "max_tokens": 5000, "temperature": 0.8}
        with cf.ThreadPoolExecutor(3) as pool:
            running = pool.submit(_stream_lines, url, long)
            while httpx.get(f"{url}/health").json()["slots"]["busy"] == 0:
                time.sleep(0.05)
            queued = [pool.submit(httpx.post, f"{url}/v1/completions", json=long, timeout=WAIT),
                      pool.submit(httpx.post, f"{url}/v1/completions", json={**long, "stream": True}, timeout=WAIT)]
            while httpx.get(f"{url}/health").json()["queue"] < 2:
                time.sleep(0.05)
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=WAIT)
            stopped = time.perf_counter() - t0
            lines = running.result()
            refused = [f.result() for f in queued]
    assert code == 0
    assert stopped < 2 + 3  # the bound (not twice it), plus one step and the exit
    assert lines[-1] == "data: [DONE]"  # the cut stream closed properly
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"
    for r in refused:  # waiting requests: 503 in OpenAI's shape, streamed or not
        assert r.status_code == 503 and r.json()["error"]["code"] == 503 and "shutting down" in r.json()["error"]["message"]


@pytest.mark.text
def test_next_chat_turn_reuses_the_history_already_in_a_slot(two):
    url, _, _ = two
    c = client(url)

    def reused() -> float:
        return float(re.search(r"^sentiric_reused_tokens_total (\S+)$", httpx.get(f"{url}/metrics").text, re.M).group(1))

    history = [{"role": "system", "content": "You answer briefly. " * 20},
               {"role": "user", "content": "Name a colour of the sky. " * 5}]
    first = c.chat.completions.create(model="x", messages=history, max_tokens=6, temperature=0)
    before = reused()
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "And of grass?"}]
    second = c.chat.completions.create(model="x", messages=history, max_tokens=6, temperature=0)
    gained = reused() - before
    # the whole first prompt (and what of the answer tokenizes the same) was not read again
    assert gained >= first.usage.prompt_tokens - 1, (gained, first.usage.prompt_tokens)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


@pytest.mark.text
def test_a_request_can_ask_for_drafting_and_metrics_count_it(two):
    """`draft_tokens` per request (engine/draft.py): a quoting answer drafts from its prompt, /metrics counts the drafted
    and kept tokens; out-of-range values are a 400 naming the field."""
    url, _, _ = two

    def count(name: str) -> float:
        return float(re.search(rf"^sentiric_{name}_total (\S+)$", httpx.get(f"{url}/metrics").text, re.M).group(1))

    para = "The keeper polished the great lens until it shone like a second moon over the harbour. "
    prompt = f"Repeat the sentence exactly.\nSentence: {para}\nRepeated sentence:"
    before = count("drafted_tokens"), count("accepted_tokens")
    r = httpx.post(f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": 24, "temperature": 0,
                                                   "draft_tokens": 6}, timeout=WAIT)
    assert r.status_code == 200 and "lens" in r.json()["choices"][0]["text"]
    drafted, kept = count("drafted_tokens") - before[0], count("accepted_tokens") - before[1]
    assert drafted >= kept > 0
    for bad in (-1, 65, "many"):
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "draft_tokens": bad}, timeout=WAIT)
        assert r.status_code == 400 and "draft_tokens" in r.json()["error"]["message"], r.text
