"""Anthropic's Messages API on a real `sentiric serve` (the bundled weights with a Qwen 2.5 template, so tools go
through the Hermes format), driven by the official `anthropic` SDK, LangChain's ChatAnthropic and litellm's
`anthropic/` provider. The server requires a key, as a deployed one would."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from live import after_a_first_read, server
from waits import WAIT

KEY = "sk-ant-local-test-key"
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
ONE_CALL = {"type": "any", "disable_parallel_tool_use": True}


@pytest.fixture(scope="module")
def url(hermes_gguf):
    env = {"LLM_LLAMA_SERVICE_API_KEY": KEY, "LLM_LLAMA_SERVICE_MAX_BODY_BYTES": "65536"}
    with server("--model", str(hermes_gguf), "--threads", "2", "--context", "1024", env=env) as s:
        yield s[0]


@pytest.fixture(scope="module")
def sdk(url):
    return anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0, timeout=WAIT)


def post(url: str, path: str, body: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=WAIT, headers={"x-api-key": key, "anthropic-version": "2023-06-01"})


@pytest.mark.text
def test_a_message_and_its_stream_with_the_sdk(sdk):
    m = sdk.messages.create(model="local", max_tokens=12, system="You are brief.", messages=[
        {"role": "user", "content": "Say hello"}])
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.content[0].type == "text" and m.stop_reason in ("end_turn", "max_tokens")
    assert 0 < m.usage.output_tokens <= 12 and m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) > 5
    with sdk.messages.stream(model="local", max_tokens=12, messages=[{"role": "user", "content": "Say hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert final.content[0].text == text and final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


def test_max_tokens_cuts_with_max_tokens(sdk):
    m = sdk.messages.create(model="local", max_tokens=2, messages=[{"role": "user", "content": "Count from 1 to 50."}])
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 2


@pytest.mark.text
def test_stop_sequences_end_with_the_sequence_that_matched(sdk, url):
    for ask in ("Tell me about cats.", "Write a poem about the sea.", "Hello, who are you?", "Count from 1 to 50."):
        turn = [{"role": "user", "content": ask}]
        text = post(url, "/v1/messages", {"max_tokens": 24, "messages": turn}).json()["content"][0]["text"]
        if len(text.strip()) > 4:
            break
    else:
        pytest.fail("no prompt got a greedy answer of 5 characters")
    stop = text.strip()[2:4]  # a piece the greedy answer writes
    m = sdk.messages.create(model="local", max_tokens=24, stop_sequences=["@@@", stop], messages=turn)
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop and stop not in m.content[0].text


@pytest.mark.text
def test_a_tool_round_trip_with_the_sdk(sdk):
    first = sdk.messages.create(model="local", max_tokens=64, tools=[WEATHER], tool_choice=ONE_CALL, messages=ASK)
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and isinstance(calls[0].input, dict)
    assert calls[0].id.startswith("toolu_") and "city" in calls[0].input
    second = sdk.messages.create(model="local", max_tokens=16, tools=[WEATHER], messages=[
        *ASK, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "21 C, clear"}]}])
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use") and second.content
    named = sdk.messages.create(model="local", max_tokens=64, messages=ASK, tools=[WEATHER, {
        "name": "get_time", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True})
    assert [b.name for b in named.content if b.type == "tool_use"] == ["get_time"]
    none = sdk.messages.create(model="local", max_tokens=8, tools=[WEATHER], tool_choice={"type": "none"}, messages=ASK)
    assert all(b.type == "text" for b in none.content) and none.stop_reason != "tool_use"


@pytest.mark.text
def test_streamed_tool_input_arrives_as_json_deltas(sdk):
    deltas = []
    with sdk.messages.stream(model="local", max_tokens=64, tools=[WEATHER], tool_choice=ONE_CALL, messages=ASK) as s:
        for ev in s:
            if ev.type == "content_block_delta" and ev.delta.type == "input_json_delta":
                deltas.append(ev.delta.partial_json)
        final = s.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert len(deltas) > 1 and json.loads("".join(deltas)) == call.input  # as generated, not in one piece
    assert final.stop_reason == "tool_use"


@pytest.mark.text
def test_a_last_assistant_turn_is_continued(sdk, url):
    """Anthropic's prefill: the model continues the last assistant turn, and the answer holds only the rest. It reads
    exactly the prompt a completion of the rendered conversation plus the prefill reads: the same greedy answer."""
    ask = [{"role": "user", "content": "Name three colors."}]
    rendered = httpx.post(f"{url}/apply-template", json={"messages": ask}, timeout=WAIT,
                          headers={"x-api-key": KEY}).json()["prompt"]

    def completion():
        return httpx.post(f"{url}/v1/completions", timeout=WAIT, headers={"x-api-key": KEY}, json={
            "prompt": rendered + "Red, green and", "max_tokens": 8, "temperature": 0}).json()["choices"][0]["text"]

    def prefilled():
        return sdk.messages.create(model="local", max_tokens=8, messages=[
            *ask, {"role": "assistant", "content": "Red, green and"}])
    expected = after_a_first_read(completion)
    m = after_a_first_read(prefilled)
    assert m.content[0].text == expected.split("<|im_end|>")[0]
    counted = sdk.messages.count_tokens(model="local", messages=[*ask, {"role": "assistant", "content": "Red, green and"}])
    assert counted.input_tokens == m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0)


def test_the_event_sequence(url):
    with httpx.stream("POST", f"{url}/v1/messages", timeout=WAIT, headers={"x-api-key": KEY}, json={
            "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as r:
        lines = list(r.iter_lines())
    names = [x[7:] for x in lines if x.startswith("event: ")]
    data = [json.loads(x[6:]) for x in lines if x.startswith("data: ")]
    assert [d["type"] for d in data] == names  # each event named as its type
    assert names[:3] == ["message_start", "content_block_start", "ping"] and names[-3:] == [
        "content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) <= {"content_block_delta"} and data[0]["message"]["content"] == []


def test_multi_turn_count_tokens_and_the_prompt_it_counts(sdk):
    turns = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
             {"role": "user", "content": [{"type": "text", "text": "How are"}, {"type": "text", "text": " you?"}]}]
    counted = sdk.messages.count_tokens(model="local", system=[{"type": "text", "text": "Be kind."}], messages=turns)
    m = sdk.messages.create(model="local", max_tokens=4, system="Be kind.", messages=turns)
    assert counted.input_tokens == m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) > 10
    with_tools = sdk.messages.count_tokens(model="local", messages=turns, tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens  # the template renders the tools


def test_error_shapes(sdk, url):
    def shape(r: httpx.Response, status: int, kind: str, words: str) -> None:
        assert r.status_code == status, r.text
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == kind and words in body["error"]["message"]

    shape(post(url, "/v1/messages", {"messages": ASK}), 400, "invalid_request_error", "max_tokens")
    shape(post(url, "/messages", {"max_tokens": 4, "messages": []}), 400, "invalid_request_error", "messages")
    shape(post(url, "/v1/messages", {"max_tokens": 4, "messages": ASK}, key="wrong"), 401, "authentication_error", "key")
    shape(post(url, "/v1/messages/count_tokens", {"messages": [{"role": "user", "content": "x" * 70000}]}), 413,
          "request_too_large", "bytes")
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError) as e:
        sdk.messages.create(model="local", max_tokens=4, messages=[{"role": "user", "content": [
            image, {"type": "text", "text": "What is this?"}]}])
    assert "'image'" in e.value.body["error"]["message"] and e.value.body["type"] == "error"
    with pytest.raises(anthropic.BadRequestError, match="server tools"):
        sdk.messages.create(model="local", max_tokens=4, messages=ASK,
                            tools=[{"type": "web_search_20250305", "name": "web_search"}])
    with pytest.raises(anthropic.BadRequestError, match="no tool named"):
        sdk.messages.create(model="local", max_tokens=4, messages=ASK, tools=[WEATHER],
                            tool_choice={"type": "tool", "name": "nope"})
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0).messages.create(
            model="local", max_tokens=4, messages=ASK)
    # the OpenAI routes keep OpenAI's shape
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": []}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 400


@pytest.mark.text
def test_fields_of_the_current_sdk_are_accepted(sdk):
    """anthropic 2.x sends no sampling fields and may send these: accepted; a JSON schema in output_config is kept."""
    m = sdk.messages.create(model="local", max_tokens=24, messages=[{"role": "user", "content": "Name a city."}],
                            metadata={"user_id": "u1"}, service_tier="auto",
                            extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024},
                                        "cache_control": {"type": "ephemeral"}, "container": None,
                                        "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": {
                                            "type": "object", "properties": {"city": {"type": "string"}},
                                            "required": ["city"]}}}})
    assert m.stop_reason == "end_turn" and isinstance(json.loads(m.content[0].text)["city"], str)
    old = sdk.messages.create(model="local", max_tokens=4, messages=ASK,  # older clients' fields, as they sent them
                              extra_body={"temperature": 0.7, "top_p": 0.9, "top_k": 20})
    assert old.usage.output_tokens > 0


def test_langchain_chat_anthropic(url):
    from langchain_anthropic import ChatAnthropic

    llm = ChatAnthropic(model="local", base_url=url, api_key=KEY, max_tokens=8, max_retries=0, timeout=WAIT)
    msg = llm.invoke("Say hello")
    assert isinstance(msg.content, str) and msg.usage_metadata["output_tokens"] > 0


def test_litellm_anthropic_provider(url, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its bundled copy: no fetch from the network
    import litellm

    res = litellm.completion(model="anthropic/local", api_base=url, api_key=KEY, max_tokens=8,
                             messages=[{"role": "user", "content": "Say hello"}])
    assert res.choices[0].message.content is not None and res.usage.completion_tokens > 0
