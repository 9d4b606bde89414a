"""The error objects: OpenAI's {"error": {"message", "type", "param", "code"}}, and Anthropic's
{"type": "error", "error": {"type", "message"}} on the Anthropic routes (by path); the exception routes raise."""

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


# Anthropic's error types by status (docs.anthropic.com, "Errors")
ANTHROPIC = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
             413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 501: "api_error",
             503: "overloaded_error", 529: "overloaded_error"}


def anthropic_path(path: str) -> bool:
    return path.rstrip("/").endswith(("/messages", "/messages/count_tokens"))


def anthropic_body(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": ANTHROPIC.get(status, "api_error" if status >= 500 else
                                                             "invalid_request_error"), "message": message}}


def error(status: int, message: str, kind: str | None = None, param: str | None = None,
          headers: dict | None = None, path: str = "") -> JSONResponse:
    if anthropic_path(path):
        return JSONResponse(anthropic_body(status, message), status_code=status, headers=headers)
    body = {"message": message, "type": kind or TYPES.get(status, "invalid_request_error"), "param": param,
            "code": status}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def response(e: BadRequest, path: str = "") -> JSONResponse:
    return error(e.status, e.message, e.kind, e.param, e.headers, path)
