"""Typed settings and profiles: built-in defaults < profile (YAML) < environment < command line.

Every setting has one environment variable, named as in the service sentiric descends from:
LLM_LLAMA_SERVICE_<KEY in upper case> (e.g. LLM_LLAMA_SERVICE_THREADS for `threads`).
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentiric_cli.errors import SentiricError

ENV_PREFIX = "LLM_LLAMA_SERVICE_"
CacheType = Literal["f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"]
QUANTIZED = {"q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"}


class Settings(BaseModel):
    """One profile. Field descriptions are the documentation (docs/settings.md is generated from them)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str | None = Field(None, description="Path to the .gguf model; empty = the bundled gemma 3 270M test model")
    gpu_layers: int = Field(-1, ge=-1, le=100000,
                            description="Layers offloaded to the GPU (n_gpu_layers); -1 = all, 0 = none")
    threads: int = Field(1, ge=1, le=256,
                         description="Requests served at once; each has its own KV cache of context_size tokens")
    cpu_threads: int = Field(0, ge=0, le=1024, description="CPU threads for llama.cpp's computation; 0 = one per "
                             "physical core this process may use (llama.cpp's default; SMT siblings are left to the "
                             "server's own threads), and one fewer while the model step is so cheap that the server's "
                             "own threads are the limit (measured as it runs)")
    pad_steps: bool = Field(True, description="serve: pad a decode step with throw-away rows up to a row count that "
                            "llama.cpp computes faster, as measured when the server starts (docs/settings.md)")
    cache_ram: int = Field(8192, ge=0, le=16 * 1024 * 1024, description="serve: MiB of host RAM for prompt caches a "
                           "slot held before another prompt took it, restored when a later prompt starts the same way "
                           "(llama-server's --cache-ram, same default); 0 = off")
    draft_tokens: int = Field(0, ge=0, le=64, description="Prompt-lookup drafting: up to this many tokens proposed per "
                              "step from the longest match of the answer's last tokens in the request's own prompt and "
                              "answer, checked in the same decode (fewer steps where the answer quotes the prompt; the "
                              "same output up to llama.cpp's batch arithmetic, docs/serve.md); 0 = off")
    deterministic: bool = Field(False, description="serve: the same request gives the same greedy answer under any "
                                "load: fixed-shape decode steps, prompts read alone, no cache reuse, fixed CPU threads, "
                                "no drafting (slower; docs/serve.md)")
    persistent_threads: bool = Field(True, description="Keep llama.cpp's compute threads between decodes (as "
                                     "llama-server does) instead of starting them for every step")
    context_size: int = Field(4096, ge=16, le=4_194_304, description="Tokens of KV cache per thread (per request)")
    batch_size: int = Field(2048, ge=1, le=1_048_576, description="Logical batch: tokens handed to one decode call")
    ubatch_size: int = Field(512, ge=1, le=1_048_576,
                             description="Physical batch: tokens computed at once (sizes the compute buffer)")
    cache_type_k: CacheType = Field("f16", description="KV cache type for K")
    cache_type_v: CacheType = Field("f16", description="KV cache type for V (quantized V needs flash_attn)")
    flash_attn: bool = Field(True, description="Flash attention: smaller compute buffer, allows a quantized V cache")
    swa_full: bool = Field(False, description="Full-size cache for sliding-window layers; needed to shift their context")
    use_mmap: bool = Field(True, description="Map the model file instead of reading it into RAM")
    kv_offload: bool = Field(True, description="Keep the KV cache of offloaded layers on the GPU")
    op_offload: bool = Field(True, description="Run the big matrix products of weights kept in RAM (CPU layers, "
                             "CPU overrides) on the GPU (llama.cpp's default; its compute buffer holds a copy of one "
                             "such weight at a time)")
    tensor_split: list[float] = Field([], max_length=16, description="Share of the offloaded layers per GPU, in "
                                      "order (e.g. 3,1 or layer counts 17,18); empty = by free memory")
    main_gpu: int = Field(0, ge=0, le=15, description="The GPU that holds the whole model when only one is used")
    tensor_overrides: list[str] = Field([], max_length=64, description="llama.cpp's --override-tensor: PATTERN=BUFFER "
                                        "entries (e.g. exps=CPU keeps MoE experts in RAM); the first matching pattern "
                                        "places a tensor; BUFFER is CPU or a GPU's (CUDA0, CUDA1 ...)")
    strategy: Literal["auto", "window", "map"] = Field(
        "auto", description="Long documents (run, serve): auto = one read when prompt + document fit the window, else "
        "map; window = stream through one shifting window; map = chunks read `threads` at a time, then reduced")
    n_keep: int = Field(-1, ge=-1, description="Tokens pinned at the head when the window shifts; -1 = the whole prompt head")
    shift_discard: float = Field(0.25, gt=0.0, le=1.0,
                                 description="Share of the unpinned window evicted per shift (more = fewer shifts, less context)")
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="Sampling temperature; 0 = greedy, deterministic")
    top_k: int = Field(40, ge=0, description="Top-k sampling; 0 = off")
    top_p: float = Field(0.95, ge=0.0, le=1.0, description="Nucleus sampling")
    min_p: float = Field(0.05, ge=0.0, le=1.0, description="Min-p sampling")
    repeat_penalty: float = Field(1.0, ge=0.0, le=10.0, description="Repetition penalty; 1 = off")
    seed: int = Field(-1, ge=-1, description="Sampling seed; -1 = random")
    max_tokens: int = Field(256, ge=1, le=1_048_576, description="Most tokens generated per answer")
    host: str = Field("127.0.0.1", description="Address the server binds to")
    port: int = Field(8080, ge=0, le=65535, description="Port the server listens on; 0 = any free port")
    served_model_name: str | None = Field(None, description="The model id the server answers to and reports "
                                          "(/v1/models, every response); default: the model file's name. Give "
                                          "several replicas one name so a router treats them as one model")
    api_key: str | None = Field(None, description="When set, every route but /health and the model list needs the key "
                                "(`Authorization: Bearer KEY` or `x-api-key: KEY`)")
    queue_size: int = Field(64, ge=0, le=100000, description="Requests waiting for a slot when all are busy; past it the "
                            "server answers 429 (0 = no waiting)")
    cors_origins: list[str] = Field(["http://localhost", "http://127.0.0.1", "http://[::1]", "https://localhost",
                                     "https://127.0.0.1", "https://[::1]"],
                                    description="Web pages (origins) whose scripts may call the server; without a port "
                                    "any port; `*` = any site (comma-separated in the environment)")
    embeddings: bool = Field(False, description="Serve /v1/embeddings (a second llama.cpp context, pooled embeddings)")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 past it)")
    header_timeout: float = Field(10.0, gt=0.0, le=3600.0,
                                  description="Seconds a connection gets to send a complete request head; then closed")
    shutdown_timeout: float = Field(10.0, ge=0.0, le=3600.0,
                                    description="Seconds running requests get to finish after SIGTERM before they are cut")

    backends: list[str] = Field([], description="`run`: OpenAI-compatible servers (base URLs) that read a long "
                                "document's chunks instead of the local model; comma-separated in the environment")
    backend_api_key: str | None = Field(None, description="`run --backend`: the key sent to the backends (Authorization: "
                                        "Bearer KEY), e.g. a LiteLLM proxy's master key")
    backend_slots: int | None = Field(None, ge=1, le=1024, description="`run --backend`: requests in flight per backend; "
                                      "default: the slots each reports (/props, /health), else 1")
    backend_timeout: float = Field(120.0, gt=0.0, le=86400.0,
                                   description="`run --backend`: seconds one request may take before it is sent to "
                                   "another backend")

    @field_validator("cors_origins", "tensor_split", "tensor_overrides", "backends", mode="before")
    @classmethod
    def _split(cls, v):
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @field_validator("tensor_split")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if any(not math.isfinite(x) or x < 0 for x in v) or (v and not sum(v) > 0):
            raise ValueError("tensor_split takes non-negative shares with at least one above 0, e.g. 3,1")
        return v

    @field_validator("tensor_overrides")
    @classmethod
    def _overrides(cls, v: list[str]) -> list[str]:
        for entry in v:
            pattern, eq, buffer = entry.partition("=")  # llama.cpp splits at the first =
            if not eq or not pattern or not buffer:
                raise ValueError(f"tensor override {entry!r} is not PATTERN=BUFFER, e.g. exps=CPU")
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"tensor override {entry!r}: the pattern is not a regular expression ({e})") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.cache_type_v in QUANTIZED and not self.flash_attn:
            raise ValueError(f"cache_type_v {self.cache_type_v} needs flash_attn: true "
                             "(llama.cpp refuses a quantized V cache without flash attention)")
        if self.ubatch_size > self.batch_size:
            raise ValueError(f"ubatch_size {self.ubatch_size} is larger than batch_size {self.batch_size}")
        return self


FIELDS = tuple(Settings.model_fields)


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 4
_SHORT.maxlevel = 2


def _shown(value: Any) -> str:
    """A value as an error shows it: bounded, whatever its size (a profile may be anything, even another file)."""
    return _SHORT.repr(value)


def _key_name(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,60}", key) else "(a key that is no setting)"


def _reason(err: ValidationError) -> tuple[str, str]:
    e = err.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(x) for x in e["loc"])
    key = _key_name(where) if where else "profile"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown setting"
    return key, msg


def _check(values: dict[str, Any], where: str, name=None) -> dict[str, Any]:
    """Validate one layer on its own so an error names the file or variable it came from.

    `name(key)` names where one key came from (the environment: its variable)."""
    try:
        Settings.model_validate(values)
    except ValidationError as err:
        key, msg = _reason(err)
        if key not in values:  # a cross-field check, or a key too odd to name
            raise SentiricError(f"{where}: {msg}", "fix the values named above") from None
        hint = f"known settings: {', '.join(FIELDS)}" if msg == "unknown setting" else "see docs/settings.md"
        raise SentiricError(f"{name(key) if name else where}: {key}: {msg} (got {_shown(values[key])})", hint) from None
    return values


def _profile_loader():
    """YAML without aliases: a profile needs none, and a few hundred bytes of nested aliases expand to gigabytes
    wherever the value is walked (validation, an error message). Made on first use: yaml is imported only
    where a profile is read (to_yaml writes one itself), not by every command's start."""
    import yaml

    class ProfileLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a profile",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)

    return ProfileLoader


def read_profile(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not _safely(Path.is_file, p):
        hint = f"profiles shipped: {', '.join(sorted(x.stem for x in profiles_dir().glob('*.yaml')))}"
        raise SentiricError(f"profile {p}: no such file", hint)
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_profile_loader())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SentiricError(f"profile {p}: not valid YAML{at}: {getattr(e, 'problem', e)}", "check the indentation") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SentiricError(f"profile {p}: cannot read ({e})") from None
    except ValueError as e:  # a value YAML cannot make (an integer of thousands of digits)
        raise SentiricError(f"profile {p}: a value cannot be read ({str(e)[:80]})", "check the values") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SentiricError(f"profile {p}: expected a mapping of settings, got {type(data).__name__}",
                            "write one `key: value` per line")
    return _check(data, f"profile {p}")


def _safely(test, p: Path) -> bool:
    try:
        return test(p)
    except OSError:  # e.g. a name too long: reported as no such file
        return False


def read_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for key in FIELDS:
        raw = environ.get(env_name(key))
        if raw is None:
            continue
        values[key] = None if raw == "" and key == "model" else raw
    # one layer: checked together, so cross-field rules see every variable (UBATCH_SIZE with BATCH_SIZE)
    return _check(values, "environment", env_name)


def profiles_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "profiles"


def resolve_profile(name_or_path: str) -> Path:
    """A path, or the name of a shipped profile (`cpu-gemma3-270m`)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or _safely(Path.exists, p):
        return p
    return profiles_dir() / f"{name_or_path}.yaml"


def load_settings(profile: str | None = None, overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """The merged settings; `model_fields_set` names what a profile, the environment or a flag set."""
    merged: dict[str, Any] = {}
    if profile:
        merged.update(read_profile(resolve_profile(profile)))
    merged.update(read_env(environ))
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    merged.update(_check(cli, "command line"))
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        _, msg = _reason(err)
        raise SentiricError(f"settings: {msg}", "profile < environment < command line; fix the winning value") from None


def to_yaml(settings: Settings, comment: str = "") -> str:
    """The settings as a profile. Written here rather than by PyYAML, whose import alone is a twentieth of a second
    of every `plan`: every value is a scalar or a list of scalars; a string that is not plainly a word is
    written as a JSON string, which YAML reads as a double-quoted scalar (tests/test_settings.py reads it back)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for key, value in settings.model_dump().items():
        if isinstance(value, list):
            lines.append(f"{key}: []" if not value else f"{key}:")
            lines += [f"- {_scalar(v)}" for v in value]
        else:
            lines.append(f"{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_KEYWORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n", "~", "nan", "inf"}


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return ".nan" if v != v else ".inf" if v > 0 else "-.inf"
        text = repr(v)
        # YAML 1.1 (PyYAML) reads 1e-05 as a string: its floats need a dot
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    if isinstance(v, str):
        plain = _PLAIN.fullmatch(v) and v.lower() not in _KEYWORDS
        return v if plain else json.dumps(v)
    raise TypeError(f"a profile holds scalars and lists of them, not {type(v).__name__}")
