"""The CPU path probe (issue 8): a child that can crash decides, the user's process never does.

The decisions are shown with real child processes that really die with SIGILL or really succeed, so no
AMX-trapping CPU is needed; the real probe runs on this machine's real llama.cpp build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import assert_user_error
from waits import WAIT

from sentiric_cli.engine import cpupath
from sentiric_cli.engine.cpupath import CpuPath, ProbeRun, cpu_path, decide, require_runnable
from sentiric_cli.errors import SentiricError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def child(code: str) -> ProbeRun:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    return ProbeRun(p.returncode, p.stdout, p.stderr)


SIGILL = "print('buffers:CPU_Mapped,AMX,CPU_REPACK', flush=True); import os, signal; os.kill(os.getpid(), signal.SIGILL)"
OK_REPACK = "print('buffers:CPU_Mapped,CPU_REPACK'); print('decoded')"
OK_AMX = "print('buffers:CPU_Mapped,AMX,CPU_REPACK'); print('decoded')"
OK_PLAIN = "print('buffers:CPU_Mapped'); print('decoded')"


def test_a_child_killed_by_sigill_falls_back_to_plain_weights():
    calls = []

    def run(extra: bool) -> ProbeRun:
        calls.append(extra)
        return child(SIGILL if extra else OK_PLAIN)

    v = decide(run)
    assert calls == [True, False]
    assert (v.path, v.extra_bufts) == ("plain", False)
    assert "AMX" in v.note and "SIGILL" in v.note  # says what crashed and how


def test_a_child_that_succeeds_keeps_the_fastest_path():
    assert decide(lambda extra: child(OK_REPACK)) == CpuPath("repack", True, ("CPU_Mapped", "CPU_REPACK"))
    assert decide(lambda extra: child(OK_AMX)).path == "amx"
    plain = decide(lambda extra: child(OK_PLAIN))
    assert (plain.path, plain.extra_bufts) == ("plain", True)  # nothing to repack, but nothing switched off


def test_when_every_child_dies_the_user_gets_one_clear_error():
    v = decide(lambda extra: child(SIGILL))
    assert v.path == "none" and "SIGILL" in v.note
    with pytest.raises(SentiricError, match="llama.cpp cannot run on this CPU"):
        require_runnable(v)


def test_the_verdict_is_cached_per_machine_and_build(tmp_path, monkeypatch):
    monkeypatch.delenv("SENTIRIC_CPU_PATH", raising=False)
    file = tmp_path / "cpu-path.json"
    calls = []

    def run(extra: bool) -> ProbeRun:
        calls.append(extra)
        return ProbeRun(0, "buffers:CPU_Mapped,CPU_REPACK\ndecoded\n")

    assert cpu_path(run, file).path == "repack"
    assert cpu_path(run, file).path == "repack"
    assert calls == [True]  # the second start read the cache
    assert json.loads(file.read_text())[cpupath.cache_key()]["path"] == "repack"
    monkeypatch.setattr(cpupath, "_llama_build_id", lambda: "another llama.cpp build")
    assert cpu_path(run, file).path == "repack"
    assert calls == [True, True]  # a rebuilt llama.cpp is probed again


def test_a_failed_probe_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("SENTIRIC_CPU_PATH", raising=False)
    file = tmp_path / "cpu-path.json"
    assert cpu_path(lambda extra: ProbeRun(-4, ""), file).path == "none"
    assert not file.exists()


def test_the_environment_can_force_a_path(monkeypatch):
    monkeypatch.setenv("SENTIRIC_CPU_PATH", "plain")
    assert cpu_path(lambda extra: pytest.fail("no probe when forced")).extra_bufts is False
    monkeypatch.setenv("SENTIRIC_CPU_PATH", "fast")
    with pytest.raises(SentiricError, match="SENTIRIC_CPU_PATH"):
        cpu_path()


def test_the_real_probe_decodes_on_this_machine():
    for extra in (True, False):
        r = cpupath.run_probe_child(extra)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "decoded" in r.stdout
        bufs = cpupath._buffers(r.stdout)
        assert any(b.startswith("CPU") for b in bufs), r.stdout
        if not extra:
            assert "CPU_REPACK" not in bufs and "AMX" not in bufs
    assert require_runnable(decide(cpupath.run_probe_child)).path in ("amx", "repack", "plain")


def test_run_exits_2_with_one_line_when_llama_cpp_cannot_run_here(tmp_path):
    # the cache says a probe here crashed every way: the command must not even try to load the model
    verdict = {"path": "none", "extra_bufts": False, "buffers": [], "note": "llama.cpp crashed (killed by SIGILL)"}
    (tmp_path / "cpu-path.json").write_text(json.dumps({cpupath.cache_key(): verdict}))
    env = {**os.environ, "SENTIRIC_CACHE_DIR": str(tmp_path), "COLUMNS": "200"}
    env.pop("SENTIRIC_CPU_PATH", None)
    r = subprocess.run([sys.executable, "-m", "sentiric_cli", "run", "Once upon a time", "-n", "4"],
                       capture_output=True, text=True, env=env, timeout=WAIT, stdin=subprocess.DEVNULL)
    assert_user_error(r, "llama.cpp cannot run on this CPU", "SIGILL", "make install")


def test_amx_tiles_are_tried_in_a_child_only_where_advertised():
    assert cpupath.amx_tiles_work(flags=["avx2", "avx512f"]) is None
    has_amx = all(f in cpupath.cpu_info()[1] for f in cpupath.AMX_FLAGS)
    if not has_amx:
        # this CPU has no AMX: running a tile instruction must fail in the child, and we are still here
        assert cpupath.amx_tiles_work(flags=list(cpupath.AMX_FLAGS)) is False


def _install_llama(*args: str, env: dict[str, str]) -> str:
    p = subprocess.run([sys.executable, str(SCRIPTS / "install_llama.py"), *args], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=WAIT)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_a_changed_build_flag_never_reuses_a_wheel_built_without_it(tmp_path):
    # an empty cache: no AMX verdict kept by an earlier install on this machine
    base = {"CMAKE_ARGS": "", "CFLAGS": "", "CXXFLAGS": "", "SENTIRIC_NO_AMX": "0", "SENTIRIC_CACHE_DIR": str(tmp_path)}
    plain = _install_llama("--key", env=base)
    assert _install_llama("--key", env=base) == plain  # stable
    assert _install_llama("--key", env={**base, "CMAKE_ARGS": "-DGGML_NATIVE=OFF"}) != plain
    no_amx = _install_llama("--key", env={**base, "SENTIRIC_NO_AMX": "1"})
    assert no_amx != plain  # building without AMX is another wheel
    assert _install_llama("--cflags", env={**base, "SENTIRIC_NO_AMX": "1"}) == "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def test_the_no_amx_flags_really_switch_amx_off_under_march_native():
    # what the build relies on: explicit -mno-amx-* win over -march=native, in either order
    import shutil
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    for flags in (["-march=native", "-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"],
                  ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16", "-march=native"],
                  ["-march=sapphirerapids", "-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"]):
        macros = subprocess.run([cc, *flags, "-dM", "-E", "-"], input="", capture_output=True, text=True).stdout
        assert "__AMX_INT8__" not in macros and "__AMX_TILE__" not in macros, flags
    macros = subprocess.run([cc, "-march=sapphirerapids", "-dM", "-E", "-"], input="", capture_output=True, text=True).stdout
    assert "__AMX_INT8__" in macros  # the control: the same compiler does enable AMX without them


SIGSEGV_AMX = "print('buffers:AMX,CPU_Mapped', flush=True); import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
SIGSEGV_REPACK = "print('buffers:CPU_REPACK,CPU_Mapped', flush=True); import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"


def test_the_install_sees_amx_kernels_that_crash_where_the_tile_instruction_runs(tmp_path):
    """Issue 22: an Intel Xeon KVM guest runs `tilezero` but llama.cpp's AMX kernels die with SIGSEGV. The install
    asks the probe child, remembers the crash per CPU and builds without AMX from then on (repacking kept)."""
    asked = []
    assert cpupath.amx_buffers_crash(lambda extra: asked.append(extra) or child(SIGSEGV_AMX)) == "killed by SIGSEGV"
    assert asked == [True]  # with the extra buffers, where the AMX kernels are
    assert cpupath.amx_buffers_crash(lambda extra: child(OK_AMX)) is None
    assert cpupath.amx_buffers_crash(lambda extra: child(SIGSEGV_REPACK)) is None  # not AMX: building without it won't help
    assert cpupath.amx_buffers_crash(lambda extra: ProbeRun(124, "buffers:AMX,CPU_Mapped\n", "no answer")) is None  # a timeout

    env = {"CMAKE_ARGS": "", "CFLAGS": "", "CXXFLAGS": "", "SENTIRIC_NO_AMX": "0", "SENTIRIC_CACHE_DIR": str(tmp_path)}
    before, flags_before = _install_llama("--key", env=env), _install_llama("--cflags", env=env)
    remember = ("import sys; sys.path.insert(0, sys.argv[1]); import install_llama; "
                "install_llama.remember_amx_crash('killed by SIGSEGV')")
    subprocess.run([sys.executable, "-c", remember, str(SCRIPTS)], env={**os.environ, **env}, check=True, timeout=WAIT)
    assert json.loads((tmp_path / "amx-kernels.json").read_text())  # one verdict, for this CPU
    assert _install_llama("--cflags", env=env) == "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    assert _install_llama("--key", env=env) != before  # another wheel: the one without AMX
    assert _install_llama("--cflags", env={**env, "SENTIRIC_CACHE_DIR": str(tmp_path / "other")}) == flags_before
    v3 = {**env, "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DGGML_AVX2=ON"}  # no -march=native: nothing to compile out
    assert _install_llama("--cflags", env=v3) == ""
