"""The OpenAI API as real clients send it: the openai SDK, LangChain's ChatOpenAI and litellm against a real
`sentiric serve` on a free port. The model is the bundled weights with a Qwen 2.5 chat template added
(tests/templated.py), so templates, tool calls and structured output run on real llama.cpp output."""

from __future__ import annotations

import json
import math
import re

import httpx
import pytest
from live import after_a_first_read, client, server
from pydantic import BaseModel, Field
from waits import WAIT

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather now in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                   "required": ["city"], "additionalProperties": False}}}
ASK = [{"role": "system", "content": "You answer with tools."},
       {"role": "user", "content": "What is the weather in Paris?"}]


class City(BaseModel):
    name: str = Field(max_length=24)
    population: int


@pytest.fixture(scope="module")
def hermes(hermes_gguf):
    with server("--model", str(hermes_gguf), "--threads", "2", "--context", "1024", "--embeddings") as s:
        yield s[0]


def _metric(url: str, name: str) -> float:
    return float(re.search(rf"^sentiric_{name}_total (\S+)$", httpx.get(f"{url}/metrics").text, re.M).group(1))


@pytest.mark.text
def test_content_parts_and_an_agent_loop_turn_are_accepted(hermes):
    c = client(hermes)
    parts = after_a_first_read(c.chat.completions.create, model="m", max_tokens=4, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]}])
    whole = c.chat.completions.create(model="m", max_tokens=4, temperature=0,
                                      messages=[{"role": "user", "content": "Say hello."}])
    assert parts.choices[0].message.content == whole.choices[0].message.content  # parts joined: the same prompt
    loop = c.chat.completions.create(model="m", max_tokens=4, temperature=0, tools=[WEATHER], messages=[
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
        {"role": "developer", "content": "Be brief."}])
    assert loop.choices[0].message.role == "assistant" and loop.usage.prompt_tokens > whole.usage.prompt_tokens


@pytest.mark.text
def test_tool_round_trip_with_the_openai_sdk(hermes):
    c = client(hermes)
    first = c.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="required",
                                      parallel_tool_calls=False, max_tokens=64, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert set(args) == {"city"} and isinstance(args["city"], str)
    second = c.chat.completions.create(model="m", tools=[WEATHER], max_tokens=16, temperature=0, messages=[
        *ASK, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21, "sky": "clear"}'}])
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    named = c.chat.completions.create(model="m", messages=ASK, max_tokens=64, temperature=0, parallel_tool_calls=False,
                                      tools=[WEATHER, {"type": "function", "function": {"name": "get_time"}}],
                                      tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [t.function.name for t in named.choices[0].message.tool_calls] == ["get_time"]
    none = c.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=8)
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason != "tool_calls"


@pytest.mark.text
def test_streamed_tool_calls_arrive_as_deltas(hermes):
    chunks = list(client(hermes).chat.completions.create(
        model="m", messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
        max_tokens=64, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content is None
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].index == 0 and calls[0].function.name == "get_weather" and calls[0].id.startswith("call_")
    assert len(calls) > 2 and all(c.index == 0 and c.id is None for c in calls[1:])  # arguments as they are written
    assert "city" in json.loads("".join(c.function.arguments for c in calls))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(ch.system_fingerprint and ch.system_fingerprint.startswith("b") for ch in chunks)


@pytest.mark.text
def test_auto_tool_choice_grammar_is_lazy(hermes):
    """tool_choice auto: text is free, and a call the model starts is held to the tools' schema from its first
    <tool_call> on. The bias makes the model start one; the lazy grammar makes it a valid call."""
    ask = dict(model="m", messages=ASK, tools=[WEATHER], max_tokens=48, temperature=0)
    pushed = client(hermes).chat.completions.create(**ask, extra_body={"logit_bias": {"<tool_call>": 12}})
    calls = pushed.choices[0].message.tool_calls
    assert pushed.choices[0].finish_reason == "tool_calls" and calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)
    free = client(hermes).chat.completions.create(**ask, extra_body={"logit_bias": {"<tool_call>": -100}})
    assert not free.choices[0].message.tool_calls and free.choices[0].message.content  # no call: free text


def test_apply_template_and_props(hermes):
    prompt = httpx.post(f"{hermes}/apply-template", json={"messages": ASK, "tools": [WEATHER]}, timeout=WAIT).json()
    assert prompt["prompt"].endswith("<|im_start|>assistant\n") and "<tools>" in prompt["prompt"]
    assert "What is the weather in Paris?" in prompt["prompt"] and '"get_weather"' in prompt["prompt"]
    props = httpx.get(f"{hermes}/props", timeout=WAIT).json()
    assert props["total_slots"] == 2 and props["default_generation_settings"]["n_ctx"] == 1024
    assert "<tool_call>" in props["chat_template"] and props["modalities"] == {"vision": False, "audio": False}
    assert props["default_generation_settings"]["params"]["temperature"] == 0.0


@pytest.mark.text
def test_parse_returns_the_pydantic_model(hermes):
    done = client(hermes).chat.completions.parse(
        model="m", max_tokens=80, temperature=0, response_format=City,
        messages=[{"role": "user", "content": "Name a large city and its population, as JSON."}])
    city = done.choices[0].message.parsed
    assert isinstance(city, City) and city.name and isinstance(city.population, int)
    obj = client(hermes).chat.completions.create(model="m", max_tokens=100, temperature=0,
                                                 response_format={"type": "json_object"},
                                                 messages=[{"role": "user", "content": 'Reply with {"ok": true}'}])
    assert obj.choices[0].finish_reason == "stop" and isinstance(json.loads(obj.choices[0].message.content), dict)


@pytest.mark.text
def test_chat_logprobs_streamed_and_not(hermes):
    c = client(hermes)
    ask = dict(model="m", messages=[{"role": "user", "content": "Write a poem about the sea."}], max_tokens=6,
               temperature=0, logprobs=True, top_logprobs=3)
    done = after_a_first_read(c.chat.completions.create, **ask)
    content = done.choices[0].logprobs.content
    assert content and "".join(t.token for t in content).startswith(done.choices[0].message.content)
    for tok in content:
        assert tok.logprob <= 0 and len(tok.top_logprobs) == 3 and bytes(tok.bytes).decode("utf-8", "replace") == tok.token
        alts = [a.logprob for a in tok.top_logprobs]
        assert alts == sorted(alts, reverse=True) and math.isclose(alts[0], tok.logprob)  # greedy: the best one
    streamed = [ch for ch in c.chat.completions.create(**ask, stream=True) if ch.choices and ch.choices[0].logprobs]
    tokens = [t for ch in streamed for t in ch.choices[0].logprobs.content]
    assert [t.token for t in tokens] == [t.token for t in content]


@pytest.mark.text
def test_n_answers_share_one_read_of_the_prompt(hermes):
    c = client(hermes)
    long = [{"role": "user", "content": "Tell me about the sea. " * 40}]
    one = after_a_first_read(c.chat.completions.create, model="m", messages=long, max_tokens=8, temperature=0)
    copied = _metric(hermes, "reused_tokens")
    two = c.chat.completions.create(model="m", messages=long, max_tokens=8, temperature=0, n=2)
    assert [ch.index for ch in two.choices] == [0, 1]
    assert [ch.message.content for ch in two.choices] == [one.choices[0].message.content] * 2
    assert two.usage.prompt_tokens == one.usage.prompt_tokens  # read once
    assert two.usage.completion_tokens == 2 * one.usage.completion_tokens
    assert _metric(hermes, "reused_tokens") - copied >= one.usage.prompt_tokens  # the second answer's prompt: copied
    streamed = list(c.chat.completions.create(model="m", messages=long, max_tokens=8, temperature=0, n=2, stream=True))
    for i in (0, 1):
        text = "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices and ch.choices[0].index == i)
        assert text == one.choices[0].message.content
    too_many = httpx.post(f"{hermes}/v1/chat/completions", json={"messages": long, "n": 3})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"


@pytest.mark.text
def test_embeddings(hermes):
    c = client(hermes)
    out = c.embeddings.create(model="m", input=["The cat sat on the mat.", "A cat was sitting on a mat.",
                                                "Quarterly tax filings are due in April."])
    vecs = [d.embedding for d in out.data]
    assert [d.index for d in out.data] == [0, 1, 2] and len(vecs[0]) == 640 and out.usage.prompt_tokens > 10
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3) for v in vecs)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    floats = httpx.post(f"{hermes}/v1/embeddings", json={"input": "The cat sat on the mat.", "encoding_format": "float"})
    assert floats.json()["data"][0]["embedding"] == pytest.approx(vecs[0], abs=1e-6)  # the SDK asked for base64


@pytest.mark.text
def test_responses_api(hermes):
    c = client(hermes)
    done = c.responses.create(model="m", input="Say hello.", instructions="Be brief.", max_output_tokens=6,
                              temperature=0)
    assert done.status in ("completed", "incomplete") and done.output_text and done.usage.output_tokens <= 6
    events = list(c.responses.create(model="m", input=[{"role": "user", "content": "Say hello."}],
                                     instructions="Be brief.", max_output_tokens=6, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] in ("response.completed",
                                                                                         "response.incomplete")
    # the stream's deltas make its own final text. Not compared with `done`'s text: the second request reuses the
    # first one's cached prompt, and its last prompt token computed in another batch shape flipped a near tie on
    # one CPU's kernels ("Say hi." against "Say hello.", issue 22)
    final = events[-1].response
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == final.output_text
    assert final.output_text and final.usage.input_tokens == done.usage.input_tokens  # the same prompt
    assert [e.sequence_number for e in events] == list(range(len(events)))
    stateful = httpx.post(f"{hermes}/v1/responses", json={"input": "x", "previous_response_id": "resp_1"})
    assert stateful.status_code == 400 and stateful.json()["error"]["param"] == "previous_response_id"


@pytest.mark.text
def test_langchain_structured_output_and_bound_tools(hermes):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{hermes}/v1", api_key="none", model="m", temperature=0, max_tokens=80, max_retries=0)
    city = llm.with_structured_output(City).invoke("Name a large city and its population.")
    assert isinstance(city, City) and isinstance(city.population, int)

    @tool
    def get_weather(city: str) -> str:
        """The weather now in a city."""
        return "sunny"

    msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather" and "city" in msg.tool_calls[0]["args"]


@pytest.mark.text
def test_litellm_parts_and_tools(hermes, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its bundled copy: no fetch from the network
    import litellm

    ask = dict(model="openai/m", api_base=f"{hermes}/v1", api_key="none", temperature=0, num_retries=0)
    out = litellm.completion(**ask, max_tokens=6, messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    assert out.choices[0].message.role == "assistant" and out.usage.completion_tokens > 0
    called = litellm.completion(**ask, max_tokens=64, messages=ASK, tools=[WEATHER], tool_choice="required",
                                parallel_tool_calls=False)
    assert called.choices[0].message.tool_calls[0].function.name == "get_weather"


@pytest.mark.text
def test_generic_tool_format_without_a_template():
    """No chat template: tools go into a system turn and the answer is JSON under a grammar."""
    with server("--threads", "1", "--context", "1024") as (url, _, _):
        c = client(url)
        done = c.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="required",
                                         max_tokens=64, temperature=0, parallel_tool_calls=False)
        calls = done.choices[0].message.tool_calls
        assert done.choices[0].finish_reason == "tool_calls" and calls[0].function.name == "get_weather"
        assert "city" in json.loads(calls[0].function.arguments)
        cut = c.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="required",
                                        max_tokens=40, temperature=0)  # parallel: this model repeats the call
        assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.tool_calls  # the whole ones kept
        auto = c.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], max_tokens=64, temperature=0)
        m = auto.choices[0].message
        assert (m.tool_calls and m.content is None) or (m.content and not m.tool_calls)
        off = httpx.post(f"{url}/v1/embeddings", json={"input": "x"})
        assert off.status_code == 501 and "--embeddings" in off.json()["error"]["message"]


def test_each_bad_shape_gets_its_openai_error(hermes):
    def post(path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{hermes}{path}", json=body, timeout=WAIT)
    user = [{"role": "user", "content": "x"}]
    cases = [
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [*user, {"role": "tool", "content": "r"}]}, "messages[1].tool_call_id"),
        ({"messages": user, "response_format": {"type": "sound"}}, "response_format.type"),
        ({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format.json_schema"),
        ({"messages": user, "response_format": {"type": "json_object", "schema": {"type": "hiccup"}}}, "response_format"),
        ({"messages": user, "grammar": "root ::= this is (not valid GBNF"}, "grammar"),
        ({"messages": user, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
        ({"messages": user, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": user, "stop": [""]}, "stop"),
    ]
    for body, param in cases:
        r = post("/v1/chat/completions", body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error" and err["code"] == 400 and err["message"]
    assert post("/v1/models/other", {}).status_code == 405
    missing = httpx.get(f"{hermes}/v1/models/other")
    assert missing.status_code == 404 and missing.json()["error"]["message"]
    assert httpx.get(f"{hermes}/v1/models/hermes").json()["id"] == "hermes"


@pytest.mark.text
def test_the_stream_is_shaped_as_openai_documents(hermes):
    def chunks(body: dict) -> list:
        with httpx.stream("POST", f"{hermes}/v1/chat/completions", json=body, timeout=WAIT) as r:
            lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        return [json.loads(x) for x in lines[:-1]]
    base = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
    plain = chunks(base)
    assert plain[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert all("usage" not in c for c in plain) and plain[-1]["choices"][0]["finish_reason"]
    counted = chunks({**base, "stream_options": {"include_usage": True}})
    assert counted[-1]["choices"] == [] and counted[-1]["usage"]["completion_tokens"] <= 4
    assert all(c["usage"] is None for c in counted[:-1])


def test_routes_answer_without_the_v1_prefix(hermes):
    assert httpx.get(f"{hermes}/models").json()["data"][0]["id"] == "hermes"
    r = httpx.post(f"{hermes}/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    toks = httpx.post(f"{hermes}/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert httpx.post(f"{hermes}/v1/detokenize", json={"tokens": toks}).json()["content"] == "Hello world"


@pytest.fixture(scope="module")
def llama3(bundled, tmp_path_factory):
    from templated import LLAMA3, with_template

    path = with_template(bundled, tmp_path_factory.mktemp("llama3") / "llama3.gguf", LLAMA3)
    with server("--model", str(path), "--threads", "1", "--context", "1024") as s:
        yield s[0]


@pytest.fixture(scope="module")
def mistral(bundled, tmp_path_factory):
    from templated import MISTRAL, with_template

    path = with_template(bundled, tmp_path_factory.mktemp("mistral") / "mistral.gguf", MISTRAL)
    with server("--model", str(path), "--threads", "1", "--context", "1024") as s:
        yield s[0]


@pytest.mark.text
@pytest.mark.parametrize("fixture,written", [("llama3", '"parameters"'), ("mistral", "[TOOL_CALLS]")])
def test_llama3_and_mistral_tool_formats(request, fixture, written):
    """Each format as its template shows calls: the tools rendered by the template, the call written in the model's
    own format (checked in the raw prompt of the next turn), parsed back, and a round trip through the template
    (Mistral's refuses ids that are not 9 letters and digits: the server's ids are, and an OpenAI-style one is
    mapped)."""
    url = request.getfixturevalue(fixture)
    c = client(url)
    first = c.chat.completions.create(model="m", messages=ASK[1:], tools=[WEATHER], tool_choice="required",
                                      parallel_tool_calls=False, max_tokens=64, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    if fixture == "mistral":
        assert len(call.id) == 9 and call.id.isalnum()
    for cid in (call.id, "call_an_openai_style_id"):
        turns = [*ASK[1:], {"role": "assistant", "content": None, "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
                 {"role": "tool", "tool_call_id": cid, "content": '{"celsius": 21}'}]
        shown = httpx.post(f"{url}/apply-template", json={"messages": turns, "tools": [WEATHER]}, timeout=WAIT)
        assert shown.status_code == 200 and written in shown.json()["prompt"] and "celsius" in shown.json()["prompt"]
        again = c.chat.completions.create(model="m", messages=turns, tools=[WEATHER], max_tokens=8, temperature=0)
        assert again.choices[0].finish_reason in ("stop", "length", "tool_calls")
    streamed = list(c.chat.completions.create(model="m", messages=ASK[1:], tools=[WEATHER], tool_choice="required",
                                              parallel_tool_calls=False, max_tokens=64, temperature=0, stream=True))
    deltas = [tc for ch in streamed if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and len(deltas) > 1
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == json.loads(call.function.arguments)
