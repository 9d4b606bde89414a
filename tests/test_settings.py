"""Settings: defaults < profile (YAML) < environment (LLM_LLAMA_SERVICE_*) < command line, and their errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from sentiric_cli.errors import SentiricError
from sentiric_cli.settings import FIELDS, Settings, env_name, load_settings, profiles_dir, read_env, read_profile, to_yaml

DEFAULTS = Settings()


def profile(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ---------------------------------------------------------------- precedence


def test_defaults_when_nothing_is_given():
    s = load_settings(None, None, {})
    assert s == DEFAULTS
    assert (s.threads, s.context_size, s.gpu_layers, s.use_mmap, s.kv_offload) == (1, 4096, -1, True, True)


def test_precedence_profile_env_command_line(tmp_path):
    p = profile(tmp_path, "threads: 2\ncontext_size: 8192\ngpu_layers: 10\nuse_mmap: false\ntop_k: 7\n")
    env = {"LLM_LLAMA_SERVICE_CONTEXT_SIZE": "16384", "LLM_LLAMA_SERVICE_GPU_LAYERS": "20"}
    cli = {"gpu_layers": 30, "threads": None}  # None = option not given

    only_profile = load_settings(str(p), None, {})
    assert (only_profile.threads, only_profile.context_size, only_profile.gpu_layers) == (2, 8192, 10)
    assert only_profile.use_mmap is False and only_profile.top_k == 7
    assert only_profile.port == DEFAULTS.port  # untouched keys keep their defaults

    with_env = load_settings(str(p), None, env)
    assert (with_env.threads, with_env.context_size, with_env.gpu_layers) == (2, 16384, 20)

    everything = load_settings(str(p), cli, env)
    assert (everything.threads, everything.context_size, everything.gpu_layers) == (2, 16384, 30)
    assert everything.use_mmap is False and everything.top_k == 7


def test_env_overrides_defaults_without_profile():
    s = load_settings(None, None, {"LLM_LLAMA_SERVICE_THREADS": "3"})
    assert s.threads == 3


def test_environment_is_read_from_os_environ_by_default(monkeypatch):
    for name in [k for k in os.environ if k.startswith("LLM_LLAMA_SERVICE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LLM_LLAMA_SERVICE_THREADS", "5")
    assert load_settings().threads == 5
    assert read_env() == {"threads": "5"}


def test_env_names():
    assert env_name("threads") == "LLM_LLAMA_SERVICE_THREADS"
    assert env_name("context_size") == "LLM_LLAMA_SERVICE_CONTEXT_SIZE"
    assert env_name("kv_offload") == "LLM_LLAMA_SERVICE_KV_OFFLOAD"


@pytest.mark.parametrize("raw, expected", [("true", True), ("false", False), ("True", True), ("0", False),
                                           ("1", True), ("yes", True), ("off", False)])
def test_env_booleans(raw, expected):
    s = load_settings(None, None, {"LLM_LLAMA_SERVICE_USE_MMAP": raw, "LLM_LLAMA_SERVICE_KV_OFFLOAD": raw})
    assert s.use_mmap is expected and s.kv_offload is expected


def test_env_numbers_and_strings():
    env = {"LLM_LLAMA_SERVICE_THREADS": "8", "LLM_LLAMA_SERVICE_CONTEXT_SIZE": "32768",
           "LLM_LLAMA_SERVICE_GPU_LAYERS": "-1", "LLM_LLAMA_SERVICE_TEMPERATURE": "0.7",
           "LLM_LLAMA_SERVICE_CACHE_TYPE_K": "q8_0", "LLM_LLAMA_SERVICE_HOST": "0.0.0.0"}
    s = load_settings(None, None, env)
    assert (s.threads, s.context_size, s.gpu_layers, s.temperature) == (8, 32768, -1, 0.7)
    assert (s.cache_type_k, s.host) == ("q8_0", "0.0.0.0")


def test_env_ignores_unrelated_variables():
    assert read_env({"PATH": "/bin", "LLM_LLAMA_SERVICE_BOGUS": "1", "llm_llama_service_threads": "9"}) == {}


def test_empty_model_variable_means_the_bundled_model():
    assert load_settings(None, {}, {"LLM_LLAMA_SERVICE_MODEL": ""}).model is None
    assert load_settings(None, {}, {"LLM_LLAMA_SERVICE_MODEL": "/m.gguf"}).model == "/m.gguf"


def test_every_field_has_an_environment_variable():
    env = {env_name(k): "1" for k in ("threads", "cpu_threads", "gpu_layers", "top_k", "seed")}
    values = read_env(env)
    assert set(values) == {"threads", "cpu_threads", "gpu_layers", "top_k", "seed"}
    assert set(FIELDS) == set(Settings.model_fields)


def test_env_cross_field_rules_see_every_variable():
    """UBATCH_SIZE above the default batch is fine when BATCH_SIZE is raised in the same environment."""
    s = load_settings(None, None, {"LLM_LLAMA_SERVICE_UBATCH_SIZE": "4096", "LLM_LLAMA_SERVICE_BATCH_SIZE": "8192"})
    assert (s.ubatch_size, s.batch_size) == (4096, 8192)
    with pytest.raises(SentiricError, match="ubatch_size 4096 is larger than batch_size 2048"):
        load_settings(None, None, {"LLM_LLAMA_SERVICE_UBATCH_SIZE": "4096"})


def test_command_line_can_fix_an_invalid_combination_below_it(tmp_path):
    p = profile(tmp_path, "cache_type_v: q8_0\n")  # valid: flash_attn defaults to true
    with pytest.raises(SentiricError, match="needs flash_attn"):
        load_settings(str(p), {"flash_attn": False}, {})
    s = load_settings(str(p), {"cache_type_v": "f16", "flash_attn": False}, {})
    assert (s.cache_type_v, s.flash_attn) == ("f16", False)


# ---------------------------------------------------------------- errors


def test_unknown_key_in_profile_names_file_key_and_reason(tmp_path):
    p = profile(tmp_path, "threads: 2\nthreadz: 4\n")
    with pytest.raises(SentiricError) as err:
        load_settings(str(p), None, {})
    msg = err.value.message
    assert str(p) in msg and "threadz" in msg and "unknown setting" in msg
    assert "threads" in err.value.hint  # the hint lists the known settings


def test_unknown_key_on_the_command_line():
    with pytest.raises(SentiricError, match="command line: bogus: unknown setting"):
        load_settings(None, {"bogus": 1}, {})


@pytest.mark.parametrize("text, key, reason", [
    ("threads: 0\n", "threads", "greater than or equal to 1"),
    ("threads: 1000\n", "threads", "less than or equal to 256"),
    ("context_size: big\n", "context_size", "valid integer"),
    ("cache_type_k: q3_k\n", "cache_type_k", "'f32'"),
    ("flash_attn: maybe\n", "flash_attn", "valid boolean"),
    ("top_p: 1.5\n", "top_p", "less than or equal to 1"),
    ("port: 70000\n", "port", "less than or equal to 65535"),
])
def test_bad_values_in_profile(tmp_path, text, key, reason):
    p = profile(tmp_path, text)
    with pytest.raises(SentiricError) as err:
        read_profile(p)
    msg = err.value.message
    assert msg.startswith(f"profile {p}: {key}: ") and reason in msg
    assert repr(yaml.safe_load(text)[key]) in msg  # shows the value it got


def test_quantized_v_cache_needs_flash_attention(tmp_path):
    p = profile(tmp_path, "cache_type_v: q8_0\nflash_attn: false\n")
    with pytest.raises(SentiricError) as err:
        read_profile(p)
    assert str(p) in err.value.message and "cache_type_v q8_0 needs flash_attn: true" in err.value.message
    # the same pair spread over layers is refused too, once merged
    with pytest.raises(SentiricError, match="needs flash_attn"):
        load_settings(None, {"cache_type_v": "q8_0"}, {"LLM_LLAMA_SERVICE_FLASH_ATTN": "false"})


def test_ubatch_larger_than_batch(tmp_path):
    with pytest.raises(SentiricError, match="ubatch_size 4096 is larger than batch_size 2048"):
        read_profile(profile(tmp_path, "ubatch_size: 4096\n"))
    assert read_profile(profile(tmp_path, "ubatch_size: 4096\nbatch_size: 4096\n")) == {
        "ubatch_size": 4096, "batch_size": 4096}


@pytest.mark.parametrize("var, raw", [("THREADS", "zero"), ("THREADS", "0"), ("CONTEXT_SIZE", "big"),
                                      ("USE_MMAP", "maybe"), ("THREADS", "8.5"), ("THREADS", "")])
def test_bad_env_value_names_the_variable(var, raw):
    name = f"LLM_LLAMA_SERVICE_{var}"
    with pytest.raises(SentiricError) as err:
        load_settings(None, None, {name: raw})
    assert err.value.message.startswith(f"{name}: {var.lower()}: ")
    assert repr(raw) in err.value.message


def test_bad_command_line_value():
    with pytest.raises(SentiricError, match=r"command line: threads: .*\(got 0\)"):
        load_settings(None, {"threads": 0}, {})


@pytest.mark.parametrize("text, line, column", [
    ("threads: 2\ncontext_size: [1\n", 3, 1),
    ("threads: 2\n  context_size: 4\n", 2, 15),
    ("a: b: c\n", 1, 5),
])
def test_invalid_yaml_gives_line_and_column(tmp_path, text, line, column):
    p = profile(tmp_path, text)
    with pytest.raises(SentiricError) as err:
        read_profile(p)
    assert str(p) in err.value.message and "not valid YAML" in err.value.message
    assert f"line {line}, column {column}" in err.value.message


@pytest.mark.parametrize("text, kind", [("- threads\n- 2\n", "list"), ("just words\n", "str"), ("42\n", "int")])
def test_non_mapping_yaml_is_refused(tmp_path, text, kind):
    p = profile(tmp_path, text)
    with pytest.raises(SentiricError, match=f"expected a mapping of settings, got {kind}"):
        read_profile(p)


def test_non_string_keys_are_refused(tmp_path):
    with pytest.raises(SentiricError, match="Keys should be strings"):
        read_profile(profile(tmp_path, "1: 2\n"))


def test_not_utf8_profile(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"threads: \xff\xfe\n")
    with pytest.raises(SentiricError, match="cannot read"):
        read_profile(p)


def test_empty_profile_is_all_defaults(tmp_path):
    p = profile(tmp_path, "# nothing set\n")
    assert read_profile(p) == {}
    assert load_settings(str(p), None, {}) == DEFAULTS


def test_missing_profile_lists_the_shipped_ones(tmp_path):
    with pytest.raises(SentiricError) as err:
        load_settings(str(tmp_path / "nope.yaml"), None, {})
    assert "no such file" in err.value.message
    assert "cpu-gemma3-270m" in err.value.hint
    with pytest.raises(SentiricError, match="no such file"):
        load_settings("no-such-profile-name", None, {})
    with pytest.raises(SentiricError, match="no such file"):
        load_settings("a" * 5000, None, {})  # a name too long for the file system


def test_directory_is_not_a_profile(tmp_path):
    with pytest.raises(SentiricError, match="no such file"):
        read_profile(tmp_path)


# ---------------------------------------------------------------- shipped profiles and round trip


def shipped() -> list[Path]:
    return sorted(profiles_dir().glob("*.yaml"))


def test_shipped_profiles_exist():
    names = [p.stem for p in shipped()]
    assert "cpu-gemma3-270m" in names, names


@pytest.mark.parametrize("path", shipped(), ids=lambda p: p.stem)
def test_every_shipped_profile_loads_by_path_and_by_name(path):
    by_path = load_settings(str(path), None, {})
    by_name = load_settings(path.stem, None, {})
    assert by_path == by_name
    raw = yaml.safe_load(path.read_text())
    assert {k: getattr(by_path, k) for k in raw} == raw  # every value in the file is the value loaded


def test_to_yaml_round_trips(tmp_path):
    s = Settings(threads=3, context_size=12288, cache_type_k="q8_0", flash_attn=True, model="/x/y.gguf",
                 temperature=0.3, swa_full=True)
    text = to_yaml(s, "line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    p = profile(tmp_path, text)
    assert load_settings(str(p), None, {}) == s
    assert list(yaml.safe_load(text)) == list(FIELDS)  # every setting, in declaration order


def test_to_yaml_quotes_what_is_not_a_plain_word():
    """to_yaml writes YAML itself (no PyYAML at `plan`'s start): odd strings, keywords, exponents read back."""
    s = Settings(tensor_overrides=["blk\\.(0|1)\\.ffn_.*=CPU", "x: y #z=CPU"], cors_origins=["http://[::1]"],
                 served_model_name="null", min_p=1e-05, tensor_split=[3.0, 1.0], model="/a b/c.gguf",
                 api_key="it's \"q\" \u00e9 yes\n", strategy="map")
    text = to_yaml(s)
    assert yaml.safe_load(text) == s.model_dump()
    assert "min_p: 1.0e-05\n" in text and 'served_model_name: "null"\n' in text and "strategy: map\n" in text
