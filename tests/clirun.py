"""The real console entry point in a subprocess, and the shape of a user error: shared by the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys

from waits import WAIT


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLM_LLAMA_SERVICE_") and k != "SENTIRIC_DEBUG"}
    clean["COLUMNS"] = "200"  # rich wraps at the terminal width; keep messages on one line
    return {**clean, **(extra or {})}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentiric_cli", *args], capture_output=True, text=True,
                          env=_env(env), timeout=WAIT)


def assert_user_error(r: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit 2, exactly one line on stderr starting `sentiric: error:`, no traceback, nothing on stdout."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sentiric: error: "), lines[0]
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]
