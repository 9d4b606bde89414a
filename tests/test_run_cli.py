"""`sentiric run` as a user runs it: real processes, real exit codes, real stdin and signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from waits import WAIT

# every test here asserts what the model writes (tokens, text or logits): `make test-v3` runs them on a second build
pytestmark = pytest.mark.text

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 60


def sentiric(*args: str, stdin: bytes | None = None, timeout: float = WAIT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_LLAMA_SERVICE_")} | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sentiric_cli", "run", *args], input=stdin or b"",
                          capture_output=True, timeout=timeout, env=env)


def one_line_error(r: subprocess.CompletedProcess, text: str) -> None:
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    assert len(err.splitlines()) == 1 and err.startswith("sentiric: error: ") and text in err, err
    assert "Traceback" not in err


# The window strategy answers from whatever the window holds at the end, through a plain "Question/Answer:" frame.
# What this base model writes there is one greedy continuation that flips between CPU kernels: on AVX-512 it
# answered "banana" for a secret word, on AVX2 "\nAnswer:\nAnswer:" (issue 22); for a pass key it begins
# " The pass key is the 48" on one build and " 90210 is the" or " The pass key is the key that" for other keys.
# So these tests assert what the command does (streams an answer, keeps the needle in the window, reports the
# shifts and the evictions, exits 0); whether the model answers from the window is asserted, on frames it answers
# robustly, by test_engine's and test_longdoc's pass-key tests.
KEY = 48213
NEEDLE = f" The pass key is {KEY}. Remember it. {KEY} is the pass key. "
DOCUMENT = FILLER + NEEDLE


def test_answer_over_a_document_streams_and_summarises(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text(DOCUMENT)
    r = sentiric("-f", str(doc), "-c", "512", "-n", "8", "--strategy", "window", "What is the pass key?")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip()  # an answer was streamed to stdout
    summary = r.stderr.decode()
    assert "through a 512-token window" in summary and "shifts" in summary and "evicted" in summary
    assert re.search(r"\b[1-8] tokens \((length|stop)\)", summary), summary  # at most -n tokens, and why it ended


def test_json_has_the_answer_and_the_record_and_reads_stdin():
    r = sentiric("-c", "512", "-n", "8", "--json", "--strategy", "window", "What is the pass key?",
                 stdin=DOCUMENT.encode())
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    rec = out["record"]
    assert out["answer"].strip() and out["answer"] == out["longdoc"]["answer"]
    assert 1 <= rec["generated_tokens"] <= 8 and rec["finish_reason"] in ("length", "stop")
    assert rec["document_tokens"] > 512 and rec["path"] == "shift" and rec["max_fill"] <= 512
    assert rec["evicted_spans"] and rec["evicted_byte_spans"][0][0] == 0
    at = DOCUMENT.encode().index(NEEDLE.encode())  # the needle is near the end: the window still holds it
    assert any(s <= at and at + len(NEEDLE) - 1 <= e for s, e in rec["kept_byte_spans"]), rec["kept_byte_spans"]
    assert {"prefill_tokens_per_s", "generation_tokens_per_s", "shifts", "evicted_tokens", "kept_spans"} <= rec.keys()


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    latin = tmp_path / "l.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    not_model = tmp_path / "m.gguf"
    not_model.write_text("hello")
    one_line_error(sentiric("-f", str(tmp_path / "missing.txt"), "q"), "no such file")
    one_line_error(sentiric("-f", str(tmp_path), "q"), "directory")
    one_line_error(sentiric("-f", str(binary), "q"), "binary")
    one_line_error(sentiric("-f", str(latin), "q"), "UTF-8")
    one_line_error(sentiric("   "), "prompt is empty")
    one_line_error(sentiric("-m", str(not_model), "q"), "not a GGUF")


def test_ctrl_c_stops_cleanly_with_what_was_generated():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_LLAMA_SERVICE_")}
    # Ctrl-C as a terminal gives it, whatever this test was started under: a background job of a shell without job
    # control (`make test &` in a script) starts with SIGINT ignored, and Python then keeps it ignored
    restore = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "runpy.run_module('sentiric_cli', run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen([sys.executable, "-c", restore, "run", "-n", "2000", "--temperature", "0.8",
                             "--seed", "1", "Once upon a time"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    first = proc.stdout.read(20)  # wait until it is generating
    assert first
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()
    assert "interrupted" in err.decode()
    assert len((first + rest).decode(errors="replace").strip()) > 20
