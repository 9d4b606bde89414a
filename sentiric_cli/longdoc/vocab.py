"""A backend's vocabulary through its HTTP routes, for `run --backend` without a local GGUF.

What the map-reduce asks of a model's vocabulary: tokenize (llama-server's and sentiric's `/tokenize`, with each
token's piece), a token's bytes (those pieces, else `/detokenize`), the chat template (`/props`), rendered by
llama.cpp's own template code, which needs no model. Long texts go in pieces, as a local model's do
(engine/doctokens.py).
"""

from __future__ import annotations

import httpx

from sentiric_cli.engine.bindings import apply_template
from sentiric_cli.engine.doctokens import tokenize_document
from sentiric_cli.errors import SentiricError


class BackendVocab:
    def __init__(self, http: httpx.Client, url: str) -> None:
        self.http, self.url = http, url
        self.pieces: dict[int, bytes] = {}
        self.template: str | None = None
        try:
            props = http.get(f"{url}/props", timeout=10.0)
            if props.status_code == 200:
                self.template = props.json().get("chat_template") or None
        except (httpx.HTTPError, ValueError, AttributeError):
            pass

    @classmethod
    def of(cls, http: httpx.Client, url: str) -> BackendVocab | None:
        """The vocabulary of the backend at `url`, or None when it has no `/tokenize` with pieces (a router)."""
        vocab = cls(http, url)
        try:
            vocab.tokenize_once("Hello world", False, False)
        except SentiricError:
            return None
        return vocab

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        return tokenize_document(self, text, add_special=add_special, parse_special=parse_special)

    def tokenize_once(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        try:
            r = self.http.post(f"{self.url}/tokenize", json={"content": text, "add_special": add_special,
                                                             "parse_special": parse_special, "with_pieces": True})
            items = r.json()["tokens"] if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            raise SentiricError(f"backend {self.url} did not tokenize ({type(e).__name__})",
                                "give --model the GGUF it serves") from None
        if not isinstance(items, list):
            raise SentiricError(f"backend {self.url} has no /tokenize", "give --model the GGUF it serves")
        out = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), int):
                raise SentiricError(f"backend {self.url}'s /tokenize gives no pieces", "give --model the GGUF it serves")
            piece = item.get("piece")
            self.pieces[item["id"]] = bytes(piece) if isinstance(piece, list) else str(piece).encode("utf-8")
            out.append(item["id"])
        return out

    def piece(self, token: int) -> bytes:
        got = self.pieces.get(token)
        if got is None:
            try:
                r = self.http.post(f"{self.url}/detokenize", json={"tokens": [token]})
                got = str(r.json()["content"]).encode("utf-8") if r.status_code == 200 else b""
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                got = b""
            self.pieces[token] = got
        return got

    def chat_template(self) -> str | None:
        return self.template

    def apply_template(self, template: str, messages: list[tuple[str, str]], add_assistant: bool = True) -> str:
        return apply_template(template, messages, add_assistant)

    def close(self) -> None:
        pass
