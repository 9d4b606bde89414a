"""Which CPU path llama.cpp may take on this machine: AMX, repacked weights, or plain.

llama.cpp built with -march=native compiles in every kernel the CPU advertises. Some virtual machines
advertise AMX (and grant the kernel permission for it) but trap its tile instructions: the first
decode then dies with SIGILL, which no process survives. So the question is asked once, in a child
process (`python -m sentiric_cli.engine.cpu_probe`), and the verdict is cached per machine and llama.cpp build:

1. the child loads a tiny model whose weights every extra buffer type (AMX, CPU_REPACK) takes, and
   decodes a batch and a single token with them: it survives -> "amx" or "repack", as llama.cpp chose;
2. it died -> again with `use_extra_bufts = false` (weights used as stored) -> "plain";
3. that died too -> llama.cpp cannot run here: one clear error, never exit 132.

`make install` avoids step 2 on AMX-trapping machines by building llama.cpp without AMX (docs/cpu.md);
this probe is the safety net for any other build. SENTIRIC_CPU_PATH=extra|plain skips the probe.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sentiric_cli.errors import SentiricError
from sentiric_cli.machine import cache_dir, cpu_info

PROBE_TIMEOUT_S = 180
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class CpuPath:
    path: str  # "amx", "repack", "plain" or "none" (llama.cpp cannot run here)
    extra_bufts: bool  # llama_model_params.use_extra_bufts
    buffers: tuple[str, ...] = ()  # weight buffer types llama.cpp used in the probe
    note: str = ""  # why, when it is not the fastest path the build offers

    def describe(self) -> str:
        text = {"amx": "AMX tiles (weights in the AMX buffer)", "repack": "repacked weights (CPU_REPACK)",
                "plain": "plain (weights used as stored)", "none": "none"}[self.path]
        return f"{text}; {self.note}" if self.note else text


@dataclass(frozen=True)
class ProbeRun:
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str = ""


def _llama_build_id() -> str:
    """llama-cpp-python's version and its shared libraries (name, size, mtime): a rebuild changes it."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    parts = [version]
    spec = importlib.util.find_spec("llama_cpp")
    if spec and spec.origin:
        lib = Path(spec.origin).parent / "lib"
        for p in sorted(lib.glob("*")) if lib.is_dir() else []:
            st = p.stat()
            parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def cache_key() -> str:
    name, flags = cpu_info()
    text = "\n".join([name, " ".join(sorted(flags)), _llama_build_id(), sys.platform])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _why(run: ProbeRun) -> str:
    if run.returncode < 0:
        return f"killed by {_signal_name(run.returncode)}"
    last = [x for x in (run.stderr + run.stdout).strip().splitlines() if x.strip()]
    return f"exit {run.returncode}" + (f": {last[-1].strip()[:200]}" if last else "")


def _buffers(stdout: str) -> tuple[str, ...]:
    for line in stdout.splitlines():
        if line.startswith("buffers:"):
            return tuple(x for x in line[len("buffers:"):].split(",") if x)
    return ()


def decide(run: Callable[[bool], ProbeRun]) -> CpuPath:
    """The verdict from probe runs: run(extra_bufts) loads and decodes in a child and reports."""
    first = run(True)
    if first.returncode == 0:
        bufs = _buffers(first.stdout)
        path = "amx" if "AMX" in bufs else "repack" if "CPU_REPACK" in bufs else "plain"
        note = "" if path != "plain" else "this llama.cpp build has no weight repacking for this CPU"
        return CpuPath(path, True, bufs, note)
    tried = _buffers(first.stdout)  # printed before the decode: what was in use when it died
    culprit = "AMX" if "AMX" in tried else "+".join(x for x in tried if x not in ("CPU", "CPU_Mapped")) or "extra"
    second = run(False)
    if second.returncode == 0:
        return CpuPath("plain", False, _buffers(second.stdout),
                       f"the {culprit} weight buffers crashed llama.cpp here ({_why(first)}), so weights are not "
                       "repacked; `make install` rebuilds llama.cpp for this CPU")
    return CpuPath("none", False, tried, f"llama.cpp crashed even with plain weights ({_why(second)}; with extra "
                                         f"buffers: {_why(first)})")


def amx_buffers_crash(run: Callable[[bool], ProbeRun] | None = None) -> str | None:
    """How the probe child died with llama.cpp's AMX weight buffers in use (e.g. "killed by SIGSEGV"), else None.

    For the install: some VMs run a tile instruction but crash llama.cpp's AMX kernels (seen: SIGSEGV on an
    Intel Xeon KVM guest, issue 22), which the tile check alone cannot see; only a build without AMX keeps the
    repacked weights there."""
    first = (run or run_probe_child)(True)
    if first.returncode >= 0 or "AMX" not in _buffers(first.stdout):
        return None  # only a death by a signal: a timeout under load or an exception is no verdict to keep
    return _why(first)


def run_probe_child(extra_bufts: bool) -> ProbeRun:
    cmd = [sys.executable, "-m", "sentiric_cli.engine.cpu_probe", "--extra-bufts" if extra_bufts else "--plain"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return ProbeRun(124, out, f"no answer within {PROBE_TIMEOUT_S} s")
    return ProbeRun(p.returncode, p.stdout, p.stderr)


def _load_cache(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(file: Path, key: str, verdict: CpuPath) -> None:
    data = _load_cache(file)
    data[key] = asdict(verdict)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=file.parent, delete=False, suffix=".tmp") as f:
            json.dump(data, f, indent=1)
        os.replace(f.name, file)
    except OSError:
        pass  # a read-only home: probe again next time, still correct


_verdict: CpuPath | None = None


def cpu_path(run: Callable[[bool], ProbeRun] = run_probe_child, cache_file: Path | None = None) -> CpuPath:
    """This machine's verdict: forced by SENTIRIC_CPU_PATH, else cached, else probed in a child now."""
    global _verdict
    forced = os.environ.get("SENTIRIC_CPU_PATH", "auto").strip().lower()
    if forced in ("extra", "plain"):
        return CpuPath("plain" if forced == "plain" else "repack", forced == "extra", (), "set by SENTIRIC_CPU_PATH")
    if forced != "auto":
        raise SentiricError(f"SENTIRIC_CPU_PATH={forced!r} is not one of auto, extra, plain", "unset it or pick one")
    if _verdict is not None and run is run_probe_child and cache_file is None:
        return _verdict
    file = cache_file or cache_dir() / "cpu-path.json"
    key = cache_key()
    hit = _load_cache(file).get(key)
    verdict = None
    if isinstance(hit, dict):
        try:
            verdict = CpuPath(hit["path"], bool(hit["extra_bufts"]), tuple(hit.get("buffers", ())), hit.get("note", ""))
        except (KeyError, TypeError):
            verdict = None
    if verdict is None:
        verdict = decide(run)
        if verdict.path != "none":  # a failure may be passing (a timeout under load): ask again next time
            _save_cache(file, key, verdict)
    if run is run_probe_child and cache_file is None:
        _verdict = verdict
    return verdict


def require_runnable(verdict: CpuPath) -> CpuPath:
    if verdict.path == "none":
        raise SentiricError(f"llama.cpp cannot run on this CPU: {verdict.note}",
                            "rebuild llama-cpp-python for this machine with `make install`; docs/cpu.md explains")
    return verdict


# ------------------------------------------------------------------ AMX tiles, for the build step

# ldtilecfg [rdi]; tilezero tmm0; tilerelease; xor eax, eax; ret  (raw bytes: no assembler needed)
_AMX_CODE = bytes.fromhex("c4e2784907" "c4e27b49c0" "c4e27849c0" "31c0" "c3")

_AMX_CHILD = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
# ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): what llama.cpp asks before using AMX
if libc.syscall(158, 0x1023, 18) != 0:
    print("no-permission"); sys.exit(3)
code = bytes.fromhex(sys.argv[1])
mem = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
mem.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(addr)
cfg = (ctypes.c_uint8 * 64)()
cfg[0] = 1            # palette 1
cfg[16] = 64          # tile 0: 64 bytes per row
cfg[48] = 16          # tile 0: 16 rows
fn(ctypes.addressof(cfg))
print("ok")
"""


def amx_tiles_work(flags: list[str] | None = None, timeout: float = 60) -> bool | None:
    """None where the CPU does not advertise AMX; else whether a tile instruction really runs (in a child)."""
    flags = cpu_info()[1] if flags is None else flags
    if not all(f in flags for f in AMX_FLAGS) or sys.platform != "linux" or os.uname().machine != "x86_64":
        return None
    try:
        p = subprocess.run([sys.executable, "-c", _AMX_CHILD, _AMX_CODE.hex()], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0 and p.stdout.strip() == "ok"
