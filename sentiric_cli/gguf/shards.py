"""Split GGUFs (`model-00001-of-00004.gguf`): one model in several files, read as one header.

llama.cpp (gguf-split) names shard i of n `{prefix}-{i:05d}-of-{n:05d}.gguf` and writes `split.no`,
`split.count` and `split.tensors.count` into each; the first file holds the model's metadata and
every file holds its own tensor infos. llama.cpp must be given the first shard; a plan accepts any.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from sentiric_cli.errors import SentiricError
from sentiric_cli.gguf.header import GGUFHeader, read_header

_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shard_paths(path: str | os.PathLike) -> list[Path]:
    """Every shard's path when `path` is named like a shard, else just `path`."""
    p = Path(path)
    hit = _NAME.match(p.name)
    if not hit or int(hit["count"]) < 2:
        return [p]
    count = int(hit["count"])
    return [p.with_name(f"{hit['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def first_shard(path: str | os.PathLike) -> Path:
    """The file llama.cpp must be given for a split model (it refuses the others)."""
    return shard_paths(path)[0]


def read_model(path: str | os.PathLike) -> GGUFHeader:
    """The header of a whole model: for a split GGUF, the first shard's metadata with every shard's tensors."""
    paths = shard_paths(path)
    given = read_header(path)
    count = given.metadata.get("split.count", 1)
    if len(paths) == 1 and (not isinstance(count, int) or count <= 1):
        return given
    if len(paths) == 1:  # split metadata but a renamed file: the other shards cannot be found
        raise SentiricError(f"{path}: shard {given.metadata.get('split.no', 0) + 1} of a model split into "
                            f"{count} files, but its name does not say where the others are",
                            "keep gguf-split's names: NAME-00001-of-0000N.gguf")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SentiricError(f"{path}: split model of {len(paths)} files; missing {', '.join(missing[:3])}"
                            + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""),
                            "download every shard into the same folder")
    headers = [given if p == Path(path) else read_header(p) for p in paths]
    for i, h in enumerate(headers):
        no, n = h.metadata.get("split.no"), h.metadata.get("split.count")
        if (no, n) != (i, len(paths)):
            raise SentiricError(f"{h.path}: says it is shard {no!r} of {n!r}, expected {i} of {len(paths)}",
                                "are shards of different models mixed in one folder?")
    first = headers[0]
    tensors = [t for h in headers for t in h.tensors]
    names = {t.name for t in tensors}
    if len(names) != len(tensors):
        raise SentiricError(f"{first.path}: a tensor appears in two shards", "corrupt split model?")
    warnings = [w for h in headers for w in h.warnings]
    return replace(first, tensors=tensors, warnings=warnings, shards=list(paths),
                   file_size=sum(h.file_size for h in headers))
