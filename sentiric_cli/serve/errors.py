"""OpenAI's error object: {"error": {"message", "type", "param", "code"}}, and the exception routes raise for it."""

from __future__ import annotations

from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         413: "invalid_request_error", 429: "rate_limit_error", 501: "not_implemented_error", 500: "server_error",
         503: "service_unavailable_error"}


class BadRequest(Exception):
    """A request this server will not serve as asked: becomes a 4xx with OpenAI's error object."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.headers = message, param, status, headers
        self.kind = kind or TYPES.get(status, "invalid_request_error")


def error(status: int, message: str, kind: str | None = None, param: str | None = None,
          headers: dict | None = None) -> JSONResponse:
    body = {"message": message, "type": kind or TYPES.get(status, "invalid_request_error"), "param": param,
            "code": status}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def response(e: BadRequest) -> JSONResponse:
    return error(e.status, e.message, e.kind, e.param, e.headers)
