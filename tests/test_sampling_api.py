"""Every sampling field a request sets changes the output the way it should, or is a 400 naming it; and the
completions route's prompt forms (token ids, several prompts). A real server on the bundled model."""

from __future__ import annotations

import json

import httpx
import pytest
from live import after_a_first_read, client, server
from waits import WAIT

PROMPT = "The list of fruits: apple, banana, cherry, apple, banana, cherry, apple, banana,"


@pytest.fixture(scope="module")
def url():
    with server("--threads", "2", "--context", "512") as s:
        yield s[0]


def complete(url: str, **body) -> dict:
    r = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 16, "temperature": 0, **body},
                   timeout=WAIT)
    assert r.status_code == 200, r.text
    return r.json()


def first_piece(url: str, **body) -> str:
    return complete(url, max_tokens=1, logprobs=1, **body)["choices"][0]["logprobs"]["tokens"][0]


def token_id(url: str, piece: str) -> int:
    toks = httpx.post(f"{url}/tokenize", json={"content": piece}, timeout=WAIT).json()["tokens"]
    assert len(toks) == 1
    return toks[0]


@pytest.mark.text
def test_logit_bias_bans_and_pushes_tokens(url):
    top = first_piece(url)
    banned = first_piece(url, logit_bias={str(token_id(url, top)): -100})  # OpenAI's form: by token id
    assert banned != top
    assert first_piece(url, logit_bias=[[top, False]]) != top  # llama-server's: by text, false bans
    assert first_piece(url, logit_bias={" zebra": 100}) == " zebra"  # by text, pushed


@pytest.mark.text
def test_penalties_lower_repetition(url):
    """The greedy answer to a repetitive prompt repeats itself; each penalty makes it repeat much less (the margins
    are wide: 20 repeated words of 32 against 3 or fewer here)."""
    def repeats(**kw) -> int:
        words = complete(url, prompt="I like cats. I like dogs. I like", max_tokens=32, **kw)["choices"][0]["text"].split()
        return len(words) - len(set(words))
    plain = repeats()
    assert plain >= 10
    for kw in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repeat_penalty": 1.8}):
        assert repeats(**kw) < plain / 2, kw
    assert repeats(frequency_penalty=2.0, repeat_last_n=2) > plain / 2  # looks back two tokens: little changes


@pytest.mark.text
def test_a_seed_makes_sampling_repeatable(url):
    ask = dict(prompt="Once upon a time", max_tokens=12, temperature=1.0)
    after_a_first_read(complete, url, **ask, seed=1)  # compared answers all from a reused prompt
    same = {complete(url, **ask, seed=7)["choices"][0]["text"] for _ in range(2)}
    seeds = {complete(url, **ask, seed=s)["choices"][0]["text"] for s in range(1, 6)}
    assert len(same) == 1 and len(seeds) > 1


@pytest.mark.parametrize("field,value", [("mirostat", 2), ("typical_p", 0.5), ("xtc_probability", 0.5),
                                         ("dry_multiplier", 0.8), ("best_of", 3), ("echo", True), ("suffix", "x")])
def test_unsupported_fields_are_named(url, field, value):
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], field: value,
                                                       "max_tokens": 1}, timeout=WAIT)
    assert r.status_code == 400 and r.json()["error"]["param"] == field and field in r.json()["error"]["message"]


def test_neutral_values_of_unsupported_fields_pass(url):
    r = httpx.post(f"{url}/v1/chat/completions", timeout=WAIT, json={
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "mirostat": 0, "typical_p": 1.0,
        "echo": False, "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}})
    assert r.status_code == 200


@pytest.mark.parametrize("bias", [{"999999": 1}, {"-3": 1}, [[1, True]], {"": 5}])
def test_bad_logit_bias_is_a_400(url, bias):
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 1, "logit_bias": bias}, timeout=WAIT)
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"


@pytest.mark.text
def test_prompt_as_token_ids_reads_as_the_text(url):
    ids = httpx.post(f"{url}/tokenize", json={"content": PROMPT, "add_special": True}, timeout=WAIT).json()["tokens"]
    text = after_a_first_read(complete, url)["choices"][0]["text"]
    assert complete(url, prompt=ids)["choices"][0]["text"] == text
    assert complete(url, prompt=[ids])["choices"][0]["text"] == text  # a list of one token-id list
    r = httpx.post(f"{url}/v1/completions", json={"prompt": [1, 10**7], "max_tokens": 1}, timeout=WAIT)
    assert r.status_code == 400 and "token id" in r.json()["error"]["message"]


def test_several_prompts_one_choice_each(url):
    done = complete(url, prompt=["Hello", "The sky is", "One, two,"], n=2, max_tokens=3, temperature=0.7, seed=3)
    assert [c["index"] for c in done["choices"]] == list(range(6))
    counted = sum(len(httpx.post(f"{url}/tokenize", json={"content": p, "add_special": True}).json()["tokens"])
                  for p in ("Hello", "The sky is", "One, two,"))
    assert done["usage"]["prompt_tokens"] == counted and done["usage"]["completion_tokens"] <= 18
    assert done["system_fingerprint"].startswith("b")
    chunks = list(client(url).completions.create(model="m", prompt=["Hello", "The sky is"], max_tokens=3, stream=True))
    ended = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert ended == {0, 1} and all(c.system_fingerprint for c in chunks)


def test_chat_stream_starts_with_role_and_null_content(url):
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=WAIT, json={
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True}) as r:
        data = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ") and x != "data: [DONE]"]
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert len({d["system_fingerprint"] for d in data}) == 1
