"""The model's own chat template (GGUF `tokenizer.chat_template`), rendered with Jinja2 as Hugging Face and
llama-server (--jinja) do: messages as dicts (tool calls included), `tools`, `add_generation_prompt`.

A sandboxed environment: a template is data from a file, not code we trust. Where Jinja2 cannot render
a template, llama.cpp's built-in formatter (which knows the common ones by name) renders the text turns.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sentiric_cli.errors import SentiricError


def _raise(message: str):
    raise jinja2.TemplateError(message)


def _tojson(value, indent=None, separators=None, sort_keys=False, ensure_ascii=False):
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)


@lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def uses_tools(source: str) -> bool:
    """Whether the template renders a `tools` list itself (else the tools go into a system message)."""
    return "tools" in source


def render(source: str, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool,
           bos: str = "", eos: str = "") -> str:
    """The prompt text. The BOS the template writes is dropped: tokenizing adds it (as llama-server does)."""
    try:
        text = _compile(source).render(messages=messages, tools=tools or None,
                                       add_generation_prompt=add_generation_prompt,
                                       bos_token=bos, eos_token=eos)
    except jinja2.TemplateError as e:
        raise SentiricError(f"the model's chat template failed on these messages: {e}") from None
    if bos and text.startswith(bos):
        text = text[len(bos):]
    return text
