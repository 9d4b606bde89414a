"""The serve package's conversions on their own: message shapes, grammars, tool-call parsing, CORS, stop trimming."""

from __future__ import annotations

import json
import re

import pytest

from sentiric_cli.engine.text import partial_stop as _partial_stop
from sentiric_cli.serve import template
from sentiric_cli.serve.app import origin_pattern
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.grammar import response_format
from sentiric_cli.serve.messages import part_text, plain, to_dicts
from sentiric_cli.serve.schemas import ChatBody, Message
from sentiric_cli.serve.tools import GENERIC, HERMES, ToolUse, parse, plan


def test_text_parts_join_and_other_parts_are_refused_by_name():
    msg = Message.model_validate({"role": "user", "content": [{"type": "text", "text": "a"},
                                                               {"type": "input_text", "text": "b"}]})
    assert part_text(msg.content, "messages[0]") == "ab"
    bad = Message.model_validate({"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "input_audio", "input_audio": {}}]})
    with pytest.raises(BadRequest) as e:
        part_text(bad.content, "messages[2]")
    assert e.value.param == "messages[2].content[1]" and "input_audio" in e.value.message


def test_agent_turns_become_template_input():
    msgs = [Message.model_validate(m) for m in [
        {"role": "developer", "content": "Be brief."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"}]]
    d = to_dicts(msgs)
    assert d[0] == {"role": "system", "content": "Be brief."}
    assert d[1]["tool_calls"][0]["function"]["arguments"] == {"x": 1}  # an object, as templates expect
    assert d[2]["tool_call_id"] == "c1"
    assert plain(d, True).endswith('assistant: {"tool_calls": [{"name": "f", "arguments": {"x": 1}}]}\ntool: 2\nassistant:')


def test_jinja_templates_render_in_a_sandbox():
    src = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{{ tools | tojson }}"
    assert template.render(src, [{"role": "user", "content": "hé"}], [{"a": "é"}], True, "<s>") == '[user]hé[{"a": "é"}]'
    with pytest.raises(Exception, match="template"):
        template.render("{{ ''.__class__.__mro__ }}", [], None, True)
    with pytest.raises(Exception, match="nope"):
        template.render("{{ raise_exception('nope') }}", [], None, True)


def test_response_formats():
    assert response_format(None) is None and response_format({"type": "text"}) is None
    assert "root ::=" in response_format({"type": "json_object"})
    g = response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}})
    assert re.search(r"^root ::= ", g, re.M) and '\\"a\\"' in g
    for bad, param in [({"type": "sound"}, "response_format.type"),
                       ({"type": "json_schema", "json_schema": {}}, "response_format.json_schema"),
                       ({"type": "json_object", "schema": {"type": "hiccup"}}, "response_format"),
                       ({"type": "json_object", "schema": 123}, "response_format")]:
        with pytest.raises(BadRequest) as e:
            response_format(bad)
        assert e.value.param == param and e.value.status == 400


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_tool_plans_follow_the_template():
    body = ChatBody.model_validate({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
                                    "tool_choice": "required"})
    hermes = plan(body, "... <tool_call> ... <|im_end|>")
    assert hermes.format == HERMES and hermes.grammar.startswith('root ::= "<tool_call>\\n" call')
    assert '"<|im_end|>"' in hermes.grammar  # the turn's end may follow the call
    assert plan(body.model_copy(update={"tool_choice": "auto"}), "<tool_call>").grammar is None
    generic = plan(body, None)
    assert generic.format == GENERIC and "get_weather" in generic.system and "response" not in generic.system
    assert plan(body.model_copy(update={"tool_choice": "none"}), None) is None


def test_tool_calls_are_parsed_from_either_format():
    use = ToolUse(HERMES, [], None, None)
    content, calls = parse('Sure.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>', use)
    assert content == "Sure." and calls[0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert parse("no call here", use) == ("no call here", [])
    generic = ToolUse(GENERIC, [], None, None)
    assert parse('{"response": "hi"}', generic) == ("hi", [])
    content, calls = parse('{"tool_calls": [{"name": "f", "arguments": {}}, {"name": "g", "argu', generic)
    assert content is None and [c["function"]["name"] for c in calls] == ["f"]  # cut short: the whole ones
    assert all(json.loads(c["function"]["arguments"]) == {} for c in calls)


def test_cors_origin_patterns():
    p = re.compile(origin_pattern(["http://localhost", "https://app.example.com:8443"]))
    assert p.match("http://localhost") and p.match("http://localhost:5173")
    assert p.match("https://app.example.com:8443") and not p.match("https://app.example.com")
    assert not p.match("http://localhost.evil.com") and not p.match("http://notlocalhost")
    assert origin_pattern(["*"]) == ".*"


def test_a_cut_answer_drops_the_start_of_a_stop_string():
    assert _partial_stop("The answer.\nuser", ("\nuser:",)) == len("\nuser")
    assert _partial_stop("The answer.\n", ("\nuser:", "\nsystem:")) == 1
    assert _partial_stop("The answer.", ("\nuser:",)) == 0
    assert _partial_stop("", ("\nuser:",)) == 0
