"""Hostile but realistic use (issue 11): memory, stuck slots, oversized bodies, slow clients, odd input.
A real server on a free port where it is about `serve`, the real CLI otherwise."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import socket
import stat
import time

import httpx
import pytest
from live import rss_mib, server
from test_cli import assert_user_error, run
from waits import WAIT


def _busy(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=5).json()["slots"]["busy"]


@pytest.fixture(scope="module")
def srv():
    env = {"LLM_LLAMA_SERVICE_HEADER_TIMEOUT": "1", "LLM_LLAMA_SERVICE_MAX_BODY_BYTES": str(4 << 20)}
    with server("--threads", "2", "--context", "512", env=env) as s:
        yield s


def test_logprobs_keep_a_few_bytes_per_token_not_a_logits_row(srv):
    url, proc, _ = srv
    ask = {"prompt": "Once upon a time", "max_tokens": 300, "temperature": 0.8, "logprobs": 5}
    httpx.post(f"{url}/v1/completions", json=ask, timeout=WAIT)  # warm: buffers, caches
    before = rss_mib(proc.pid)
    tokens = 0
    for _ in range(6):  # sampling may end an answer early: go on until 500 tokens came with logprobs
        r = httpx.post(f"{url}/v1/completions", json=ask, timeout=WAIT)
        assert r.status_code == 200
        tokens += len(r.json()["choices"][0]["logprobs"]["tokens"])
        if tokens >= 500:
            break
    assert tokens >= 500
    grown = rss_mib(proc.pid) - before
    assert grown < 40, grown  # a logits row per token was 1 MiB: 500 tokens would be 500 MiB


def test_a_long_prompt_is_tokenized_off_the_event_loop(srv):
    url, _, _ = srv
    prompt = "The quick brown fox jumps over the lazy dog. " * 80_000  # 3.6 MB
    with cf.ThreadPoolExecutor(1) as pool:
        job = pool.submit(httpx.post, f"{url}/tokenize", json={"content": prompt}, timeout=WAIT)
        waits = []
        while not job.done():
            t0 = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            waits.append(time.perf_counter() - t0)
            time.sleep(0.05)
        assert len(job.result().json()["tokens"]) > 700_000
    assert waits and max(waits) < 1.0, max(waits)


def test_a_client_that_leaves_a_non_streamed_request_frees_its_slot(srv):
    url, _, _ = srv
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/completions", timeout=1.5,
                   json={"prompt": "Once upon a time", "max_tokens": 5000, "temperature": 0.8})
    deadline = time.monotonic() + 60  # a step or two, even on a loaded machine; 5000 tokens take minutes
    while _busy(url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _busy(url) == 0  # freed within a step or two, not after 5000 tokens


def test_a_chunked_body_past_the_limit_is_refused_without_buffering_it(srv):
    url, proc, _ = srv
    before = rss_mib(proc.pid)

    def body():
        for _ in range(64):  # 64 MiB, no Content-Length
            yield b" " * (1 << 20)
    try:
        r = httpx.post(f"{url}/v1/completions", content=body(), headers={"content-type": "application/json"},
                       timeout=WAIT)
        assert r.status_code == 413 and r.json()["error"]["code"] == 413
    except httpx.RemoteProtocolError:
        pass  # the server answered 413 and closed while the client was still sending: also refused
    assert rss_mib(proc.pid) - before < 32
    assert httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 1}).status_code == 200


def test_slow_headers_are_cut_and_health_answers_meanwhile(srv):
    url, _, _ = srv
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(100):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never the blank line that ends the head
        socks.append(s)
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    time.sleep(2.5)  # header_timeout is 1 s here
    for s in socks:
        s.settimeout(2)
        assert s.recv(100) == b""  # closed by the server
        s.close()


@pytest.mark.parametrize("body, param", [
    ('{"prompt": "bad \\ud800 surrogate"}', None),  # valid JSON, but no text llama.cpp can read
    ('{"prompt": "x", "stream": "yes"}', "stream"),
    (json.dumps({"prompt": "x", "stop": [str(i) for i in range(17)]}), "stop"),
    (json.dumps({"prompt": "x", "stop": "s" * 257}), "stop"),
])
def test_odd_fields_are_400_not_500_or_coerced(srv, body, param):
    url, _, _ = srv
    r = httpx.post(f"{url}/v1/completions", content=body.encode(), headers={"content-type": "application/json"},
                   timeout=WAIT)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    if param:
        assert err["param"].startswith(param)


def test_run_refuses_devices_binary_and_empty_stops(tmp_path):
    assert_user_error(run("run", "-f", "/dev/zero", "What?"), "/dev/zero", "binary")
    late_nul = tmp_path / "late.txt"
    late_nul.write_bytes(b"a" * 100_000 + b"\x00" + b"b" * 10)
    assert_user_error(run("run", "-f", str(late_nul), "What?"), "binary")
    assert_user_error(run("run", "--stop", "", "Hi"), "--stop")


def test_profile_alias_bombs_and_foreign_files_give_short_errors(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb.write_text("\n".join(lines) + "\nthreads: *a9\n")
    line = assert_user_error(run("plan", "--profile", str(bomb)), "alias")
    assert len(line) < 300
    foreign = tmp_path / "notes.yaml"
    foreign.write_text("context_size: " + "secret " * 1000 + "\n")
    line = assert_user_error(run("plan", "--profile", str(foreign)), "context_size")
    assert len(line) < 400 and line.count("secret") < 12  # the value is shown cut, not whole
    huge = tmp_path / "huge.yaml"
    huge.write_text("context_size: " + "9" * 5000 + "\n")
    assert len(assert_user_error(run("plan", "--profile", str(huge)), "cannot be read")) < 400


def test_force_keeps_a_private_profile_private(tmp_path, seed_gguf):
    target = tmp_path / "mine.yaml"
    target.write_text("threads: 1\n")
    os.chmod(target, 0o600)
    r = run("plan", str(seed_gguf), "--vram", "6GiB", "--write-profile", str(target), "--force")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and "threads" in target.read_text()
