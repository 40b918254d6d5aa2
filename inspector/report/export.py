"""CSV and JSON exporters. Files are written atomically: a temporary file, then a rename.

The path ``-`` is standard output.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..finding import Finding
from ..table.frame import Frame
from .outfile import target_of, write_direct


def _read_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once, at write time (never at import)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """What open() would give a new file now (mkstemp gives 0600)."""
    return 0o666 & ~_read_umask()


def atomic_write(path, write, binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` (text, or bytes if ``binary``), then rename it;
    on standard output when ``path`` is ``-``; directly on a device, FIFO or socket; over the file a symlink
    points to (the link stays)."""
    if str(path) == "-":
        stream = sys.stdout.buffer if binary else sys.stdout
        write(stream)
        stream.flush()
        return Path("-")
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    path, direct = target_of(path)
    if direct:
        return write_direct(path, write, binary)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    replace_file(str(path), write, binary)
    return path


def replace_file(path: str, write, binary: bool = True) -> str:
    """Call ``write(file)`` on a hidden temporary file beside ``path`` (a regular file or none, in a folder
    that exists), then rename it over ``path``. With os.path only, so that it costs no memory that grows
    with the files written: pathlib interns every name it parses (the interpreter's table of interned
    strings grows by a step once thousands of new names went through it, as a scan's tensor files do)."""
    folder, name = os.path.split(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as f:
            write(f)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        raise
    return path


def write_bytes(data: bytes, path) -> Path:
    return atomic_write(path, lambda f: f.write(data), binary=True)


def write_text(text: str, path) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_csv(df, path) -> Path:
    """A table (a Frame or a pandas DataFrame) as CSV, without the index."""
    if isinstance(df, Frame):
        return atomic_write(path, df.write_csv)
    return atomic_write(path, lambda f: df.to_csv(f, index=False))


def jsonable(obj):
    """Plain JSON values: NaN and ±Inf become null, numpy scalars become numbers, tables become row lists."""
    pd = sys.modules.get("pandas")  # a DataFrame or pandas.NA exists only once pandas is imported
    if isinstance(obj, Frame):
        return [jsonable(r) for r in obj.records()]
    if pd is not None and isinstance(obj, pd.DataFrame):
        return [jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, Finding):
        return jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or (pd is not None and obj is pd.NA) or (isinstance(obj, float) and math.isnan(obj)):
        return None
    return obj if isinstance(obj, str) else str(obj)


def write_json(payload, path) -> Path:
    data = jsonable(payload)
    return atomic_write(path, lambda f: json.dump(data, f, indent=1, allow_nan=False))
