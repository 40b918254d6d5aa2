"""Shard indexes shared by several formats: ``*.safetensors.index.json``, ``*.bin.index.json`` and
Keras 3 ``*.weights.json`` all map tensor (or variable) names to shard files next to the index.

Indexes are untrusted JSON: read with a size cap, duplicate keys refused, shard paths kept inside
the index's directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CorruptCheckpoint
from ..names import natural_key


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def parse_json(blob: bytes, path, what: str):
    """JSON text (UTF-8, no duplicate keys) or CorruptCheckpoint naming the file and ``what`` it is."""
    try:
        return json.loads(blob.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise CorruptCheckpoint(f"{path}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except _DuplicateKey as e:
        raise CorruptCheckpoint(f"{path}: {what} lists {str(e)!r} twice (a duplicate would hide data)") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, over-long integers, absurd nesting
        why = str(e).split(";")[0][:200] or type(e).__name__
        raise CorruptCheckpoint(f"{path}: {what} is not valid JSON ({why})") from None


MAX_INDEX = 64 * 1024 * 1024


def is_json_index(path: Path) -> bool:
    """A shard index by name and content (a checkpoint merely named ``*.index.json`` is not one)."""
    if not path.name.endswith(".index.json"):
        return False
    with path.open("rb") as f:
        return f.read(64).lstrip()[:1] == b"{"


def read_weight_map(index: Path, what: str):
    """The ``weight_map`` of a JSON shard index (None when the JSON has none), read with a size cap."""
    try:
        with index.open("rb") as f:
            blob = f.read(MAX_INDEX + 1)
    except OSError as e:
        raise CorruptCheckpoint(f"{index}: cannot read ({e.strerror or e})") from None
    if len(blob) > MAX_INDEX:
        raise CorruptCheckpoint(f"{index}: {what} is larger than {MAX_INDEX} bytes")
    data = parse_json(blob, index, what)
    return data.get("weight_map") if isinstance(data, dict) else None


def shard_files(index: Path, names, plain: bool = False) -> list[Path]:
    """The files ``names`` next to ``index``, each once, in natural order. They must exist and stay
    inside the index's directory; ``plain``: each must be a bare file name (no subdirectory)."""
    files = []
    for name in sorted(set(names), key=natural_key):
        p = Path(name)
        if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in name or (plain and p.name != name):
            where = "is not a file next to the index" if plain else "points outside the checkpoint directory"
            raise CorruptCheckpoint(f"{index}: shard path {name!r} {where}")
        path = index.parent / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{index}: shard {name} is missing")
        files.append(path)
    return files


def shards_of_index(index: Path) -> list[Path]:
    """Shard files named by a shard index (``*.safetensors.index.json``, ``*.bin.index.json``), in order."""
    weight_map = read_weight_map(index, "shard index")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CorruptCheckpoint(f"{index}: not a valid shard index (no weight_map of tensor names to file names)")
    return shard_files(index, weight_map.values())


def is_json_index_head(path: Path, head: bytes) -> bool:
    """A shard index by name and first bytes (for sniffing)."""
    return path.name.endswith(".index.json") and head.lstrip()[:1] == b"{"


def keras_shards(index: Path) -> list[Path]:
    """The shard files a Keras 3 ``*.weights.json`` index names (``weight_map``: variable path ->
    file name or list of file names), in shard order; each must be a file next to the index."""
    weight_map = read_weight_map(index, "Keras shard index")
    names: list = []
    if isinstance(weight_map, dict):
        for v in weight_map.values():
            names.extend(v if isinstance(v, list) else [v])
    if not isinstance(weight_map, dict) or not names or not all(isinstance(n, str) for n in names):
        raise CorruptCheckpoint(f"{index}: not a Keras shard index (no weight_map of variable paths to file names)")
    return shard_files(index, names, plain=True)
