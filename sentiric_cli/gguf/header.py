"""Read a GGUF file's header (metadata and tensor infos) without touching tensor data.

Hostile files are expected: every count and length is checked against the bytes that are
actually left in the file before anything is allocated, so memory stays bounded by the
file size and a bad file raises SentiricError, never a Python traceback.
Large arrays (the vocabulary) are walked but not kept: only their length is stored.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.quants import DEFAULT_ALIGNMENT, GGUF_MAGIC, TYPES

SUPPORTED_VERSIONS = (2, 3)
MAX_KEPT_ARRAY = 4096  # per-layer arrays are at most a few hundred long; the vocabulary is not kept
# counts past any real model (vocabularies ~262k, merges ~500k, tensors a few thousand, keys a few dozen): bounded
# by count as well as by bytes, or a sparse file declaring 2^32 empty strings is walked for minutes
MAX_ARRAY, MAX_TENSORS, MAX_KV = 1 << 22, 1 << 16, 1 << 16
MAX_DIMS = 4  # GGML_MAX_DIMS
_SCALARS = {  # GGUFValueType -> struct format
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9
HINT = "is it a complete .gguf model file?"


@dataclass(frozen=True)
class SkippedArray:
    """An array too long to keep (e.g. tokenizer.ggml.tokens): only its type and length."""

    item_type: int
    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne0 first
    type: int
    offset: int  # relative to the data section

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @cached_property  # a plan sums every tensor's bytes for each option it weighs
    def n_bytes(self) -> int:
        _, block, size = TYPES[self.type]
        return self.n_elements // block * size

    @property
    def type_name(self) -> str:
        return TYPES[self.type][0]


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict
    tensors: list[TensorInfo]
    data_offset: int
    file_size: int
    warnings: list[str] = field(default_factory=list)
    shards: list[Path] = field(default_factory=list)  # every file of a split model, first first (shards.py)
    url: str = ""  # where a remote model's header was read from (remote.py); `path` is then its cached head
    # figures derived from the tensors, kept by whoever computes them (a plan weighs ~100 shapes of one header);
    # not an init field, so dataclasses.replace (shards.py) starts a new one
    memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def data_bytes_needed(self) -> int:
        return max((t.offset + t.n_bytes for t in self.tensors), default=0)


class Short(Exception):
    """The header goes on past the bytes read so far (a remote file read in ranges): read up to `need`."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


_U64 = struct.Struct("<Q")


class _Cursor:
    """Reads `buf`, the first `have` bytes of a file of `size` bytes (have == size for a local file)."""

    def __init__(self, buf, size: int, have: int | None = None) -> None:
        self.buf, self.size, self.pos = buf, size, 0
        self.have = size if have is None else have

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise SentiricError(f"truncated GGUF header: {what} at byte {self.pos} runs past the end", HINT)
        if self.pos + n > self.have:
            raise Short(self.pos + n)

    def scalar(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what)
        self.need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        n = self.scalar("<Q", what)
        self.need(n, what)
        self.pos += n

    def count(self, what: str, min_item_bytes: int, most: int) -> int:
        """A count read from the file, refused if that many items cannot fit in the bytes left, or past `most`."""
        n = self.scalar("<Q", what)
        if n * min_item_bytes > self.size - self.pos:
            raise SentiricError(f"corrupt GGUF header: {what} says {n}, more than the file can hold", HINT)
        if n > most:
            raise SentiricError(f"corrupt GGUF header: {what} says {n:,}, past any real model ({most:,})", HINT)
        return n


def _value(cur: _Cursor, vtype: int, key: str):
    if vtype in _SCALARS:
        return cur.scalar(_SCALARS[vtype], key)
    if vtype == _STRING:
        return cur.string(key)
    if vtype == _ARRAY:
        itype = cur.scalar("<I", key)
        if itype == _ARRAY:
            raise SentiricError(f"corrupt GGUF header: nested array in {key!r}", HINT)
        if itype != _STRING and itype not in _SCALARS:
            raise SentiricError(f"corrupt GGUF header: unknown array type {itype} in {key!r}", HINT)
        item = 8 if itype == _STRING else struct.calcsize(_SCALARS[itype])
        n = cur.count(f"length of {key!r}", item, MAX_ARRAY)
        if n > MAX_KEPT_ARRAY:
            if itype == _STRING:
                _skip_strings(cur, n, key)
            else:
                cur.pos += n * item
            return SkippedArray(itype, n)
        return [_value(cur, itype, key) for _ in range(n)]
    raise SentiricError(f"corrupt GGUF header: unknown value type {vtype} for {key!r}", HINT)


def _skip_strings(cur: _Cursor, n: int, key: str) -> None:
    """cur.skip_string n times, in one loop over locals: a vocabulary is ~150k strings, the bulk of a header."""
    buf, pos, end, unpack = cur.buf, cur.pos, min(cur.size, cur.have), _U64.unpack_from
    done = 0
    while done < n and pos + 8 <= end:
        (length,) = unpack(buf, pos)
        if pos + 8 + length > end:
            break
        pos += 8 + length
        done += 1
    cur.pos = pos
    for _ in range(n - done):  # past the bytes at hand: the cursor's own checks say whether truncated or short
        cur.skip_string(key)


def _tensor(cur: _Cursor, index: int) -> TensorInfo:
    name = cur.string(f"name of tensor {index}")
    n_dims = cur.scalar("<I", f"dims of {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise SentiricError(f"corrupt GGUF header: tensor {name!r} has {n_dims} dimensions", HINT)
    shape = tuple(cur.scalar("<Q", f"shape of {name!r}") for _ in range(n_dims))
    ttype = cur.scalar("<I", f"type of {name!r}")
    try:
        _, block, _ = TYPES[ttype]
    except KeyError:
        raise SentiricError(f"unknown tensor type {ttype} for {name!r}", "a newer GGUF than sentiric knows?") from None
    if any(d <= 0 or d >= 2**62 for d in shape) or shape[0] % block:
        raise SentiricError(f"corrupt GGUF header: tensor {name!r} has shape {list(shape)}", HINT)
    offset = cur.scalar("<Q", f"offset of {name!r}")
    return TensorInfo(name, shape, ttype, offset)


def read_header(path: str | os.PathLike) -> GGUFHeader:
    p = Path(path)
    try:  # exists() itself raises OSError for e.g. a name too long
        if not p.exists():
            raise SentiricError(f"{p}: no such file", "check the model path")
        if p.is_dir():
            raise SentiricError(f"{p}: is a directory, not a GGUF file", "point at the .gguf file inside it")
        size = p.stat().st_size
        if size == 0:
            raise SentiricError(f"{p}: empty file, not a GGUF model", HINT)
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            header = parse(p, buf, size)
    except OSError as e:
        raise SentiricError(f"{p}: cannot read ({e.strerror or e})", "check the path and permissions") from None
    return header


def parse(p: Path | str, buf, size: int, have: int | None = None) -> GGUFHeader:
    """The header of a file of `size` bytes from `buf`, its first `have` bytes (at least 4; all by default).
    Raises Short when the header goes on past them. `p` names the file in errors (a URL for a remote one)."""
    cur = _Cursor(buf, size, have)
    if size < 4 or struct.unpack_from("<I", buf, 0)[0] != GGUF_MAGIC:
        raise SentiricError(f"{p}: not a GGUF file (bad magic)", "sentiric reads .gguf models (llama.cpp's format)")
    cur.pos = 4
    version = cur.scalar("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        raise SentiricError(f"{p}: GGUF version {version} is not supported (only 2 and 3)", "re-convert the model")
    n_tensors = cur.count("tensor count", 8 + 4 + 8 + 4 + 8, MAX_TENSORS)
    n_kv = cur.count("metadata count", 8 + 4 + 1, MAX_KV)
    metadata: dict = {}
    for i in range(n_kv):
        key = cur.string(f"key {i}")
        vtype = cur.scalar("<I", f"type of {key!r}")
        metadata[key] = _value(cur, vtype, key)
    tensors = [_tensor(cur, i) for i in range(n_tensors)]
    align = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise SentiricError(f"{p}: general.alignment {align!r} is not a power of two", HINT)
    data_offset = -(-cur.pos // align) * align
    header = GGUFHeader(Path(p), version, metadata, tensors, data_offset, size)
    have = size - data_offset
    if header.data_bytes_needed > have:
        header.warnings.append(
            f"tensor data is missing or cut short: the file holds {max(have, 0):,} of "
            f"{header.data_bytes_needed:,} data bytes (planned from the header alone)"
        )
    return header
