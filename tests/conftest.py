"""Shared fixtures: the real bundled model, synthetic models written once per session."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # synth.py, seed_model.py

from synth import write_model  # noqa: E402


@pytest.fixture(scope="session")
def bundled() -> Path:
    from sentiric_cli.bundled import bundled_model

    return bundled_model()


@pytest.fixture(scope="session")
def hermes_gguf(bundled, tmp_path_factory) -> Path:
    """The bundled weights with a Qwen 2.5 (Hermes tool-call) chat template: the template and tools paths."""
    from templated import HERMES, with_template

    return with_template(bundled, tmp_path_factory.mktemp("templated") / "hermes.gguf", HERMES)


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """synth(arch, **kw) -> path of a tiny model, written once per distinct request."""
    root = tmp_path_factory.mktemp("synth")
    cache: dict = {}

    def make(arch: str, **kw) -> Path:
        key = (arch, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = write_model(root / f"{arch}-{len(cache)}.gguf", arch, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def micro(synth) -> Path:
    """The micro model (1 layer, n_embd 64, 512 tokens): a decode step costs almost nothing."""
    return synth("llama", n_layer=1, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512)


@pytest.fixture(scope="session")
def seed_gguf(tmp_path_factory) -> Path:
    from seed_model import write_gemma3_4b_header

    return write_gemma3_4b_header(tmp_path_factory.mktemp("seed") / "gemma-3-4b-it-Q4_K_M.gguf")


def pytest_terminal_summary(terminalreporter):
    """Say which llama.cpp build ran the tests: CI runs the tests that assert model text against two kernel
    families (the native build and an x86-64-v3 one: `make test-v3`, docs/cpu.md), and its log shows which."""
    try:
        import llama_cpp
    except ImportError:
        return
    stamp = _json(Path(sys.prefix) / "sentiric-llama-build.json")
    from sentiric_cli.engine.cpupath import cache_dir, cache_key

    path = _json(cache_dir() / "cpu-path.json").get(cache_key(), {}).get("path", "not probed")
    terminalreporter.write_line(f"llama.cpp build: CMAKE_ARGS={stamp.get('CMAKE_ARGS', '?')!r}, "
                                f"CFLAGS={stamp.get('CFLAGS', '?')!r}; CPU path: {path}")
    terminalreporter.write_line(f"llama.cpp kernels: {llama_cpp.llama_print_system_info().decode().strip()}")


def _json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}



@pytest.fixture(scope="session")
def doc16(tmp_path_factory):
    """A pass-key document 16x a 512-token window (about 8k tokens), and the key's byte offset."""
    from needles import KEY16, document

    text, at = document(700, 0.3, KEY16, seed=3)
    path = tmp_path_factory.mktemp("fleet") / "doc16.txt"
    path.write_text(text)
    return path, at


@pytest.fixture(scope="session")
def local16(doc16):
    """The local run over doc16 (`run --json`, 512-token window, 2 threads): what the fleet's runs must equal."""
    from clirun import run
    from needles import QUESTION, WINDOW16

    r = run("run", QUESTION, "-f", str(doc16[0]), "--context", WINDOW16, "--threads", "2", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
