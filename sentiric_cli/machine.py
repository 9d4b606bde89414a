"""This machine, as the rooms above read it: its CPU (/proc/cpuinfo) and where sentiric caches what it measured
(the CPU path's verdicts, llama.cpp wheels, remote GGUF headers, the RAM's bandwidth). Standard library only."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path


@cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_info() -> tuple[str, list[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; ("", []) where there is none."""
    name, flags = "", list[str]()
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = value.split()
        if name and flags:
            break
    return name, flags


def cpu_mhz() -> float:
    """The fastest clock /proc/cpuinfo reports for a core now (0.0 where it reports none)."""
    return max((float(x) for x in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", _cpuinfo(), re.M)), default=0.0)


def cache_dir() -> Path:
    """$SENTIRIC_CACHE_DIR, else $XDG_CACHE_HOME/sentiric, else ~/.cache/sentiric."""
    if os.environ.get("SENTIRIC_CACHE_DIR"):
        return Path(os.environ["SENTIRIC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sentiric"
