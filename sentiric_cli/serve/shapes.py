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


def legacy_logprobs(model, entries: list[TokenLogprob], offset: int = 0) -> dict:
    """Completions' `logprobs`: tokens, token_logprobs, top_logprobs (dicts), text_offset."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    at = offset
    for tok, lp, top in entries:
        text = _piece(model, tok).decode("utf-8", errors="replace")
        out["tokens"].append(text)
        out["token_logprobs"].append(lp)
        out["top_logprobs"].append({_piece(model, a).decode("utf-8", errors="replace"): alp for a, alp in top})
        out["text_offset"].append(at)
        at += len(text)
    return out


def sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
