"""The gate every HTTP request passes: body size (whatever the transfer encoding) and the API key.

A plain ASGI middleware, not starlette's BaseHTTPMiddleware: that one wraps the request stream, and a
handler behind it never hears `http.disconnect`, so a client that left a non-streamed request kept its
slot generating to max_tokens. Here `receive` passes through, counted.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.routing import Match

from sentiric_cli.serve.errors import error

PUBLIC = {"/health", "/v1/health", "/readyz", "/livez", "/v1/livez", "/models", "/v1/models"}


def key_ok(headers: Headers, key: str) -> bool:
    auth = headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode(), key.encode())  # constant time: the key's bytes do not leak by timing


class Guard:
    def __init__(self, app, settings, router) -> None:
        self.app, self.settings, self.router = app, settings, router

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.settings.max_body_bytes
        headers = Headers(scope=scope)
        size = headers.get("content-length", "")
        path = scope["path"]
        if size.isdigit() and int(size) > limit:
            return await error(413, f"request body over {limit} bytes", param="body", path=path)(scope, receive, send)
        key = self.settings.api_key
        if key and path not in PUBLIC and not path.startswith(("/v1/models/", "/models/")):
            known = any(r.matches(scope)[0] != Match.NONE for r in self.router.routes)
            if known and not key_ok(headers, key):  # unknown routes fall through to 404
                return await error(401, "missing or wrong API key (send Authorization: Bearer KEY, or x-api-key: KEY)",
                                   "authentication_error", path=path)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # a chunked body has no Content-Length: stop reading at the limit
                    raise HTTPException(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, counted, send)
