"""A sequence's answer as text: token bytes decoded incrementally (UTF-8 split across tokens), stop strings found,
and what might be the start of one held back until it is known not to be."""

from __future__ import annotations

import codecs
from collections.abc import Callable

from sentiric_cli.engine.logprobs import LogprobLog, TokenLogprob


class TextStream:
    """`send(text, logprobs)` gets each piece that may go out. `lazy`: nobody reads the text before the end (no
    stream, no stop strings, no text offsets for logprobs): it is decoded once at the end, not token by token."""

    def __init__(self, stop: tuple[str, ...], top: LogprobLog | None, send: Callable[[str, list[TokenLogprob] | None], None]
                 | None) -> None:
        self.stop, self.top, self.out = stop, top, send
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.sent, self.top_sent = "", 0, 0
        self.matched: str | None = None  # the stop string that ended the answer
        self.lazy = send is None and not stop and top is None

    def add(self, piece: bytes) -> bool:
        """A generated token's bytes (not called when lazy); True when a stop string matched (the text ends before
        it)."""
        self.text += self.decoder.decode(piece)
        return self._emit()

    def finish(self, pieces: list[bytes], stopped: bool) -> str:
        """The whole answer; `pieces`: every generated token's bytes (read only when lazy). Cut on length (not
        `stopped`), a held-back start of a stop string is not part of the answer."""
        if self.lazy:
            self.text = self.decoder.decode(b"".join(pieces), final=True)
        else:
            self.text += self.decoder.decode(b"", final=True)
        if not stopped:
            self.text = self.text[:len(self.text) - partial_stop(self.text, self.stop)]
        self._send(len(self.text))
        return self.text

    def _emit(self) -> bool:
        """Send new text, holding back what could be the start of a stop string. True when one matched."""
        if not self.stop:
            self._send(len(self.text))
            return False
        for s in self.stop:
            hit = self.text.find(s, max(self.sent - len(s), 0))
            if hit >= 0:
                self.text, self.matched = self.text[:hit], s
                self._send(len(self.text))
                return True
        hold = max((len(s) - 1 for s in self.stop), default=0)
        self._send(len(self.text) - hold)
        return False

    def _send(self, upto: int) -> None:
        if upto <= self.sent:
            return
        if self.out is not None:
            lps = None
            if self.top is not None:  # the tokens this text came from (those starting before its end)
                end = self.top.before(upto, lo=self.top_sent)
                lps, self.top_sent = self.top.entries(self.top_sent, end), end
            self.out(self.text[self.sent:upto], lps)
        self.sent = upto  # nobody reads the pieces (quiet): the record carries the text


def partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the start of a stop string."""
    return max((k for s in stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), default=0)
