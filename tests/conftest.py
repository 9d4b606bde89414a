"""Shared fixtures: the real bundled model, synthetic models written once per session."""

from __future__ import annotations

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
