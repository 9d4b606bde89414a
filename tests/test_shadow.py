"""bench/shadow_model.py: a real model's shape with a hole for weights loads in llama.cpp and generates to max_tokens
(the GPU benchmark's model, bench/gpu_run.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

from sentiric_cli.engine.core import Engine
from sentiric_cli.engine.sequence import Sequence
from sentiric_cli.engine.types import Request
from sentiric_cli.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from shadow_model import shadow  # noqa: E402


def test_a_shadow_takes_no_disk_for_its_weights_and_runs_to_max_tokens(tmp_path):
    path = shadow(tmp_path / "shadow.gguf", "qwen3-0.6b")
    assert path.stat().st_blocks * 512 < path.stat().st_size // 20  # a hole, not 500 MB of zeros
    with Engine(Settings(context_size=256), path) as e:
        m = e.model
        prompt = m.tokenize("Chapter 1. The old lighthouse keeper climbed the stairs and")
        assert len(prompt) > 20  # bytes: any text tokenizes
        seq = Sequence(e, 0, Request(head=[m.bos] + prompt, max_tokens=6))
        while not seq.done:
            e.step([seq])
    record = seq.take_events()[-1]
    assert record.generated_tokens == 6 and record.finish_reason == "length"  # token 0 is no end of generation
