"""Build llama-cpp-python for this CPU (or reuse a wheel built with the very same flags) and install it.

Run by `make install` with the virtual environment's python. Why not plain `pip install`:

- llama.cpp is compiled with -march=native. On machines that advertise AMX but trap its tile
  instructions (some VMs), the AMX kernels then kill every decode with SIGILL. A child process
  runs one tile instruction first (sentiric_cli.engine.cpupath.amx_tiles_work); if it dies, llama.cpp is built
  with `-mno-amx-tile -mno-amx-int8 -mno-amx-bf16`, which keeps every other native kernel and the
  weight repacking (explicit -mno-* flags win over -march=native in GCC and clang, whatever the order).
  Some VMs run the tile instruction yet crash llama.cpp's AMX kernels (SIGSEGV): so after installing a build
  with AMX, the CPU path probe's child loads and decodes with the AMX buffers; if it dies, the verdict is kept
  (cache_dir()/amx-kernels.json, per CPU) and llama.cpp is built again without AMX.
- pip caches a built wheel by its source, not by CMAKE_ARGS or CFLAGS: a changed flag would silently
  reuse the old wheel. So pip's cache is off for this build (`--no-cache-dir`), and wheels are kept in
  our own cache, one folder per hash of everything that shapes the binary: version, CMAKE_ARGS,
  CFLAGS/CXXFLAGS, the CPU's model and flags, the compiler, the Python version.

  python scripts/install_llama.py            # ensure this interpreter's environment has the right build
  python scripts/install_llama.py --cflags   # print the extra C flags for this CPU (bench's llama-server)
  python scripts/install_llama.py --key      # print the build key
Environment: CMAKE_ARGS/CFLAGS/CXXFLAGS (yours, kept and hashed), SENTIRIC_NO_AMX=1 (build without AMX
anyway), SENTIRIC_CACHE_DIR (default ~/.cache/sentiric; wheels under wheels/KEY/).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sentiric_cli.engine.cpupath import amx_buffers_crash, amx_tiles_work, cache_dir, cpu_info  # noqa: E402 - stdlib-only

VERSION = "0.3.36"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
STAMP = Path(sys.prefix) / "sentiric-llama-build.json"
AMX_RUNS = "AMX tile instructions run here"


def _cpu_id() -> str:
    name, flags = cpu_info()
    return hashlib.sha256(f"{name}\n{' '.join(sorted(flags))}".encode()).hexdigest()[:20]


def _amx_verdicts() -> dict:
    try:
        data = json.loads((cache_dir() / "amx-kernels.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember_amx_crash(why: str) -> None:
    """Keep that llama.cpp's AMX kernels crash on this CPU: the next install builds without AMX at once."""
    data = _amx_verdicts()
    data[_cpu_id()] = {"cpu": cpu_info()[0], "crash": why}
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "amx-kernels.json.part").write_text(json.dumps(data, indent=1))
    os.replace(folder / "amx-kernels.json.part", folder / "amx-kernels.json")


def extra_cflags() -> tuple[str, str]:
    """(flags, why): what this CPU needs on top of -march=native."""
    if os.environ.get("SENTIRIC_NO_AMX") == "1":
        return NO_AMX, "SENTIRIC_NO_AMX=1"
    if re.search(r"-DGGML_NATIVE(:BOOL)?=(OFF|0|FALSE|NO)\b", os.environ.get("CMAKE_ARGS", ""), re.IGNORECASE):
        return "", "not a -march=native build: AMX only where CMAKE_ARGS turns it on"  # e.g. make test-v3
    crashed = _amx_verdicts().get(_cpu_id())
    if isinstance(crashed, dict):
        return NO_AMX, f"llama.cpp's AMX kernels crashed on this CPU in an earlier install ({crashed.get('crash', '?')})"
    works = amx_tiles_work()
    if works is None:
        return "", "the CPU does not advertise AMX"
    if works:
        return "", AMX_RUNS
    return NO_AMX, "the CPU advertises AMX but a tile instruction was trapped (SIGILL) in a child process"


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return cc


def build_env(cflags: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("CFLAGS", "CXXFLAGS"):
        env[var] = " ".join(x for x in (os.environ.get(var, ""), cflags) if x)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    return env


def build_key(env: dict[str, str]) -> tuple[str, dict]:
    name, flags = cpu_info()
    facts = {"version": VERSION, "CMAKE_ARGS": env.get("CMAKE_ARGS", ""), "CFLAGS": env.get("CFLAGS", ""),
             "CXXFLAGS": env.get("CXXFLAGS", ""), "cpu": name, "cpu_flags": sorted(flags), "compiler": _compiler(),
             "python": f"{sys.version_info.major}.{sys.version_info.minor}", "machine": os.uname().machine}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20], facts


def cached_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("llama_cpp_python-*.whl")) if folder.is_dir() else []
    return wheels[0] if wheels else None


def build_wheel(folder: Path, env: dict[str, str], facts: dict) -> Path:
    print(f"install_llama: compiling llama-cpp-python {VERSION} (about 6 minutes on 2 cores) with "
          f"CMAKE_ARGS={facts['CMAKE_ARGS']!r} CFLAGS={facts['CFLAGS']!r}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="sentiric-wheel-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps",
                        "--no-binary", "llama-cpp-python", f"llama-cpp-python=={VERSION}", "-w", tmp],
                       env=env, check=True)
        built = cached_wheel(Path(tmp))
        if built is None:
            raise SystemExit("install_llama: pip built no wheel")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / built.name
        shutil.move(str(built), target.with_suffix(".part"))
        os.replace(target.with_suffix(".part"), target)  # a half-copied wheel is never taken for a built one
    (folder / "build.json").write_text(json.dumps(facts, indent=1))
    return target


def installed_key() -> str | None:
    try:
        return json.loads(STAMP.read_text()).get("key")
    except (OSError, ValueError):
        return None


def install(cflags: str, why: str) -> None:
    """This environment gets the build for these flags: already there, a cached wheel, or compiled now."""
    env = build_env(cflags)
    key, facts = build_key(env)
    print(f"install_llama: CPU: {facts['cpu'] or 'unknown'}; {why}; extra flags: {cflags or 'none'}; "
          f"build key {key}", file=sys.stderr)
    if installed_key() == key:
        try:
            import llama_cpp  # noqa: F401 - only whether it is there
            print("install_llama: this environment already has that build", file=sys.stderr)
            return
        except ImportError:
            pass
    folder = cache_dir() / "wheels" / key
    wheel = cached_wheel(folder)
    if wheel is None:
        wheel = build_wheel(folder, env, facts)
    else:
        print(f"install_llama: reusing {wheel} (built with the same flags)", file=sys.stderr)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--force-reinstall", "--no-deps", str(wheel)], check=True)
    subprocess.run(pip + [str(wheel)], check=True)  # its dependencies
    STAMP.write_text(json.dumps({"key": key, "wheel": str(wheel), "why": why, **facts}, indent=1))


def main(argv: list[str]) -> int:
    cflags, why = extra_cflags()
    if "--cflags" in argv:
        print(cflags)
        return 0
    if "--key" in argv:
        print(build_key(build_env(cflags))[0])
        return 0
    install(cflags, why)
    if why == AMX_RUNS:  # the tile instruction ran; do llama.cpp's AMX kernels? (the probe child needs gguf)
        crash = amx_buffers_crash()
        if crash:
            print(f"install_llama: llama.cpp's AMX kernels crashed in a child process ({crash}) although the tile "
                  "instruction runs: building without AMX, which keeps the repacked weights", file=sys.stderr)
            remember_amx_crash(crash)
            install(*extra_cflags())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
