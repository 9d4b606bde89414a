"""llama.cpp's log: one global callback for the process. Dropped unless verbose; the last lines kept to explain a
failure (last_log); taps for whoever reads the log itself (the planner's dry run, the CPU probe). The callback and
llama.cpp's backend are set up once, when the first model or context is made, not at import."""

from __future__ import annotations

import ctypes
import sys
from collections import deque
from typing import Any

from llama_cpp import llama_cpp as C

_log_state: dict[str, Any] = {"verbose": False, "tail": deque(maxlen=20), "taps": []}


@C.llama_log_callback
def _log(level, text, user):  # noqa: ARG001 - ctypes callback signature
    line = text.decode("utf-8", errors="replace")
    _log_state["tail"].append(line)
    for tap in _log_state["taps"]:
        tap.append(line)
    if _log_state["verbose"]:
        sys.stderr.write(line)


_ready = False


def init_backend() -> None:
    """llama.cpp's log callback and backend, once, when the first model or context is made (not at import: the
    planner and the tests import this module without loading anything)."""
    global _ready
    if not _ready:
        C.llama_log_set(_log, ctypes.c_void_p(0))
        C.llama_backend_init()
        _ready = True


def set_verbose(verbose: bool) -> None:
    _log_state["verbose"] = verbose


def log_enabled() -> bool:
    return bool(_log_state["verbose"])


def tap_log(lines: list[str]) -> None:
    """Also append llama.cpp's log lines to `lines` (llama.cpp has one global log callback: this is it)."""
    init_backend()
    _log_state["taps"].append(lines)


def last_log() -> str:
    lines = [x.strip() for x in _log_state["tail"] if x.strip()]
    return lines[-1] if lines else "no message from llama.cpp"
