"""uvicorn's HTTP protocols with a deadline for request headers.

uvicorn times out idle keep-alive connections but not one that sends its headers slowly (or never ends
them): 100 such connections stayed open forever, and enough of them use up the file descriptors. Here
a connection that has no complete request head `header_timeout` seconds after it opened (or after its
last response) is closed. A request being served is never cut by this.

Two parsers: httptools (C, uvicorn's fast one; its response writes cost a fraction of h11's, which
matters with one chunk per token per stream) when installed, else h11 (pure Python).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class _Deadline:
    """The deadline, for either parser: arm it when a connection opens and after each response, cancel it
    when a request head is complete (each parser reports that its own way) or the connection ends."""

    header_timeout: float = 10.0  # set per server by protocol_class()
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._rearm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _rearm(self) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        self._say_closed()
        self.transport.close()

    def _say_closed(self) -> None:
        pass


class HeaderDeadlineProtocol(_Deadline, H11Protocol):
    def handle_events(self) -> None:
        super().handle_events()
        if self._deadline is not None and self.cycle is not None and not self.cycle.response_complete:
            self._cancel()  # a complete request head arrived

    def _say_closed(self) -> None:
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass


def _httptools_protocol() -> type | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools not installed
        return None

    class FastHeaderDeadlineProtocol(_Deadline, HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            self._cancel()  # a complete request head arrived
            super().on_headers_complete()

    return FastHeaderDeadlineProtocol


def protocol_class(header_timeout: float) -> type:
    """The fastest protocol installed, with this server's header deadline."""
    base = _httptools_protocol() or HeaderDeadlineProtocol
    return type("Protocol", (base,), {"header_timeout": header_timeout})
