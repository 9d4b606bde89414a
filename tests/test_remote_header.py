"""`sentiric plan URL` and `hf://`: a real HTTP server on loopback (tests/rangeserver.py), sparse files as large as
their weights, the bytes it served counted."""

from __future__ import annotations

import json
import os

import pytest
from clirun import assert_user_error, run
from rangeserver import RangeServer, sparse_copy
from synth import write_model

from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf import remote
from sentiric_cli.gguf.remote import read_remote_model, resolve
from sentiric_cli.gguf.shards import read_model


@pytest.fixture(scope="module")
def served(tmp_path_factory, seed_gguf):
    """A 2.3 GiB sparse gemma-3-4b file (a 3.7 MB header with a 262k vocabulary) behind a range server."""
    root = tmp_path_factory.mktemp("served")
    big = sparse_copy(seed_gguf, root / "gemma-3-4b-it-Q4_K_M.gguf")
    (root / "page.gguf").write_text("<html>not a model</html>\n" * 100)
    with RangeServer(root, token="hf_secret", slow_s=2.0) as server:
        yield server, big


def _plan(url: str, cache, *args: str, env: dict | None = None):
    return run("plan", url, "--vram", "8GiB", "--ram", "64GiB", "--bandwidth", "20GB/s", "--json", *args,
               env={"SENTIRIC_CACHE_DIR": str(cache), **(env or {})})


def test_plan_reads_the_header_only_then_from_its_cache(served, tmp_path, seed_gguf):
    server, big = served
    url = f"{server.url}/files/{big.name}"
    before, asked = server.sent, len(server.requests)
    r = _plan(url, tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sent = server.sent - before
    assert big.stat().st_size > 2 * 2**30
    assert seed_gguf.stat().st_size <= sent < 0.01 * big.stat().st_size  # the header, not 1% of the file
    gets = [h for m, p, h in server.requests[asked:] if m == "GET"]
    assert gets and all(h.get("Range", "").startswith("bytes=") for h in gets)
    assert doc["model"]["path"] == url and not any("missing" in w for w in doc["warnings"])
    assert any(n.startswith(f"header read from {url}: 5 request(s), 4,096 KiB") for n in doc["notes"]), doc["notes"]
    local = json.loads(run("plan", str(seed_gguf), "--vram", "8GiB", "--ram", "64GiB", "--bandwidth", "20GB/s",
                           "--json").stdout)
    assert doc["memory"] == local["memory"] and doc["options"] == local["options"]
    assert doc["recommendation"] == {**local["recommendation"], "model": url}

    before, asked = server.sent, len(server.requests)
    again = _plan(url, tmp_path)
    assert again.returncode == 0, again.stderr
    assert server.sent == before  # validated by one HEAD, no bytes
    assert [m for m, _, _ in server.requests[asked:]] == ["HEAD"]
    assert any("from the cache (one HEAD)" in n for n in json.loads(again.stdout)["notes"])
    assert json.loads(again.stdout)["memory"] == doc["memory"]


def test_a_changed_file_is_read_again(served, tmp_path):
    server, big = served
    url = f"{server.url}/files/{big.name}"
    assert _plan(url, tmp_path).returncode == 0
    os.utime(big, ns=(big.stat().st_atime_ns, big.stat().st_mtime_ns + 10**9))  # a new ETag
    before = server.sent
    assert _plan(url, tmp_path).returncode == 0
    assert server.sent > before


@pytest.mark.parametrize("path, expected", [
    ("/norange/gemma-3-4b-it-Q4_K_M.gguf", "does not answer range requests"),
    ("/loop/gemma-3-4b-it-Q4_K_M.gguf", "redirects in a loop"),
    ("/files/absent.gguf", "not found (HTTP 404)"),
    ("/files/page.gguf", "page.gguf: not a GGUF file (bad magic)"),
])
def test_server_faults_are_one_line(served, tmp_path, path, expected):
    server, _ = served
    before = server.sent
    assert_user_error(_plan(server.url + path, tmp_path), expected, server.url)  # the URL as given
    assert server.sent - before < 8 * 2**20  # the refused whole-file answer was not read


def test_a_silent_server_times_out(served, tmp_path, monkeypatch):
    server, big = served
    monkeypatch.setattr(remote, "TIMEOUT_S", 0.5)
    monkeypatch.setenv("SENTIRIC_CACHE_DIR", str(tmp_path))
    with pytest.raises(SentiricError, match="no answer within 0.5 s"):
        read_remote_model(f"{server.url}/slow/{big.name}")


@pytest.mark.parametrize("ref, expected", [
    ("https://example.invalid/", "not a URL of a .gguf file"),
    ("hf://org/model.gguf", "not a Hugging Face file"),
    ("hf://org/repo/", "not a Hugging Face file"),
])
def test_bad_references_are_one_line(ref, expected, tmp_path):
    assert_user_error(_plan(ref, tmp_path), expected)


def test_revision_is_for_hf_models(tmp_path, bundled):
    assert_user_error(run("plan", str(bundled), "--revision", "v1"), "--revision is for hf:// models")


def test_hugging_face_resolve_url_token_and_revision(served, tmp_path, monkeypatch):
    server, big = served
    env = {"HF_ENDPOINT": server.url}
    assert_user_error(_plan(f"hf://org/repo/{big.name}", tmp_path, env=env), "access refused (HTTP 401)", "HF_TOKEN")
    asked = len(server.requests)
    r = _plan(f"hf://org/repo/{big.name}", tmp_path, "--revision", "v1.0", env={**env, "HF_TOKEN": "hf_secret"})
    assert r.returncode == 0, r.stderr
    seen = server.requests[asked:]
    hub = [h for _, p, h in seen if p.startswith("/org/repo/resolve/v1.0/")]
    cdn = [h for _, p, h in seen if p.startswith("/files/")]
    assert hub and all(h.get("Authorization") == "Bearer hf_secret" for h in hub)
    assert cdn and not any("Authorization" in h for h in cdn)  # the token stays with the Hub
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    assert resolve("hf://o/r/sub/m.gguf", "refs/pr/1") == "https://hub.example/o/r/resolve/refs%2Fpr%2F1/sub/m.gguf"


def test_split_model_read_shard_by_shard(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    first = write_model(root / "tiny.gguf", "llama", n_layer=4, split_max_tensors=12)
    shards = sorted(root.glob("tiny-*-of-*.gguf"))
    assert len(shards) > 1 and first == shards[0]
    monkeypatch.setenv("SENTIRIC_CACHE_DIR", str(tmp_path / "cache"))
    with RangeServer(root) as server:
        got = read_remote_model(f"{server.url}/files/{shards[1].name}?download=true")  # any shard names them all
        asked = [p for _, p, _ in server.requests if p.startswith("/files/")]
    local = read_model(first)
    assert [t.name for t in got.tensors] == [t.name for t in local.tensors]
    assert got.file_size == local.file_size and len(got.shards) == len(shards)
    assert [p.name for p in got.shards] == [p.name for p in shards]  # gguf-split's names, for --measure's shadows
    assert all(p.endswith("?download=true") for p in asked)  # a signed URL's query kept for every shard


def test_a_server_without_head_still_serves_the_plan(served, tmp_path, monkeypatch):
    """No HEAD (405): the size comes from the first range's Content-Range; nothing is trusted from the cache."""
    server, big = served
    monkeypatch.setenv("SENTIRIC_CACHE_DIR", str(tmp_path))
    for _ in range(2):
        before = server.sent
        got = read_remote_model(f"{server.url}/nohead/{big.name}")
        assert got.file_size == big.stat().st_size and 0 < server.sent - before < 0.01 * big.stat().st_size
