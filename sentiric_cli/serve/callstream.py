"""Tool calls read out of an answer while it is written, for the streaming routes (OpenAI's tool-call deltas,
Anthropic's input_json_delta): the free text before the calls as it comes, each call's name as soon as it is
known, its arguments as their characters arrive.

Pure text. The arguments are the JSON the model writes, passed on as written; the final parse
(`tools.found`) decides the calls at the end, and a call the stream could not follow (arguments before the name,
say) is sent whole then.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from sentiric_cli.serve.tools import GENERIC, LLAMA3, MARKERS, PYTHON_TAG, ToolUse, found

_HEAD = r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"%s"\s*:\s*'


@dataclass
class Text:
    text: str


@dataclass
class CallStart:
    index: int
    name: str


@dataclass
class Arguments:
    index: int
    text: str


@dataclass
class _Call:
    name: str
    start: int  # where its arguments start in the answer
    sent: int = 0  # characters of its arguments passed on
    end: int | None = None  # where its arguments end, once written


def json_end(text: str, at: int) -> int | None:
    """The end of the JSON value that starts at `at` (an object, array or string; a bare value ends at a comma or
    a closing bracket), or None while it is unfinished."""
    depth, in_str, esc = 0, False, False
    for i in range(at, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
                if depth == 0:
                    return i + 1
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            if depth == 0:
                return i
            depth -= 1
            if depth == 0:
                return i + 1
        elif ch == "," and depth == 0:
            return i
    return None


@dataclass
class CallStream:
    """One answer's text, fed piece by piece (`feed`), read out as free text and calls; `finish` at the end."""
    use: ToolUse
    text: str = ""
    sent: int = 0  # characters of free text passed on
    calls: list[_Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.head = re.compile(_HEAD % self.use.args_key)
        self.marker = MARKERS.get(self.use.format)

    def feed(self, piece: str) -> list[Text | CallStart | Arguments]:
        self.text += piece
        out: list[Text | CallStart | Arguments] = []
        free, region = self._split()
        if free > self.sent:
            out.append(Text(self.text[self.sent:free]))
            self.sent = free
        if region is None:
            return out
        last = self.calls[-1] if self.calls else None
        at = region if last is None else last.start if last.end is None else last.end  # never inside an argument
        while True:
            if not self.calls or self.calls[-1].end is not None:
                m = self.head.search(self.text, at)
                if m is None:
                    return out
                self.calls.append(_Call(_unescape(m.group(1)), m.end()))
                out.append(CallStart(len(self.calls) - 1, self.calls[-1].name))
            call = self.calls[-1]
            while not call.sent and call.start < len(self.text) and self.text[call.start].isspace():
                call.start += 1  # the arguments start at their first character, not at the space before it
            if call.start >= len(self.text):
                return out
            end = json_end(self.text, call.start)
            upto = len(self.text) if end is None else end
            if upto - call.start > call.sent:
                out.append(Arguments(len(self.calls) - 1, self.text[call.start + call.sent:upto]))
                call.sent = upto - call.start
            if end is None:
                return out
            call.end = at = end

    def _split(self) -> tuple[int, int | None]:
        """(free text known so far ends here, calls start here or None while there are none yet)."""
        if self.use.format == GENERIC:  # all JSON: `{"response": ...}` is sent when parsed, at the end
            return 0, 0
        if self.use.format == LLAMA3:  # a call is the whole answer, known by its first characters
            lead = self.text.lstrip()
            if self.sent:  # already free text: stays so
                return len(self.text), None
            if not lead or PYTHON_TAG.startswith(lead):
                return 0, None  # not known yet
            return (0, 0) if lead.startswith(("{", PYTHON_TAG)) else (len(self.text), None)
        assert self.marker is not None
        hit = self.text.find(self.marker)
        if hit >= 0:
            return hit, hit
        keep = next((k for k in range(min(len(self.marker) - 1, len(self.text)), 0, -1)
                     if self.text.endswith(self.marker[:k])), 0)
        return len(self.text) - keep, None

    def finish(self) -> tuple[str, list[dict], int]:
        """At the end: (free text not yet passed on, every call as {"name", "arguments"}, how many of them were
        started in the stream)."""
        content, calls = found(self.text, self.use)
        streamed = self.text[:self.sent]
        rest = ""
        if content:
            for done in (streamed, streamed.strip()):
                if content.startswith(done):
                    rest = content[len(done):]
                    break
        return rest, calls, min(len(self.calls), len(calls))


def _unescape(s: str) -> str:
    try:
        return json.loads(f'"{s}"')
    except ValueError:
        return s
