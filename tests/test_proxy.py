"""The LiteLLM proxy from PyPI (its own venv: `make litellm`), with docs/scale.md's config and no database, in front
of two `sentiric serve` replicas on loopback (issue 26)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import time

import httpx
import pytest
from clirun import run
from live import server
from needles import KEY16, QUESTION
from needles import WINDOW16 as WINDOW
from openai import OpenAI
from router import KEY, LITELLM, config, proxy
from waits import WAIT

if not LITELLM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"no LiteLLM proxy at {LITELLM}: `make test` installs it (make litellm)")
    pytest.skip(f"no LiteLLM proxy at {LITELLM}: run `make litellm`", allow_module_level=True)

NAME = "sentiric"


def _served(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=WAIT).text.splitlines():
        if line.startswith("sentiric_requests_total "):
            return float(line.split()[1])
    raise AssertionError("no sentiric_requests_total")


def _busy(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=WAIT).json()["slots"]["busy"]


def _replicas():
    args = ("--threads", "2", "--context", WINDOW, "--served-model-name", NAME)
    return server(*args), server(*args)


def test_32_chats_lose_none_when_a_replica_is_killed_mid_load():
    one, two = _replicas()
    with one as (a, _, _), two as (b, victim, _), proxy(config([a, b], NAME)) as url:
        c = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=WAIT)

        def ask(i: int):
            return c.chat.completions.create(model=NAME, max_tokens=40, temperature=0.7,
                                             messages=[{"role": "user", "content": f"Tell me a story about {i} cats."}])

        with cf.ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(ask, i) for i in range(32)]
            deadline = time.monotonic() + WAIT
            # mid-load: both replicas have answered, and the victim is answering more
            while not (_served(a) >= 1 and _served(b) >= 1 and _busy(b) > 0):
                assert time.monotonic() < deadline and not all(f.done() for f in futures), "no load to kill into"
                time.sleep(0.05)
            before = (_served(a), _served(b))
            victim.send_signal(signal.SIGKILL)
            outcomes = [f.exception() or f.result() for f in futures]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert not failed, [repr(e)[:200] for e in failed]
        assert all(o.choices[0].finish_reason in ("stop", "length") for o in outcomes)
        assert before[0] >= 1 and before[1] >= 1  # both replicas served traffic before the kill
        assert _served(a) > before[0]  # the survivor took the rest


def test_a_session_stays_on_one_replica():
    one, two = _replicas()
    with one as (a, _, _), two as (b, _, _):
        cfg = config([a, b], NAME)
        # shuffled, so only the affinity keeps a session's six turns together (by chance: 1 in 32 per session)
        cfg["router_settings"]["routing_strategy"] = "simple-shuffle"
        with proxy(cfg) as url:
            bases = _turns(url)
        for session in ("conversation-1", "conversation-2"):
            where = {base for s, base in bases if s == session}
            assert len(where) == 1 and None not in where, bases  # every turn on the replica that holds its cache


def _turns(url: str) -> list[tuple[str, str | None]]:
    bases = []
    for session in ("conversation-1", "conversation-2"):
        for turn in range(6):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=WAIT,
                           headers={"Authorization": f"Bearer {KEY}", "x-litellm-session-id": session},
                           json={"model": NAME, "max_tokens": 2,
                                 "messages": [{"role": "user", "content": f"Turn {turn}: say hi."}]})
            assert r.status_code == 200, r.text
            bases.append((session, r.headers.get("x-litellm-model-api-base")))
    return bases


def test_run_backend_through_the_proxy_gives_the_local_answer(doc16, local16):
    one, two = _replicas()
    with one as (a, _, _), two as (b, _, _), proxy(config([a, b], NAME)) as url:
        r = run("run", QUESTION, "-f", str(doc16[0]), "--backend", url, "--backend-slots", "4", "--json",
                env={"LLM_LLAMA_SERVICE_BACKEND_API_KEY": KEY})
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert str(KEY16) in out["answer"] and out["answer"] == local16["answer"]
        assert out["longdoc"]["citations"] == local16["longdoc"]["citations"]
        assert _served(a) > 0 and _served(b) > 0  # the router spread the chunks over both replicas
        no_key = run("run", QUESTION, "-f", str(doc16[0]), "--backend", url)
        assert no_key.returncode == 2 and "Traceback" not in no_key.stderr
