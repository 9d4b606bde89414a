"""Tool calling: tools into the prompt, a grammar for the calls, the output back into calls.

Four formats, chosen from the model's chat template as llama-server chooses its handlers:
- hermes: the template shows calls as `<tool_call>{"name", "arguments"}</tool_call>` (Qwen 2.5/3, Hermes, many
  fine-tunes);
- llama3: Llama 3.1-3.3's JSON calls, `{"name", "parameters"}` (the template has an `ipython` role);
- mistral: `[TOOL_CALLS][{"name", "arguments", "id"}]`, ids of 9 letters and digits (Mistral Nemo and later);
- generic: any other template, or none. The tools go into a system turn and the model answers in JSON,
  `{"tool_calls": [...]}` or `{"response": "..."}`, under a grammar (llama-server's generic format).
The first three render the tools through the template. With tool_choice required or a named function a grammar
makes the model write calls and nothing else; with auto the same grammar is lazy (llama.cpp's lazy grammar sampler):
the text is free until the model starts a call, and from there the call is valid JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.grammar import schema_rules
from sentiric_cli.serve.messages import TURN_ENDS

HERMES, LLAMA3, MISTRAL, GENERIC = "hermes", "llama3", "mistral", "generic"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
MARKERS = {HERMES: "<tool_call>", MISTRAL: "[TOOL_CALLS]"}  # where calls start in free text
PYTHON_TAG = "<|python_tag|>"
_ALNUM = string.ascii_letters + string.digits


@dataclass
class ToolUse:
    format: str
    tools: list[dict]  # OpenAI tool objects, for the template
    grammar: str | None
    system: str | None  # generic: the instruction added to the system turn
    triggers: tuple[str, ...] = ()  # the grammar is lazy: it applies from the first match of these on

    @property
    def in_template(self) -> list[dict] | None:
        return None if self.format == GENERIC else self.tools

    @property
    def args_key(self) -> str:
        return "parameters" if self.format == LLAMA3 else "arguments"

    def new_id(self, prefix: str = "call_") -> str:
        if self.format == MISTRAL:  # its template refuses any other id
            return "".join(secrets.choice(_ALNUM) for _ in range(9))
        return f"{prefix}{secrets.token_hex(12)}"


def detect(template: str | None) -> str:
    if not template:
        return GENERIC
    if "<tool_call>" in template:
        return HERMES
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "ipython<|end_header_id|>" in template:
        return LLAMA3
    return GENERIC


def _word(word: str) -> str:
    """A lazy-grammar trigger for `word` anywhere in the output (llama.cpp matches a pattern against the whole text
    so far, and feeds the grammar from its first group)."""
    return r"[\s\S]*?(" + re.escape(word) + r")[\s\S]*"


def plan(functions: list[dict], choice: str = "auto", name: str | None = None, parallel: bool = True,
         template: str | None = None) -> ToolUse | None:
    """How a request uses its tools. `functions`: {"name", "description", "parameters"} each; `choice`: "auto",
    "none", "required", or "named" with `name`. None when there are none or the choice is "none"."""
    if not functions or choice == "none":
        return None
    if choice == "named":
        functions = [f for f in functions if f["name"] == name]
        if not functions:
            raise BadRequest(f"tool_choice: no tool named {name!r} in tools", "tool_choice")
    required = choice != "auto"
    fmt = detect(template)
    tools = [{"type": "function", "function": f} for f in functions]
    key = "parameters" if fmt == LLAMA3 else "arguments"

    def one(f: dict) -> dict:
        props: dict[str, Any] = {"name": {"const": f["name"]}, key: f.get("parameters") or {"type": "object"}}
        if fmt == MISTRAL:
            props["id"] = {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}
        return {"type": "object", "properties": props, "required": list(props)}
    one_call = {"anyOf": [one(f) for f in functions]}
    end = next((m for m in TURN_ENDS if template and m in template), None)
    # the template's end-of-turn text may follow (a stop string where it is no token of this vocabulary)
    tail = f' ("\\n"? "{end}")?' if end else ""
    if fmt == HERMES:
        block = r'"<tool_call>\n" call "\n</tool_call>"'
        more = f' ("\\n" {block})*' if parallel else ""
        grammar = f"root ::= {block}{more}{tail}\n" + schema_rules(one_call, "call", "tools").format_grammar()
        return ToolUse(fmt, tools, grammar, None, () if required else (_word("<tool_call>"),))
    if fmt == MISTRAL:
        calls: dict[str, Any] = {"type": "array", "items": one_call, "minItems": 1}
        if not parallel:
            calls["maxItems"] = 1
        grammar = f'root ::= "[TOOL_CALLS]" calls{tail}\n' + schema_rules(calls, "calls", "tools").format_grammar()
        return ToolUse(fmt, tools, grammar, None, () if required else (_word("[TOOL_CALLS]"),))
    if fmt == LLAMA3:  # one call per turn (the template refuses more); the call is the whole answer
        grammar = f"root ::= call{tail}\n" + schema_rules(one_call, "call", "tools").format_grammar()
        return ToolUse(fmt, tools, grammar, None, () if required else (r'\s*(\{\s*"name"[\s\S]*)',))
    arr: dict[str, Any] = {"type": "array", "items": one_call, "minItems": 1}
    if not parallel:
        arr["maxItems"] = 1
    schema: dict[str, Any] = {"type": "object", "properties": {"tool_calls": arr}, "required": ["tool_calls"]}
    if not required:
        schema = {"anyOf": [schema, {"type": "object", "properties": {"response": {"type": "string"}},
                                     "required": ["response"]}]}
    listing = json.dumps(functions, ensure_ascii=False, indent=1)
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


def fit_ids(messages: list[dict], template: str | None) -> list[dict]:
    """Mistral's templates refuse call ids that are not 9 letters and digits: any other id (an OpenAI `call_...`,
    an Anthropic `toolu_...`) is mapped to one, the same for a call and its result."""
    if detect(template) != MISTRAL:
        return messages

    def short(i: str) -> str:
        if len(i) == 9 and i.isalnum():
            return i
        digest = hashlib.sha1(i.encode()).digest()
        return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:9])
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [{**c, "id": short(c["id"])} for c in m["tool_calls"]]
        if m.get("tool_call_id"):
            m["tool_call_id"] = short(m["tool_call_id"])
        out.append(m)
    return out


def found(text: str, use: ToolUse) -> tuple[str | None, list[dict]]:
    """(content, calls) from what the model wrote: calls as {"name", "arguments", "id"?}; text that is no call
    stays content."""
    calls: list[dict] = []
    content: str | None = text
    if use.format == HERMES:
        for raw in _CALL.findall(text):
            call = _loads(raw)
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                calls.append(call)
        if calls:
            content = _CALL.sub("", text).strip() or None
    elif use.format == MISTRAL:
        head, marker, rest = text.partition(MARKERS[MISTRAL])
        if marker:
            items = _loads(rest.strip())
            items = items if isinstance(items, list) else _whole_items(rest, r"\s*\[")
            calls = [c for c in items if isinstance(c, dict) and isinstance(c.get("name"), str)]
            content = head.strip() or None
    elif use.format == LLAMA3:
        body = text.strip().removeprefix(PYTHON_TAG)
        call = _loads(body)
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            calls = [{"name": call["name"], "arguments": call.get("parameters", call.get("arguments", {}))}]
            content = None
    else:
        data = _loads(text.strip())
        if data is None:  # cut short (max_tokens): keep the calls that were written whole
            data = {"tool_calls": _whole_items(text, r'\s*\{\s*"tool_calls"\s*:\s*\[')}
        if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
            calls = [c for c in data["tool_calls"] if isinstance(c, dict) and isinstance(c.get("name"), str)]
            content = None if calls else text
        elif isinstance(data, dict) and isinstance(data.get("response"), str):
            content = data["response"]
    return content, calls


def parse(text: str, use: ToolUse) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) in OpenAI's shape."""
    content, calls = found(text, use)
    return content, [openai_call(c, use) for c in calls]


def openai_call(c: dict, use: ToolUse, call_id: str | None = None) -> dict:
    given = c.get("id")
    cid = call_id or (given if use.format == MISTRAL and isinstance(given, str) else use.new_id())
    return {"id": cid, "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}), ensure_ascii=False)}}


def _whole_items(text: str, opening: str) -> list:
    """The complete items of a cut-off JSON array that starts at `opening`."""
    m = re.match(opening, text)
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
