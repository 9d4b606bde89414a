"""OpenAI's response shapes built from engine data: log-probabilities, server-sent events."""

from __future__ import annotations

import json

from sentiric_cli.engine.logprobs import TokenLogprob


def _piece(model, token: int) -> bytes:
    return model.piece(token)


def chat_logprobs(model, entries: list[TokenLogprob]) -> dict:
    """Chat's `logprobs`: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": null}."""
    def one(tok: int, lp: float) -> dict:
        raw = _piece(model, tok)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(raw)}
    return {"content": [{**one(t, lp), "top_logprobs": [one(a, alp) for a, alp in top]} for t, lp, top in entries],
            "refusal": None}


def legacy_logprobs(model, entries: list[TokenLogprob], offset: int = 0, ids: bool = False) -> dict:
    """Completions' `logprobs`: tokens, token_logprobs, top_logprobs (dicts), text_offset. ids: each token written
    `token_id:N` (vLLM's return_tokens_as_token_ids: a client that re-reads them needs no vocabulary)."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    at = offset

    def name(tok: int) -> str:
        return f"token_id:{tok}" if ids else _piece(model, tok).decode("utf-8", errors="replace")

    for tok, lp, top in entries:
        text = _piece(model, tok).decode("utf-8", errors="replace")
        out["tokens"].append(name(tok))
        out["token_logprobs"].append(lp)
        out["top_logprobs"].append({name(a): alp for a, alp in top})
        out["text_offset"].append(at)
        at += len(text)
    return out


def echo_logprobs(model, prompt: list[int], scored: list[TokenLogprob], answer: list[TokenLogprob],
                  ids: bool = False) -> dict:
    """Completions' `logprobs` with echo: the prompt's tokens first (null for those nothing before them predicts:
    the first, or BOS), then the answer's."""
    lead = len(prompt) - len(scored)
    unscored: list = [(t, None, ()) for t in prompt[:lead]]
    out = legacy_logprobs(model, unscored + scored + answer, ids=ids)
    out["top_logprobs"][:lead] = [None] * lead
    return out


def sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
