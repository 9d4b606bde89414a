"""A GGUF header read over HTTP: `https://…/model.gguf` or `hf://ORG/REPO/FILE.gguf`, weights never downloaded.

Only the header's bytes are read, with range requests that grow as the parser needs (it says how far it got:
header.Short). A header is cached by URL and validator (ETag, else Last-Modified and size) under
machine.cache_dir()/headers: a second plan of the same file costs one HEAD request. The cached bytes are
the file's head, a valid header-only GGUF, so `--measure` can dry-run it like a local file.
Standard library only (urllib), so `plan` stays quick to start.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.header import GGUFHeader, Short, parse, read_header
from sentiric_cli.machine import cache_dir

FIRST_READ = 512 * 1024  # most headers fit; a 262k vocabulary with merges needs ~8 MiB, read in 3-4 more ranges
MOST = 256 * 1024 * 1024  # past any real header (gguf.header bounds its counts): a file that asks more is refused
TIMEOUT_S = 30.0
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def is_remote(ref: str | os.PathLike | None) -> bool:
    return isinstance(ref, str) and ref.startswith(("http://", "https://", "hf://"))


def resolve(ref: str, revision: str | None = None) -> str:
    """The HTTP URL of a model reference. hf://ORG/REPO/PATH is Hugging Face's resolve URL (HF_ENDPOINT honoured)."""
    if not ref.startswith("hf://"):
        if revision:
            raise SentiricError("--revision is for hf:// models", "give hf://ORG/REPO/FILE.gguf --revision REV")
        parts = urllib.parse.urlsplit(ref)
        if not parts.netloc or not parts.path.endswith(".gguf"):
            raise SentiricError(f"{ref}: not a URL of a .gguf file", "give https://HOST/PATH/MODEL.gguf")
        return ref
    path = ref[len("hf://"):].strip("/")
    org_repo_file = path.split("/")
    if len(org_repo_file) < 3 or not path.endswith(".gguf") or any(not x for x in org_repo_file):
        raise SentiricError(f"{ref}: not a Hugging Face file", "write hf://ORG/REPO/FILE.gguf (a folder may come "
                            "before the file)")
    org, repo, *rest = org_repo_file
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    rev = urllib.parse.quote(revision or "main", safe="")
    return f"{endpoint}/{org}/{repo}/resolve/{rev}/{'/'.join(urllib.parse.quote(x) for x in rest)}"


@dataclass
class Traffic:
    """What reading the header cost: a note under the plan, and the tests' and bench's counts."""

    requests: int = 0
    bytes: int = 0
    cached: bool = False


def read_remote_model(ref: str, revision: str | None = None, traffic: Traffic | None = None) -> GGUFHeader:
    """A remote model's header; a split model (NAME-00001-of-0000N.gguf) read shard by shard, as shards.read_model."""
    url = resolve(ref, revision)
    traffic = traffic if traffic is not None else Traffic()
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    hit = _SHARD.match(name)
    first = _read(url, traffic)
    count = first.metadata.get("split.count", 1)
    if not hit or int(hit["count"]) < 2:
        if isinstance(count, int) and count > 1:
            raise SentiricError(f"{url}: shard of a model split into {count} files, but its name does not say "
                                "where the others are", "give the first shard's URL: NAME-00001-of-0000N.gguf")
        return first
    n = int(hit["count"])
    parts = urllib.parse.urlsplit(url)  # the last path segment renamed; a query (a signed URL's) kept
    folder = parts.path.rsplit("/", 1)[0]
    urls = [urllib.parse.urlunsplit(parts._replace(path=f"{folder}/{urllib.parse.quote(hit['prefix'])}-{i:05d}-of-"
                                                        f"{n:05d}.gguf")) for i in range(1, n + 1)]
    headers = [first if i == int(hit["no"]) - 1 else _read(u, traffic) for i, u in enumerate(urls)]
    for i, h in enumerate(headers):
        if (h.metadata.get("split.no"), h.metadata.get("split.count")) != (i, n):
            raise SentiricError(f"{urls[i]}: says it is shard {h.metadata.get('split.no')!r} of "
                                f"{h.metadata.get('split.count')!r}, expected {i} of {n}")
    tensors = [t for h in headers for t in h.tensors]
    if len({t.name for t in tensors}) != len(tensors):
        raise SentiricError(f"{urls[0]}: a tensor appears in two shards", "corrupt split model?")
    return replace(headers[0], tensors=tensors, shards=[h.path for h in headers],
                   warnings=[w for h in headers for w in h.warnings], file_size=sum(h.file_size for h in headers))


def _read(url: str, traffic: Traffic) -> GGUFHeader:
    size, validator = _head(url, traffic)
    import hashlib  # here: a local plan never needs it

    # a folder per URL holding the head under the file's own name: a split model's shadows keep gguf-split's names
    cache = cache_dir() / "headers" / hashlib.sha256(url.encode()).hexdigest()[:32]
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    blob, meta = cache / name, cache / "facts.json"
    if validator and size and _cached(meta, url, validator, size) and blob.is_file():
        traffic.cached = True
        return _finish(read_header(blob), url, size)
    buf = bytearray()
    want = min(FIRST_READ, size) if size else FIRST_READ
    while True:
        data, total = _range(url, len(buf), want, traffic)
        if size and total != size:
            raise SentiricError(f"{url}: the file changed while it was read ({size:,} then {total:,} bytes)")
        size = total
        buf += data
        try:
            header = parse(url, buf, size, len(buf))
            break
        except Short as short:
            if short.need > MOST:
                raise SentiricError(f"{url}: the header goes on past {MOST // 2**20} MiB", "is it a GGUF model?") from None
            want = min(size, max(short.need, 2 * len(buf)))
    head = bytes(buf[: min(len(buf), header.data_offset)])
    # kept even without a validator (never trusted then, only replaced): --measure dry-runs this file
    path = _store(cache, blob, meta, head, {"url": url, "validator": validator, "size": size})
    if path is None:  # an unwritable cache: a temporary copy, so --measure still has a file
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="sentiric-header-")) / name
        path.write_bytes(head)
    return _finish(read_header(path), url, size)


def _finish(local: GGUFHeader, url: str, size: int) -> GGUFHeader:
    """The header of the cached head, told the remote file's size (so the missing-data warning goes)."""
    warnings = [w for w in local.warnings if not w.startswith("tensor data is missing")]
    if local.data_bytes_needed > size - local.data_offset:
        warnings.append(f"{url}: the file is shorter than its tensors say ({size:,} bytes)")
    return replace(local, file_size=size, warnings=warnings, url=url)


def _request(url: str, method: str = "GET", headers: dict | None = None, allow: tuple[int, ...] = ()):
    """urlopen's answer; None for an error status in `allow`; any other failure is one line (SentiricError)."""
    import urllib.error  # here: urllib.request brings http.client, email and ssl, ~20 ms a local plan never needs
    import urllib.request

    req = urllib.request.Request(url, method=method, headers=headers or {})
    token = os.environ.get("HF_TOKEN")
    host = urllib.parse.urlsplit(url).netloc
    hub = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).netloc
    if token and (host == hub or host == "huggingface.co" or host.endswith(".huggingface.co")):
        # not sent on: a redirect to a CDN's signed URL must not carry the token elsewhere
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    req.add_header("User-Agent", "sentiric-plan")
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 - http(s) only, checked by resolve()
    except urllib.error.HTTPError as e:
        e.close()
        if e.code in allow:
            return None
        if 300 <= e.code < 400:
            raise SentiricError(f"{url}: redirects in a loop (HTTP {e.code})", "check the URL") from None
        if e.code in (401, 403):
            hint = "set HF_TOKEN to a token that may read it" if "/resolve/" in url else "does it need a token?"
            raise SentiricError(f"{url}: access refused (HTTP {e.code})", hint) from None
        if e.code == 404:
            raise SentiricError(f"{url}: not found (HTTP 404)", "check the URL, the file name and --revision") from None
        raise SentiricError(f"{url}: HTTP {e.code} {e.reason}") from None
    except TimeoutError:
        raise SentiricError(f"{url}: no answer within {TIMEOUT_S:g} s", "is the server up?") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise SentiricError(f"{url}: no answer within {TIMEOUT_S:g} s", "is the server up?") from None
        raise SentiricError(f"{url}: cannot connect ({getattr(e.reason, 'strerror', None) or e.reason})") from None
    except (OSError, ValueError) as e:
        raise SentiricError(f"{url}: cannot read ({e})") from None


def _head(url: str, traffic: Traffic) -> tuple[int | None, str]:
    """The file's size (None when the HEAD answer does not say: the first range's will) and a validator for the
    cache ('' when the server gives none: the cache is then never trusted)."""
    r = _request(url, "HEAD", allow=(405, 501))  # a server may not answer HEAD: the ranges will say the size
    traffic.requests += 1
    if r is None:
        return None, ""
    with r:
        length = r.headers.get("Content-Length")
        etag, modified = r.headers.get("ETag") or r.headers.get("X-Linked-Etag"), r.headers.get("Last-Modified")
    size = int(length) if length and length.isdigit() and int(length) > 0 else None
    return size, etag or (f"{modified}/{size}" if modified and size else "")


def _range(url: str, start: int, end: int, traffic: Traffic) -> tuple[bytes, int]:
    """Bytes [start, end) of the file (fewer at its end) and its size, refused unless the server answers with
    that range (206)."""
    with _request(url, headers={"Range": f"bytes={start}-{end - 1}"}) as r:
        traffic.requests += 1
        if r.status != 206:  # the whole file is on its way: closed unread
            raise SentiricError(f"{url}: the server does not answer range requests (HTTP {r.status} for a range)",
                                "plan needs a server that sends part of a file; or download the model")
        got = r.headers.get("Content-Range", "")
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", got.strip())
        if not m or int(m[1]) != start:
            raise SentiricError(f"{url}: the server sent another range than asked ({got or 'none'})")
        total = int(m[3])
        data = r.read(end - start + 1)
    traffic.bytes += len(data)
    if len(data) != min(end, total) - start:
        raise SentiricError(f"{url}: the server sent {len(data)} bytes of the {min(end, total) - start} asked")
    return data, total


def _cached(meta: Path, url: str, validator: str, size: int) -> bool:
    try:
        got = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return got == {"url": url, "validator": validator, "size": size}


def _store(cache: Path, blob: Path, meta: Path, head: bytes, facts: dict) -> Path | None:
    """Write the head and its facts, each atomically (a reader sees an old entry or the new one, never half)."""
    import tempfile

    try:
        cache.mkdir(parents=True, exist_ok=True)
        for target, data in ((blob, head), (meta, json.dumps(facts).encode())):
            fd, tmp = tempfile.mkstemp(dir=cache, prefix=".part-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
    except OSError:
        return None
    return blob
