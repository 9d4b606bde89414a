"""Peak memory does not grow with the document: a 16x document against a 4x one, in real processes."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import sys
from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.types import Record, Request
from sentiric_cli.settings import Settings
from sentiric_cli.bundled import bundled_model
times = int(sys.argv[1])
s = Settings(context_size=256, swa_full=True, max_tokens=4)
with Engine(s, bundled_model()) as e:
    m = e.model
    filler = m.tokenize("The grass is green. The sky is blue. The sun is yellow. Here we go. " * 600)
    body = (filler * 4)[: times * 256]
    for ev in e.stream(Request(head=[m.bos], body=body, max_tokens=4)):
        if isinstance(ev, Record):
            assert ev.document_tokens == times * 256 and ev.max_fill <= 256, ev
"""


def peak_rss_kib(times: int) -> int:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(times)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode()[-2000:]
    return usage.ru_maxrss


def test_peak_rss_is_flat_in_document_length():
    small, large = peak_rss_kib(4), peak_rss_kib(16)
    assert large <= small * 1.10, (small, large)
