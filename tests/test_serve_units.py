"""The serve package's conversions on their own: message shapes, grammars, tool-call parsing, CORS, stop trimming."""

from __future__ import annotations

import json
import re

import pytest

from sentiric_cli.engine.text import partial_stop as _partial_stop
from sentiric_cli.serve import template
from sentiric_cli.serve.app import origin_pattern
from sentiric_cli.serve.callstream import Arguments, CallStart, CallStream, Text, json_end
from sentiric_cli.serve.drive import logit_bias, unsupported
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.grammar import response_format
from sentiric_cli.serve.messages import part_text, plain, to_dicts
from sentiric_cli.serve.schemas import ChatBody, Message
from sentiric_cli.serve.tools import GENERIC, HERMES, LLAMA3, MISTRAL, ToolUse, fit_ids, found, parse, plan


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


FUNCS = [t["function"] for t in TOOLS]


def test_tool_plans_follow_the_template():
    hermes = plan(FUNCS, "required", template="... <tool_call> ... <|im_end|>")
    assert hermes.format == HERMES and hermes.grammar.startswith('root ::= "<tool_call>\\n" call')
    assert '"<|im_end|>"' in hermes.grammar and not hermes.triggers  # the turn's end may follow the call
    lazy = plan(FUNCS, "auto", template="<tool_call>")  # auto: the same grammar, from the model's first <tool_call>
    assert lazy.grammar.startswith('root ::= "<tool_call>') and lazy.triggers and "<tool_call>" in lazy.triggers[0]
    generic = plan(FUNCS, "required")
    assert generic.format == GENERIC and "get_weather" in generic.system and "response" not in generic.system
    assert plan(FUNCS, "none") is None and plan([], "auto") is None
    llama3 = plan(FUNCS, "auto", template="<|start_header_id|>ipython<|end_header_id|>")
    assert llama3.format == LLAMA3 and '\\"parameters\\"' in llama3.grammar and llama3.in_template
    mistral = plan(FUNCS, "named", "get_weather", template="[TOOL_CALLS]")
    assert mistral.format == MISTRAL and mistral.grammar.startswith('root ::= "[TOOL_CALLS]"') and not mistral.triggers
    assert len(mistral.new_id()) == 9 and mistral.new_id().isalnum()
    with pytest.raises(BadRequest):
        plan(FUNCS, "named", "nope")


def test_mistral_call_ids_are_fitted_to_its_template():
    msgs = [{"role": "assistant", "content": "", "tool_calls": [{"id": "toolu_0123456789abcdef", "type": "function",
                                                                  "function": {"name": "f", "arguments": {}}}]},
            {"role": "tool", "tool_call_id": "toolu_0123456789abcdef", "content": "1"}]
    fitted = fit_ids(msgs, "[TOOL_CALLS]")
    short = fitted[0]["tool_calls"][0]["id"]
    assert len(short) == 9 and short.isalnum() and fitted[1]["tool_call_id"] == short
    assert fit_ids(msgs, "<tool_call>") is msgs


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
    llama3 = ToolUse(LLAMA3, [], None, None)
    assert parse('<|python_tag|>{"name": "f", "parameters": {"x": 2}}', llama3)[1][0]["function"]["arguments"] == '{"x": 2}'
    assert parse("Hello.", llama3) == ("Hello.", [])
    mistral = ToolUse(MISTRAL, [], None, None)
    content, calls = parse('Ok.[TOOL_CALLS][{"name": "f", "arguments": {}, "id": "abcDEF123"}]', mistral)
    assert content == "Ok." and calls[0]["id"] == "abcDEF123"


@pytest.mark.parametrize("template,text", [
    ("<tool_call>", 'Sure.\n<tool_call>\n{"name": "f", "arguments": {"city": "Pa\\"ris", "n": [1, {"k": "}"}]}}\n</tool_call>'),
    ("<tool_call>", 'A.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\nB.'),  # text after a call too
    ("[TOOL_CALLS]", 'Ok [TOOL_CALLS][{"name": "f", "arguments": {"city": "Rome"}, "id": "abcdefghi"}, '
                     '{"name": "f", "arguments": {"city": "Oslo"}, "id": "bcdefghij"}]'),
    ("ipython<|end_header_id|>", ' {"name": "f", "parameters": {"city": "Paris"}}'),
    (None, '{"tool_calls": [{"name": "f", "arguments": {"city": "Paris"}}, {"name": "f", "arguments": {}}]}'),
    (None, '{"tool_calls": [{"name": "f", "arguments": {"q": {"name": "g", "arguments": {}}}}]}'),  # a call-like argument
])
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_streamed_calls_add_up_to_the_parsed_ones(template, text, step):
    """Pieces of any size: the free text, then each call's name and its arguments as written, which parse to the
    same calls as the whole answer does."""
    use = plan(FUNCS, "auto", template=template)
    stream = CallStream(use)
    events = [e for i in range(0, len(text), step) for e in stream.feed(text[i:i + step])]
    rest, calls, streamed = stream.finish()
    free = "".join(e.text for e in events if isinstance(e, Text)) + rest
    names = [e.name for e in events if isinstance(e, CallStart)]
    args = ["".join(e.text for e in events if isinstance(e, Arguments) and e.index == k) for k in range(len(names))]
    assert streamed == len(calls) == len(names) and names == [c["name"] for c in calls]
    assert [json.loads(a) for a in args] == [c["arguments"] for c in calls]
    assert free.strip() == (found(text, use)[0] or "").strip()


def test_free_text_is_streamed_and_a_partial_marker_held_back():
    stream = CallStream(plan(FUNCS, "auto", template="<tool_call>"))
    assert [e.text for e in stream.feed("Hello <tool")] == ["Hello "]
    assert stream.feed("box> done") == [Text("<toolbox> done")]
    llama3 = CallStream(plan(FUNCS, "auto", template="ipython<|end_header_id|>"))
    assert llama3.feed("  ") == [] and llama3.feed("Hi") == [Text("  Hi")]
    assert llama3.feed(' {"name": "f"') == [Text(' {"name": "f"')]  # free text already: no call after it


def test_json_ends():
    assert json_end('{"a": "}"} tail', 0) == 10
    assert json_end('[1, [2]]', 0) == 8
    assert json_end('{"a": ', 0) is None
    assert json_end('12, 3', 0) == 2


def test_unsupported_sampling_fields_and_logit_bias_forms():
    class Vocab:
        n_vocab = 100

        def tokenize(self, text, add_special=False, parse_special=False):
            return [ord(c) % 100 for c in text]
    with pytest.raises(BadRequest) as e:
        unsupported(ChatBody.model_validate({"messages": [{"role": "user", "content": "x"}], "mirostat": 2}))
    assert e.value.param == "mirostat"
    unsupported(ChatBody.model_validate({"messages": [{"role": "user", "content": "x"}], "mirostat": 0, "echo": False}))
    assert logit_bias(Vocab(), {"5": -100, "7": 2.5}) == ((5, float("-inf")), (7, 2.5))
    assert logit_bias(Vocab(), [[5, False], ["ab", 1]]) == ((5, float("-inf")), (97, 1.0), (98, 1.0))
    for bad in ({"100": 1}, {"-1": 1}, [[3, True]], {"": 1}):
        with pytest.raises(BadRequest):
            logit_bias(Vocab(), bad)


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
