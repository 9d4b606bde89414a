"""Chat messages to prompt tokens: every text shape the OpenAI API accepts, through the model's template.

Content is a string, a list of parts (text parts joined; other kinds refused by name), or null on an
assistant turn that calls tools. `developer` is a system turn to templates, which know no such role.
Tool-call arguments reach templates as objects where they parse (Hugging Face templates expect that).
"""

from __future__ import annotations

import json
from typing import Any

from sentiric_cli.errors import SentiricError
from sentiric_cli.serve import template as jinja
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.schemas import Message

TEXT_PARTS = {"text", "input_text", "output_text"}
# end-of-turn markers of common templates: a stop string where the model's vocabulary has no such token
TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def part_text(content, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    out = []
    for j, part in enumerate(content):
        if part.type not in TEXT_PARTS:
            raise BadRequest(f"{where}.content[{j}]: '{part.type}' parts are not supported: this server reads text only",
                             f"{where}.content[{j}]")
        if part.text is None:
            raise BadRequest(f"{where}.content[{j}].text: required for a text part", f"{where}.content[{j}].text")
        out.append(part.text)
    return "".join(out)


def _arguments(a):
    if isinstance(a, str):
        try:
            parsed = json.loads(a)
        except ValueError:
            return a
        return parsed if isinstance(parsed, dict) else a
    return a


def to_dicts(messages: list[Message]) -> list[dict]:
    """Messages as template input: role, text content, and the tool fields where present."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        content = part_text(m.content, where)
        if content is None and not (m.role == "assistant" and m.tool_calls):
            if m.role != "assistant":
                raise BadRequest(f"{where}.content: required for a {m.role} message", f"{where}.content")
        if m.role == "tool" and not m.tool_call_id:
            raise BadRequest(f"{where}.tool_call_id: required for a tool message", f"{where}.tool_call_id")
        d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        if m.name:
            d["name"] = m.name
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id or f"call_{i}_{k}", "type": "function",
                                "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                               for k, c in enumerate(m.tool_calls)]
        if m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def plain(messages: list[dict], add_generation_prompt: bool) -> str:
    """Without a chat template: `role: text` lines; tool calls as the JSON the model is asked to write."""
    lines = []
    for m in messages:
        text = m["content"]
        if m.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in m["tool_calls"]]
            text = (text + "\n" if text else "") + json.dumps({"tool_calls": calls}, ensure_ascii=False)
        lines.append(f"{m['role']}: {text}\n")
    return "".join(lines) + ("assistant:" if add_generation_prompt else "")


def render(model, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool = True) -> str:
    source = model.chat_template()
    if not source:
        return plain(messages, add_generation_prompt)
    try:
        return jinja.render(source, messages, tools, add_generation_prompt, model.special_text(model.bos),
                            model.special_text(model.eos))
    except SentiricError:
        if tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
            raise
        # a template Jinja2 cannot run: llama.cpp's built-in formatter knows the common ones by their text
        return model.apply_template(source, [(m["role"], m["content"]) for m in messages], add_generation_prompt)


def chat_tokens(model, messages: list[dict], tools: list[dict] | None = None,
                prefill: str = "") -> tuple[list[int], list[int]]:
    """The conversation's prompt tokens, split: the system turns at the start (and the tools) are the pinned
    head; the rest streams through the window. `prefill`: the start of the answer, which the model continues."""
    templated = bool(model.chat_template())
    try:
        full = render(model, messages, tools) + prefill
        n_sys = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
        prefix = render(model, messages[:n_sys], tools, False) if n_sys else ""
    except SentiricError as e:
        raise BadRequest(str(e), "messages") from None
    if not full.startswith(prefix):
        prefix = ""
    toks = model.tokenize(full, add_special=True, parse_special=templated)
    n_head = len(model.tokenize(prefix, add_special=True, parse_special=templated)) if prefix else 1
    n_head = max(1, min(n_head, len(toks) - 1))
    return toks[:n_head], toks[n_head:]


def turn_stops(model) -> tuple[str, ...]:
    """Stop strings that end the assistant's turn: `role:` lines without a template; with one, its end-of-turn
    marker when that is text to this vocabulary rather than an end-of-generation token."""
    source = model.chat_template()
    if not source:
        return ("\nuser:", "\nsystem:")
    out = []
    for mark in TURN_ENDS:
        if mark in source:
            toks = model.tokenize(mark, parse_special=True)
            if not (len(toks) == 1 and model.is_eog(toks[0])):
                out.append(mark)
    return tuple(out)
