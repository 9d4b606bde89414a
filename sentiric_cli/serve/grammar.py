"""Structured output: OpenAI's `response_format`, llama.cpp's `grammar` / `json_schema`, as GBNF for
llama.cpp's grammar sampler. JSON schemas go through the converter llama-cpp-python ships (the port of
llama.cpp's json-schema-to-grammar), so we accept what llama-server accepts.
"""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from sentiric_cli.serve.errors import BadRequest

# what `json_object` means: a JSON object, nothing else
JSON_OBJECT = {"type": "object"}


def schema_rules(schema: Any, name: str = "root", param: str = "response_format") -> SchemaConverter:
    """A converter holding the rules for `schema` under rule `name` (more rules can be added to it)."""
    if not isinstance(schema, dict):
        raise BadRequest(f"{param}: the JSON schema must be an object", param)
    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        schema = conv.resolve_refs(schema, "input")
        conv.visit(schema, "" if name == "root" else name)  # "" is how the converter names its root rule
    except Exception as e:  # the converter raises whatever it meets: an unsupported or broken schema
        raise BadRequest(f"{param}: cannot turn this JSON schema into a grammar ({type(e).__name__}: {e})",
                         param) from None
    return conv


def schema_grammar(schema: Any, param: str = "response_format") -> str:
    return schema_rules(schema, "root", param).format_grammar()


def response_format(rf: dict | None, param: str = "response_format") -> str | None:
    """GBNF for OpenAI's response_format ({"type": "text" | "json_object" | "json_schema", ...})."""
    if rf is None:
        return None
    kind = rf.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = rf.get("schema")  # llama-server also takes a schema here
        return schema_grammar(schema if schema is not None else JSON_OBJECT, param)
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise BadRequest(f"{param}.json_schema.schema: a JSON schema object is required", f"{param}.json_schema")
        return schema_grammar(spec["schema"], f"{param}.json_schema.schema")
    raise BadRequest(f"{param}.type: must be 'text', 'json_object' or 'json_schema' (got {kind!r})", f"{param}.type")


def body_grammar(body) -> str | None:
    """The grammar a request asks for, one way at most: `grammar`, `json_schema` or `response_format`."""
    asked = [k for k in ("grammar", "json_schema", "response_format") if getattr(body, k, None) is not None]
    if getattr(body, "response_format", None) and body.response_format.get("type") == "text":
        asked.remove("response_format")
    if len(asked) > 1:
        raise BadRequest(f"send one of {' / '.join(asked)}, not several", asked[1])
    if body.grammar is not None:
        if not body.grammar.strip():
            raise BadRequest("grammar: empty", "grammar")
        return body.grammar
    if body.json_schema is not None:
        return schema_grammar(body.json_schema, "json_schema")
    return response_format(getattr(body, "response_format", None))
