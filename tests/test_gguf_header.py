"""read_header: real files (the bundled model, synthetic models, hand-built headers), hostile input, fuzzing."""

from __future__ import annotations

import functools
import shutil
import struct
import tempfile
import tracemalloc
from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synth import write_model

from sentiric_cli.bundled import bundled_model
from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.header import MAX_KEPT_ARRAY, GGUFHeader, SkippedArray, read_header

# ---------------------------------------------------------------- hand-built GGUF bytes

U8, I32, U32, F32, BOOL, STRING, ARRAY, U64 = 0, 5, 4, 6, 7, 8, 9, 10


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, U32, struct.pack("<I", value))


def kv_array(key: str, itype: int, items: list[bytes], length: int | None = None) -> bytes:
    n = len(items) if length is None else length
    return kv(key, ARRAY, struct.pack("<IQ", itype, n) + b"".join(items))


def tensor(name: str, shape: tuple[int, ...], ttype: int = 0, offset: int = 0, n_dims: int | None = None) -> bytes:
    n = len(shape) if n_dims is None else n_dims
    return gstr(name) + struct.pack("<I", n) + b"".join(struct.pack("<Q", d) for d in shape) + struct.pack(
        "<IQ", ttype, offset
    )


def gguf_bytes(kvs=(), tensors=(), *, magic=b"GGUF", version=3, n_tensors=None, n_kv=None, tail=b"") -> bytes:
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    return head + b"".join(kvs) + b"".join(tensors) + tail


GOOD_KVS = (
    kv("general.architecture", STRING, gstr("llama")),
    kv_u32("llama.block_count", 2),
    kv_array("llama.tags", STRING, [gstr("a"), gstr("bc")]),
    kv_array("llama.layers", I32, [struct.pack("<i", v) for v in (-1, 7)]),
    kv("llama.flag", BOOL, b"\x01"),
    kv("llama.eps", F32, struct.pack("<f", 0.5)),
)
GOOD_TENSORS = (tensor("token_embd.weight", (8, 4)), tensor("output_norm.weight", (8,), offset=128))


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.fixture(scope="module")
def synth_llama(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("synth") / "llama.gguf", "llama", tensor_type="q8_0")


# ---------------------------------------------------------------- real files


def test_hand_built_header_reads_every_value_type(tmp_path):
    head = gguf_bytes(GOOD_KVS, GOOD_TENSORS)
    aligned = -(-len(head) // 32) * 32
    data = 128 + 8 * 4  # f32 tensors: 8x4 at 0, 8 at 128
    h = read_header(write(tmp_path, head.ljust(aligned, b"\0") + b"\0" * data))
    assert h.version == 3 and h.data_offset == aligned
    assert h.metadata == {
        "general.architecture": "llama", "llama.block_count": 2, "llama.tags": ["a", "bc"],
        "llama.layers": [-1, 7], "llama.flag": True, "llama.eps": 0.5,
    }
    assert [(t.name, t.shape, t.type, t.offset) for t in h.tensors] == [
        ("token_embd.weight", (8, 4), 0, 0), ("output_norm.weight", (8,), 0, 128)]
    assert h.data_offset % 32 == 0 and h.data_offset >= len(gguf_bytes(GOOD_KVS, GOOD_TENSORS))
    assert h.data_bytes_needed == 128 + 32
    assert h.warnings == []


def test_version_2_is_read(tmp_path):
    h = read_header(write(tmp_path, gguf_bytes(GOOD_KVS, version=2)))
    assert h.version == 2 and h.metadata["llama.tags"] == ["a", "bc"] and h.tensors == []


def test_bundled_model():
    h = read_header(bundled_model())
    md = h.metadata
    assert md["general.architecture"] == "gemma3"
    assert md["gemma3.block_count"] == 18 and md["gemma3.embedding_length"] == 640
    tokens = md["tokenizer.ggml.tokens"]
    assert tokens == SkippedArray(item_type=STRING, length=262144)
    assert isinstance(md["tokenizer.ggml.scores"], SkippedArray) and md["tokenizer.ggml.scores"].length == 262144
    assert len(h.tensors) == 236
    assert len({t.name for t in h.tensors}) == 236
    # the tensors fill the data section exactly: sizes and offsets agree with the file
    ends = sorted((t.offset, t.offset + t.n_bytes) for t in h.tensors)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(ends, ends[1:], strict=False))
    assert h.data_offset + h.data_bytes_needed == h.file_size == bundled_model().stat().st_size
    assert h.warnings == []


def test_synthetic_model_matches_gguf_reader(synth_llama):
    h = read_header(synth_llama)
    r = gguf.GGUFReader(synth_llama)
    assert h.data_offset == r.data_offset
    assert [(t.name, t.shape, t.type, t.offset) for t in h.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset) - r.data_offset)
        for t in r.tensors]
    assert [t.n_bytes for t in h.tensors] == [int(t.n_bytes) for t in r.tensors]
    for key in ("general.architecture", "llama.block_count", "llama.context_length", "general.name",
                "llama.attention.head_count_kv", "llama.attention.layer_norm_rms_epsilon"):
        assert h.metadata[key] == pytest.approx(r.fields[key].contents()), key
    # 512 tokens < MAX_KEPT_ARRAY: kept as a list
    assert h.metadata["tokenizer.ggml.tokens"] == r.fields["tokenizer.ggml.tokens"].contents()


def test_long_arrays_are_skipped_not_kept(tmp_path):
    n = MAX_KEPT_ARRAY + 1
    strings = kv_array("tokenizer.ggml.tokens", STRING, [gstr(f"t{i}") for i in range(n)])
    ints = kv_array("tokenizer.ggml.token_type", I32, [struct.pack("<i", 1)] * n)
    short = kv_array("x.short", U8, [b"\x02"] * MAX_KEPT_ARRAY)
    h = read_header(write(tmp_path, gguf_bytes([strings, ints, short, kv_u32("after", 9)])))
    assert h.metadata["tokenizer.ggml.tokens"] == SkippedArray(STRING, n)
    assert h.metadata["tokenizer.ggml.token_type"] == SkippedArray(I32, n)
    assert h.metadata["x.short"] == [2] * MAX_KEPT_ARRAY
    assert h.metadata["after"] == 9  # the cursor walked past the skipped arrays correctly


@pytest.mark.parametrize("arch", ["llama", "gemma3", "mamba", "deepseek2"])
def test_tensor_bytes_sum_to_llama_cpp_model_size(tmp_path, arch):
    llama_cpp = pytest.importorskip("llama_cpp")
    path = write_model(tmp_path / f"{arch}.gguf", arch, tensor_type="q8_0")
    h = read_header(path)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    assert model
    try:
        assert sum(t.n_bytes for t in h.tensors) == llama_cpp.llama_model_size(model)
        assert sum(t.n_elements for t in h.tensors) == llama_cpp.llama_model_n_params(model)
    finally:
        llama_cpp.llama_model_free(model)


def test_tensor_data_cut_short_still_reads_with_a_warning(tmp_path, synth_llama):
    full = read_header(synth_llama)
    cut = write(tmp_path, synth_llama.read_bytes()[: full.data_offset + 100], "cut.gguf")
    h = read_header(cut)
    assert [t.name for t in h.tensors] == [t.name for t in full.tensors]
    assert h.metadata.keys() == full.metadata.keys()
    assert len(h.warnings) == 1 and "missing" in h.warnings[0]
    assert f"{100:,} of {full.data_bytes_needed:,}" in h.warnings[0]
    assert full.warnings == []


def test_header_only_file_warns(tmp_path, synth_llama):
    full = read_header(synth_llama)
    h = read_header(write(tmp_path, synth_llama.read_bytes()[: full.data_offset], "head.gguf"))
    assert "missing" in h.warnings[0] and "holds 0 of" in h.warnings[0]


# ---------------------------------------------------------------- hostile and broken input


PAD = b"\0" * 64  # bytes after the bad field, so the count checks pass and the field itself is refused
HOSTILE = {
    "bad magic": (gguf_bytes(GOOD_KVS, magic=b"GGML"), "bad magic"),
    "short file": (b"GG", "bad magic"),
    "version 1": (gguf_bytes(GOOD_KVS, version=1), "version 1 is not supported"),
    "version 99": (gguf_bytes(GOOD_KVS, version=99), "version 99 is not supported"),
    "big-endian version": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "not supported"),
    "no counts": (b"GGUF" + struct.pack("<I", 3), "truncated"),
    "absurd tensor count": (gguf_bytes(GOOD_KVS, n_tensors=2**60), "tensor count says 1152921504606846976"),
    "absurd kv count": (gguf_bytes(GOOD_KVS, n_kv=2**60), "metadata count says 1152921504606846976"),
    "max kv count": (gguf_bytes(GOOD_KVS, n_kv=2**64 - 1), "more than the file can hold"),
    "absurd key length": (gguf_bytes([struct.pack("<Q", 2**60) + b"key"], tail=PAD),
                          "key 0 at byte 32 runs past the end"),
    "absurd string value": (gguf_bytes([kv("k", STRING, struct.pack("<Q", 2**62) + b"abc")], tail=PAD),
                            "truncated GGUF header: k at byte 45 runs past the end"),
    "absurd array length": (gguf_bytes([kv_array("a", U32, [b"\0" * 4], length=2**60)]),
                            "length of 'a' says 1152921504606846976"),
    "absurd string array": (gguf_bytes([kv_array("a", STRING, [gstr("x")], length=2**40)]),
                            "more than the file can hold"),
    "nested array": (gguf_bytes([kv_array("n", ARRAY, [struct.pack("<IQ", U8, 0)])]), "nested array in 'n'"),
    "unknown value type": (gguf_bytes([kv("k", 13, b"\0" * 8)]), "unknown value type 13 for 'k'"),
    "unknown value type huge": (gguf_bytes([kv("k", 2**32 - 1, b"\0" * 8)]), "unknown value type 4294967295"),
    "unknown array item type": (gguf_bytes([kv_array("a", 77, [b"\0" * 8])]), "unknown array type 77 in 'a'"),
    "cut before the counts fit": (gguf_bytes(GOOD_KVS, GOOD_TENSORS)[:60], "more than the file can hold"),
    "cut inside metadata": (gguf_bytes(GOOD_KVS)[:124], "truncated GGUF header: llama.tags at byte"),
    "cut inside a value": (gguf_bytes([kv("k", U64, b"\1\2\3")]), "truncated GGUF header: k at byte 37"),
    "cut inside tensor infos": (gguf_bytes(GOOD_KVS, GOOD_TENSORS)[:-5], "truncated GGUF header"),
    "tensor with 0 dims": (gguf_bytes(tensors=[tensor("t", (), n_dims=0)]), "'t' has 0 dimensions"),
    "tensor with 5 dims": (gguf_bytes(tensors=[tensor("t", (1, 1, 1, 1, 1))]), "'t' has 5 dimensions"),
    "tensor with 2**32-1 dims": (gguf_bytes(tensors=[tensor("t", (1,), n_dims=2**32 - 1)]), "4294967295 dimensions"),
    "unknown tensor type 4": (gguf_bytes(tensors=[tensor("t", (32,), ttype=4)]), "unknown tensor type 4 for 't'"),
    "unknown tensor type 999": (gguf_bytes(tensors=[tensor("t", (32,), ttype=999)]), "unknown tensor type 999"),
    "zero-sized dim": (gguf_bytes(tensors=[tensor("t", (8, 0))]), "'t' has shape [8, 0]"),
    "absurd dim": (gguf_bytes(tensors=[tensor("t", (8, 2**63))]), "has shape"),
    "q8_0 row not whole blocks": (gguf_bytes(tensors=[tensor("t", (33, 2), ttype=8)]), "has shape [33, 2]"),
    "alignment not a power of two": (gguf_bytes([kv_u32("general.alignment", 48)]), "48 is not a power of two"),
    "alignment zero": (gguf_bytes([kv_u32("general.alignment", 0)]), "0 is not a power of two"),
    "alignment a string": (gguf_bytes([kv("general.alignment", STRING, gstr("32"))]), "'32' is not a power"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_input_raises_sentiric_error(tmp_path, case):
    data, expected = HOSTILE[case]
    with pytest.raises(SentiricError) as err:
        read_header(write(tmp_path, data))
    assert expected in err.value.message
    assert err.value.hint  # every error says what to do next


def test_the_hostile_cases_differ_from_a_valid_file_in_one_place(tmp_path):
    """The valid baseline the hostile cases are built from reads: each failure above is the one change."""
    h = read_header(write(tmp_path, gguf_bytes(GOOD_KVS, GOOD_TENSORS)))
    assert len(h.metadata) == len(GOOD_KVS) and len(h.tensors) == 2
    read_header(write(tmp_path, gguf_bytes(tensors=[tensor("t", (64, 2), ttype=8)])))  # q8_0, whole blocks
    read_header(write(tmp_path, gguf_bytes([kv_u32("general.alignment", 64)])))
    read_header(write(tmp_path, gguf_bytes([kv_array("a", U32, [b"\0" * 4])])))


def test_directory(tmp_path):
    with pytest.raises(SentiricError, match="is a directory"):
        read_header(tmp_path)


def test_empty_file(tmp_path):
    with pytest.raises(SentiricError, match="empty file"):
        read_header(write(tmp_path, b""))


def test_missing_file(tmp_path):
    with pytest.raises(SentiricError, match="no such file") as err:
        read_header(tmp_path / "nope.gguf")
    assert str(tmp_path / "nope.gguf") in err.value.message


def test_name_too_long(tmp_path):
    with pytest.raises(SentiricError, match="cannot read|no such file"):
        read_header(tmp_path / ("a" * 5000))


# ---------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_MEM_BASE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def fuzz_dir():
    d = Path(tempfile.mkdtemp(prefix="sentiric-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@functools.cache
def small_header() -> bytes:
    """A real synthetic model cut to its header plus a little data (about 15 kB).

    A plain cached function, not a fixture, so a failing example does not print all of it."""
    with tempfile.TemporaryDirectory() as d:
        path = write_model(Path(d) / "llama.gguf", "llama", tensor_type="q8_0")
        return path.read_bytes()[: read_header(path).data_offset + 64]


def _read_bounded(path: Path) -> GGUFHeader | None:
    """read_header either returns a header or raises SentiricError, within bounded memory."""
    size = path.stat().st_size
    tracemalloc.start()
    try:
        try:
            header = read_header(path)
        except SentiricError as e:
            assert e.message
            header = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < _MEM_BASE + 4 * size, f"peak {peak} bytes for a {size}-byte file"
    if header is not None:
        assert isinstance(header, GGUFHeader)
        assert header.data_offset <= 2**64 and header.file_size == size
        assert all(1 <= len(t.shape) <= 4 for t in header.tensors)
    return header


_u64 = st.one_of(st.integers(0, 8), st.integers(0, 2**64 - 1), st.sampled_from([2**60, 2**63, 2**64 - 1]))


@FUZZ
@given(counts=st.tuples(_u64, _u64), body=st.binary(max_size=2048), raw=st.booleans())
def test_fuzz_random_bytes_after_magic(fuzz_dir, counts, body, raw):
    head = b"GGUF" + struct.pack("<I", 3)
    if not raw:  # plausible counts, so the reader gets past them into the key/value parser
        head += struct.pack("<QQ", *counts)
    p = fuzz_dir / "random.gguf"
    p.write_bytes(head + body)
    _read_bounded(p)


@FUZZ
@given(data=st.data())
def test_fuzz_flipped_and_truncated_real_header(fuzz_dir, data):
    buf = bytearray(small_header())
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)), max_size=8))
    for pos, value in flips:
        buf[pos] = value
    # set a whole 8-byte length or count somewhere to a large value now and then
    overwrite = data.draw(st.booleans())
    if overwrite:
        pos = data.draw(st.integers(0, len(buf) - 8))
        buf[pos : pos + 8] = struct.pack("<Q", data.draw(_u64))
    cut = data.draw(st.integers(0, len(buf)))
    p = fuzz_dir / "flipped.gguf"
    p.write_bytes(bytes(buf[: cut or len(buf)]))
    header = _read_bounded(p)
    if not flips and not overwrite and cut in (0, len(buf)):
        assert header is not None and header.metadata["general.architecture"] == "llama"


def test_fuzz_baseline_reads(tmp_path):
    """Unmutated, the fuzzing seed is a valid header (so the fuzz mutates something that works)."""
    h = _read_bounded(write(tmp_path, small_header()))
    assert h is not None and len(h.tensors) > 10 and "missing" in h.warnings[0]


def test_counts_are_bounded_by_count_not_only_by_bytes(tmp_path):
    """A sparse file declaring 2^32 empty strings fits its bytes, but would be walked for minutes."""
    p = tmp_path / "sparse.gguf"
    head = gguf_bytes([kv_array("tokenizer.ggml.tokens", STRING, [], length=2**32)])
    with open(p, "wb") as f:
        f.write(head)
        f.truncate(len(head) + 8 * 2**32 + 64)  # sparse: no disk used
    with pytest.raises(SentiricError, match="past any real model"):
        read_header(p)
    many = gguf_bytes([kv_u32(f"k{i}", i) for i in range(10)], n_kv=(1 << 16) + 1, tail=b"\0" * (14 << 20))
    with pytest.raises(SentiricError, match="metadata count"):
        read_header(write(tmp_path, many, "many.gguf"))
