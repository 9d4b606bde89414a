"""Tensor overrides (llama.cpp's -ot PATTERN=BUFFER, --cpu-moe, --n-cpu-moe): planned, and handed to llama.cpp."""

from __future__ import annotations

import json

import pytest
from clirun import assert_user_error, run

from sentiric_cli.engine.bindings import Model
from sentiric_cli.engine.llamalog import tap_log
from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.modelinfo import model_info
from sentiric_cli.gguf.shards import read_model
from sentiric_cli.plan.device import Device
from sentiric_cli.plan.layout import CPU, override_places
from sentiric_cli.plan.memory import Shape
from sentiric_cli.plan.usage import breakdown
from sentiric_cli.settings import Settings, load_settings

EXPS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")


def gpu(name: str, gib: float) -> Device:
    n = int(gib * 1024**3)
    return Device("vram", name, n, n, name)


@pytest.fixture(scope="module")
def moe(synth):
    return synth("qwen3moe", n_layer=4, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_vocab=1024)


def _exps_bytes(header, layers=None) -> int:
    return sum(t.n_bytes for t in header.tensors
               if any(e in t.name for e in EXPS) and (layers is None or int(t.name.split(".")[1]) in layers))


def test_first_matching_pattern_places_a_tensor(moe):
    header = read_model(moe)
    got = override_places(header, (r"blk\.0\.ffn_up_exps=CUDA1", "exps=CPU"), 2)
    assert got["blk.0.ffn_up_exps.weight"] == 1  # the first rule wins, as in llama_model_loader
    assert got["blk.0.ffn_down_exps.weight"] == CPU and got["blk.3.ffn_gate_exps.weight"] == CPU
    assert "blk.0.attn_q.weight" not in got
    with pytest.raises(ValueError, match="CUDA0 to CUDA1"):
        override_places(header, ("exps=CUDA2",), 2)
    with pytest.raises(ValueError, match="not one llama.cpp names"):
        override_places(header, ("exps=Metal",), 1)


def test_experts_in_ram_move_their_weights_and_end_pipeline_parallelism(moe):
    header = read_model(moe)
    info = model_info(header)
    devs = (gpu("0", 4), gpu("1", 4))
    full = Shape(context=2048, gpu_layers=info.n_layer + 1, tensor_split=(1.0, 1.0))
    plain = breakdown(header, info, devs, full)
    cmoe = breakdown(header, info, devs, Shape(**{**full.__dict__, "overrides": (r"\.ffn_(up|down|gate)_exps=CPU",)}))
    moved = _exps_bytes(header)
    assert plain.weights_device_bytes - cmoe.weights_device_bytes == moved
    assert cmoe.weights_host_bytes - plain.weights_host_bytes == moved
    # llama_context: no pipeline parallelism with tensor overrides, so no extra copies of the split inputs
    assert "pipeline" in plain.devices[0].compute_why and "pipeline" not in cmoe.devices[0].compute_why
    assert cmoe.host_compute_bytes * 4 == plain.host_compute_bytes
    # a GPU buffer named for a GPU the plan does not have is an error, not a silent no-op
    with pytest.raises(ValueError):
        breakdown(header, info, (gpu("0", 4),), Shape(context=2048, gpu_layers=5, overrides=("exps=CUDA1",)))


def test_cli_cpu_moe_and_n_cpu_moe(moe):
    header = read_model(moe)
    base = ["plan", str(moe), "--vram", "4GiB", "-c", "2048", "-t", "1", "--json"]
    plain = json.loads(run(*base).stdout)
    cmoe = run(*base, "--cpu-moe")
    assert cmoe.returncode == 0, cmoe.stderr
    doc = json.loads(cmoe.stdout)
    assert doc["recommendation"]["tensor_overrides"] == [r"\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"]
    gained = doc["memory"]["weights_host_bytes"] - plain["memory"]["weights_host_bytes"]
    assert gained == _exps_bytes(header)
    two = json.loads(run(*base, "--n-cpu-moe", "2").stdout)
    assert two["memory"]["weights_host_bytes"] - plain["memory"]["weights_host_bytes"] == _exps_bytes(header, {0, 1})
    ot = json.loads(run(*base, "-ot", r"blk\.1\.ffn_down_exps=CPU,blk\.2\.ffn_up_exps=CPU").stdout)
    assert ot["memory"]["weights_host_bytes"] - plain["memory"]["weights_host_bytes"] == sum(
        t.n_bytes for t in header.tensors if t.name in ("blk.1.ffn_down_exps.weight", "blk.2.ffn_up_exps.weight"))
    layers = run("plan", str(moe), "--vram", "4GiB", "-c", "2048", "--cpu-moe", "--layers")
    assert layers.returncode == 0 and "on CPU)" in layers.stdout


def test_cli_bad_overrides_are_one_line_errors(moe):
    assert_user_error(run("plan", str(moe), "--vram", "4GiB", "-ot", "exps=CUDA1"), "CUDA1", "1 GPU")
    assert_user_error(run("plan", str(moe), "-ot", "exps=CUDA0"), "0 GPU")
    assert_user_error(run("plan", str(moe), "-ot", "exps"), "PATTERN=BUFFER")
    assert_user_error(run("plan", str(moe), "-ot", "(exps=CPU"), "regular expression")


def test_settings_take_overrides_from_a_profile_and_the_environment(tmp_path):
    prof = tmp_path / "moe.yaml"
    prof.write_text("tensor_overrides:\n- exps=CPU\n")
    assert load_settings(str(prof), {}).tensor_overrides == ["exps=CPU"]
    env = {"LLM_LLAMA_SERVICE_TENSOR_OVERRIDES": r"blk\.0\.=CPU,exps=CPU"}
    assert load_settings(None, {}, environ=env).tensor_overrides == [r"blk\.0\.=CPU", "exps=CPU"]


def test_llama_cpp_loads_with_the_overrides(moe):
    """The CPU build has one buffer type, CPU: the override reaches llama.cpp (its log says which tensors
    moved) and the model still runs; a buffer this build lacks is a clear error before loading."""
    lines: list[str] = []
    tap_log(lines)
    model = Model(moe, Settings(tensor_overrides=["exps=CPU"]))
    try:
        assert model.tokenize("hello world")
    finally:
        model.close()
    moved = {x.split()[1] for x in lines if "buffer type overridden to CPU" in x}
    assert moved == {f"blk.{i}.{e}.weight" for i in range(4) for e in EXPS}
    with pytest.raises(SentiricError, match="no buffer type 'CUDA0'.*available: CPU"):
        Model(moe, Settings(tensor_overrides=["exps=CUDA0"]))
