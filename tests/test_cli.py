"""The real console entry point in a subprocess: exit codes, stderr, --json, --write-profile."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from clirun import _env, assert_user_error, run
from synth import write_model
from waits import WAIT

from sentiric_cli.gguf.header import read_header
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.planner import make_plan
from sentiric_cli.settings import FIELDS, load_settings

MEMORY_KEYS = {"weights_device_bytes", "weights_host_bytes", "kv_bytes", "kv_bytes_per_thread", "compute_bytes",
               "total_device_bytes"}


def run_many(calls: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, subprocess.CompletedProcess]:
    """Start every call at once (each is a fresh interpreter), then collect them: keeps the suite fast."""
    procs = {name: subprocess.Popen([sys.executable, "-m", "sentiric_cli", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=_env(env))
             for name, (args, env) in calls.items()}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=WAIT)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


# ---------------------------------------------------------------- bad input


def _missing(tmp_path):
    return [str(tmp_path / "nope.gguf")], {}, ["no such file", "nope.gguf"]


def _directory(tmp_path):
    return [str(tmp_path)], {}, ["is a directory"]


def _not_gguf(tmp_path):
    p = tmp_path / "notes.gguf"
    p.write_text("these are my notes, not a model\n" * 20)
    return [str(p)], {}, ["not a GGUF file (bad magic)"]


def _empty(tmp_path):
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    return [str(p)], {}, ["empty file"]


def _truncated(tmp_path):
    src = write_model(tmp_path / "full.gguf", "llama")
    p = tmp_path / "cut.gguf"
    p.write_bytes(src.read_bytes()[:3000])  # inside the vocabulary
    return [str(p)], {}, ["GGUF header"]


def _bad_metadata(tmp_path):
    p = write_model(tmp_path / "m.gguf", "llama", context_length="big")  # a string where a count belongs
    return [str(p)], {}, ["context_length = 'big' is not a valid count"]


def _bad_profile(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("threads: 2\ngpu_layerz: 5\n")
    return ["--profile", str(p)], {}, [str(p), "gpu_layerz", "unknown setting"]


def _missing_profile(tmp_path):
    return ["--profile", "no-such-profile"], {}, ["no such file", "cpu-gemma3-270m"]


def _bad_env(tmp_path):
    return [], {"LLM_LLAMA_SERVICE_THREADS": "zero"}, ["LLM_LLAMA_SERVICE_THREADS", "'zero'"]


def _bad_vram(tmp_path):
    return ["--vram", "banana"], {}, ["cannot read memory size 'banana'"]


def _name_too_long(tmp_path):
    return ["x" * 5000 + ".gguf"], {}, ["File name too long"]


BAD_INPUT = [_missing, _directory, _not_gguf, _empty, _truncated, _bad_metadata, _bad_profile, _missing_profile,
             _bad_env, _bad_vram, _name_too_long]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict:
    cases = {case.__name__: case(tmp_path_factory.mktemp(case.__name__)) for case in BAD_INPUT}
    results = run_many({name: (["plan", *args, "--json"], env) for name, (args, env, _) in cases.items()})
    return {name: (results[name], cases[name][2]) for name in cases}


@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda f: f.__name__.lstrip("_"))
def test_bad_input_is_one_line_and_exit_2(bad_runs, case):
    result, expected = bad_runs[case.__name__]
    assert_user_error(result, *expected)


def test_debug_shows_the_traceback(tmp_path):
    r = run("plan", str(tmp_path / "nope.gguf"), env={"SENTIRIC_DEBUG": "1"})
    assert r.returncode not in (0, 2)
    assert "Traceback" in r.stderr and "SentiricError" in r.stderr and "no such file" in r.stderr


# ---------------------------------------------------------------- planning


@pytest.fixture(scope="module")
def plain_plan() -> dict:
    r = run("plan", "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)  # the whole of stdout is one JSON object


def test_plan_json_shape(plain_plan, bundled):
    p = plain_plan
    assert isinstance(p, dict)
    assert {"model", "device", "memory", "options", "recommendation"} <= p.keys()
    assert p["model"]["path"] == str(bundled) and p["model"]["architecture"] == "gemma3"
    assert p["device"]["kind"] in ("host", "gpu")
    mem = p["memory"]
    assert MEMORY_KEYS <= mem.keys()
    assert all(isinstance(mem[k], int) and mem[k] >= 0 for k in MEMORY_KEYS)
    assert mem["total_device_bytes"] > mem["kv_bytes"] > 0 and mem["compute_bytes"] > 0
    assert isinstance(p["options"], list) and p["options"]
    assert all({"context", "threads", "kv_bytes", "total_device_bytes", "verdict"} <= row.keys()
               for row in p["options"])
    rec = p["recommendation"]
    assert isinstance(rec, dict) and set(rec) == set(FIELDS)
    assert rec["model"] in (None, str(bundled))  # None: the bundled model
    assert mem["kv_bytes_per_thread"] * rec["threads"] == mem["kv_bytes"]


def test_vram_too_small_exits_1():
    r = run("plan", "--json", "--vram", "64MiB")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    p = json.loads(r.stdout)
    assert p["fits"] is False and p["memory"]["verdict"] == "does not fit"
    assert p["device"]["kind"] == "vram" and p["device"]["free_bytes"] == 64 * 1024 * 1024


def test_write_profile_round_trips_and_never_overwrites(tmp_path):
    target = tmp_path / "mine.yaml"
    r = run("plan", "--json", "--write-profile", str(target))
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["recommendation"]
    assert load_settings(str(target), None, {}).model_dump() == rec
    assert target.read_text().startswith("# written by `sentiric")

    mine = "# my own settings\nthreads: 3\n"
    target.write_text(mine)
    again = run("plan", "--json", "--write-profile", str(target))
    assert_user_error(again, "exists", "not overwriting")
    assert target.read_text() == mine

    forced = run("plan", "--json", "--write-profile", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_settings(str(target), None, {}).model_dump() == json.loads(forced.stdout)["recommendation"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["mine.yaml"]  # no temporary files left behind


def test_write_profile_into_a_missing_directory(tmp_path):
    r = run("plan", "--json", "--write-profile", str(tmp_path / "no" / "such" / "dir.yaml"))
    assert_user_error(r, "cannot write")


def test_pinned_context_and_threads():
    r = run("plan", "--json", "--context", "8192", "--threads", "2")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert (p["recommendation"]["context_size"], p["recommendation"]["threads"]) == (8192, 2)
    assert (p["settings"]["context"], p["settings"]["threads"]) == (8192, 2)
    assert {(o["context"], o["threads"]) for o in p["options"]} == {(8192, 2)}


def test_table_output(plain_plan):
    r = run("plan")
    assert r.returncode == 0, r.stderr
    assert "Recommended profile" in r.stdout and "Gemma 3 270m" in r.stdout
    assert f"context_size: {plain_plan['recommendation']['context_size']}" in r.stdout


def test_help_and_version():
    runs = run_many({"help": (["--help"], {}), "plan help": (["plan", "--help"], {}),
                     "version": (["--version"], {})})
    for name, expected in (("help", "plan"), ("plan help", "--write-profile"), ("version", "sentiric 0.1.0")):
        assert runs[name].returncode == 0, (name, runs[name].stderr)
        assert expected in runs[name].stdout, name


def test_plans_the_bundled_model_in_well_under_a_second(bundled):
    """Product requirement (README): plans in well under a second."""
    settings = load_settings(None, None, {})
    host = Device("host", "host RAM", 16 * 1024**3, 16 * 1024**3)
    start = time.perf_counter()
    header = read_header(bundled)
    plan = make_plan(header, model_info(header), host, settings)
    elapsed = time.perf_counter() - start
    assert plan.fits
    assert elapsed < 1.0, f"planning took {elapsed:.2f} s"


# ---------------------------------------------------------------- an architecture sentiric does not know


def _write_foo(path: Path) -> Path:
    w = gguf.GGUFWriter(str(path), "foo")
    w.add_name("foo-test")
    for key, value in {"block_count": 2, "context_length": 2048, "embedding_length": 64,
                       "feed_forward_length": 128, "attention.head_count": 4, "attention.head_count_kv": 2}.items():
        w.add_uint32(f"foo.{key}", value)
    w.add_tensor("token_embd.weight", np.zeros((256, 64), dtype=np.float32))
    for i in range(2):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", np.zeros((64, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unknown_architecture_plans_with_a_warning(tmp_path):
    model = _write_foo(tmp_path / "foo.gguf")
    r = run("plan", str(model))
    assert r.returncode == 0, r.stderr
    err = " ".join(r.stderr.split())
    assert "warning:" in err and "architecture 'foo' is not one sentiric knows" in err
    assert "Traceback" not in r.stderr

    j = run("plan", str(model), "--json")
    assert j.returncode == 0, j.stderr
    p = json.loads(j.stdout)
    assert p["model"]["architecture"] == "foo" and p["model"]["known_architecture"] is False
    assert p["model"]["n_layer"] == 2 and p["model"]["n_vocab"] == 256
    assert any("'foo'" in w for w in p["warnings"])


def test_usage_errors_are_one_line_too(bundled):
    calls = {"low": (["plan", str(bundled), "--context", "5"], {}),
             "unknown": (["plan", str(bundled), "--bogus"], {}),
             "command": (["nosuch"], {})}
    done = run_many(calls)
    assert_user_error(done["low"], "--context")
    assert_user_error(done["unknown"], "--bogus")
    assert_user_error(done["command"], "nosuch")


def test_ubatch_above_the_default_batch_lifts_the_batch(bundled):
    r = run("plan", str(bundled), "--ubatch", "4096", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["recommendation"]
    assert rec["ubatch_size"] == 4096 and rec["batch_size"] == 4096
    # the compute buffer is sized by the 4096-token ubatch: the logits alone are 4096 x 262144 x 4 bytes
    assert json.loads(r.stdout)["memory"]["compute_bytes"] >= 4096 * 262144 * 4


def test_written_profile_is_an_ordinary_readable_file(bundled, tmp_path):
    target = tmp_path / "p.yaml"
    r = run("plan", str(bundled), "--write-profile", str(target))
    assert r.returncode == 0, r.stderr
    assert target.stat().st_mode & 0o044  # not mkstemp's 0600
    assert not list(tmp_path.glob(".sentiric-*"))  # no temporary file left behind


def test_unknown_architecture_llama_cpp_refuses_is_one_line(tmp_path):
    """--measure on an architecture llama.cpp does not know either: a clear error, not a crash."""
    model = _write_foo(tmp_path / "foo.gguf")
    r = run("plan", str(model), "--measure")
    assert_user_error(r, "--measure: llama.cpp could not load the model")
