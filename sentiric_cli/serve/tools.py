"""Tool calling: tools into the prompt, a grammar where a call is required, the output back into `tool_calls`.

Two formats, chosen from the model's chat template, as llama-server chooses its handlers:
- hermes: the template renders `tools` itself and shows calls as `<tool_call>{"name", "arguments"}</tool_call>`
  (Qwen 2.5/3, Hermes, many fine-tunes). The model writes that; with tool_choice required or a named
  function a grammar makes it write one (or more) calls and nothing else.
- generic: any other template, or none. The tools go into a system turn and the model answers in JSON,
  `{"tool_calls": [...]}` or `{"response": "..."}`, under a grammar (llama-server's generic format).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.grammar import schema_rules
from sentiric_cli.serve.messages import TURN_ENDS
from sentiric_cli.serve.schemas import ChatBody

HERMES, GENERIC = "hermes", "generic"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


@dataclass
class ToolUse:
    format: str
    tools: list[dict]  # OpenAI tool objects, for the template
    grammar: str | None
    system: str | None  # generic: the instruction added to the system turn


def plan(body: ChatBody, template: str | None) -> ToolUse | None:
    """How this request uses its tools; None when it has none or tool_choice is "none"."""
    choice = body.tool_choice or "auto"
    if not body.tools or choice == "none":
        return None
    funcs = [t.function for t in body.tools]
    if not isinstance(choice, str):
        funcs = [f for f in funcs if f.name == choice.function.name]
        if not funcs:
            raise BadRequest(f"tool_choice.function.name: no tool named {choice.function.name!r} in tools",
                             "tool_choice")
    required = choice != "auto"
    one_call = {"anyOf": [{"type": "object", "properties": {"name": {"const": f.name},
                                                             "arguments": f.parameters or {"type": "object"}},
                           "required": ["name", "arguments"]} for f in funcs]}
    tools = [t.model_dump(exclude_none=True) for t in body.tools]
    if template and "<tool_call>" in template:
        grammar = None
        if required:
            conv = schema_rules(one_call, "call", "tools")
            block = r'"<tool_call>\n" call "\n</tool_call>"'
            more = f' ("\\n" {block})*' if body.parallel_tool_calls else ""
            # the template's end-of-turn text may follow (a stop string where it is no token of this vocabulary)
            end = next((m for m in TURN_ENDS if m in template), None)
            tail = f' ("\\n"? "{end}")?' if end else ""
            grammar = f"root ::= {block}{more}{tail}\n" + conv.format_grammar()
        return ToolUse(HERMES, tools, grammar, None)
    calls: dict[str, Any] = {"type": "array", "items": one_call, "minItems": 1}
    if not body.parallel_tool_calls:
        calls["maxItems"] = 1
    schema: dict[str, Any] = {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"]}
    if not required:
        schema = {"anyOf": [schema, {"type": "object", "properties": {"response": {"type": "string"}},
                                     "required": ["response"]}]}
    listing = json.dumps([t["function"] for t in tools], ensure_ascii=False, indent=1)
    system = (f"You can call these tools:\n{listing}\n\nRespond in JSON: "
              + ('{"tool_calls": [{"name": ..., "arguments": {...}}]} to call tools'
                 + ("" if required else ', or {"response": "..."} to answer the user') + "."))
    return ToolUse(GENERIC, tools, schema_rules(schema, "root", "tools").format_grammar(), system)


def with_instruction(messages: list[dict], use: ToolUse | None) -> list[dict]:
    """The generic format's tool instruction as (part of) the first system turn."""
    if use is None or not use.system:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{use.system}"}, *messages[1:]]
    return [{"role": "system", "content": use.system}, *messages]


def parse(text: str, use: ToolUse) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) from what the model wrote; text that is no call stays content."""
    found: list[dict] = []
    content: str | None = text
    if use.format == HERMES:
        for raw in _CALL.findall(text):
            call = _loads(raw)
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                found.append(call)
        if found:
            content = _CALL.sub("", text).strip() or None
    else:
        data = _loads(text.strip())
        if data is None:  # cut short (max_tokens): keep the calls that were written whole
            data = {"tool_calls": _whole_items(text)}
        if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
            found = [c for c in data["tool_calls"] if isinstance(c, dict) and isinstance(c.get("name"), str)]
            content = None if found else text
        elif isinstance(data, dict) and isinstance(data.get("response"), str):
            content = data["response"]
    calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
              "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}), ensure_ascii=False)}}
             for c in found]
    return content, calls


def _whole_items(text: str) -> list:
    """The complete items of a cut-off `{"tool_calls": [item, item, ...` ."""
    m = re.match(r'\s*\{\s*"tool_calls"\s*:\s*\[', text)
    items, at, dec = [], m.end() if m else len(text), json.JSONDecoder()
    while at < len(text):
        try:
            item, at = dec.raw_decode(text, at)
        except ValueError:
            break
        items.append(item)
        sep = re.match(r"\s*,?\s*", text[at:])  # always matches (it may be empty)
        at += sep.end() if sep else 0
    return items


def _loads(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None
