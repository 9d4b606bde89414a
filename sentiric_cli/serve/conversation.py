"""A conversation to an engine request: the template, the tools and their grammar, the sampling fields. What the
chat completions route (OpenAI) and the messages route (Anthropic) share; each turns its own body into template
messages (role, content, tool_calls, tool_call_id) and its tools into {"name", "description", "parameters"}."""

from __future__ import annotations

from sentiric_cli.engine.types import Request
from sentiric_cli.errors import SentiricError
from sentiric_cli.serve import tools as toolcalls
from sentiric_cli.serve.drive import Server, build_request, off_loop, text_size
from sentiric_cli.serve.errors import BadRequest
from sentiric_cli.serve.messages import chat_tokens, render, turn_stops


def _conversation(srv: Server, messages: list[dict], functions: list[dict] | None, choice: str, name: str | None,
                  parallel: bool) -> tuple[list[dict], list[dict] | None, toolcalls.ToolUse | None]:
    template = srv.model.chat_template()
    use = toolcalls.plan(functions or [], choice, name, parallel, template)
    messages = toolcalls.fit_ids(toolcalls.with_instruction(messages, use), template)
    return messages, (use.in_template if use is not None else None), use


async def prompt_text(srv: Server, messages: list[dict], functions: list[dict] | None, choice: str = "auto",
                      name: str | None = None, parallel: bool = True) -> str:
    """The prompt as text, as the template renders it (llama-server's /apply-template)."""
    messages, in_template, _ = _conversation(srv, messages, functions, choice, name, parallel)
    try:
        return render(srv.model, messages, in_template)
    except SentiricError as e:
        raise BadRequest(str(e), "messages") from None


async def prompt_tokens(srv: Server, messages: list[dict], functions: list[dict] | None, choice: str = "auto",
                        name: str | None = None, parallel: bool = True, prefill: str = ""
                        ) -> tuple[list[int], list[int], toolcalls.ToolUse | None]:
    """The conversation's prompt (pinned head, the rest) through the model's template, with its tools; and how it
    uses them (None: it has none, or may not call)."""
    messages, in_template, use = _conversation(srv, messages, functions, choice, name, parallel)
    size = text_size(messages) + (len(repr(in_template)) if in_template else 0)
    head, rest = await off_loop(size + len(prefill), chat_tokens, srv.model, messages, in_template, prefill)
    return head, rest, use


async def chat_request(srv: Server, body, messages: list[dict], functions: list[dict] | None, choice: str = "auto",
                       name: str | None = None, parallel: bool = True, grammar: str | None = None, top: int = -1,
                       n: int = 1, prefill: str = "") -> tuple[Request, toolcalls.ToolUse | None]:
    """The engine request for a conversation, and how it uses its tools."""
    head, rest, use = await prompt_tokens(srv, messages, functions, choice, name, parallel, prefill)
    if use is not None and use.grammar:
        if grammar is not None:
            raise BadRequest("tools and a response format / grammar together: send one (a tool call has its own "
                             "grammar)", "tools")
        grammar = use.grammar
    model = srv.model
    req = build_request(srv, body, head, rest, grammar, top, n, triggers=use.triggers if use is not None else ())
    req.stop = (*req.stop, *turn_stops(model))
    return req, use
