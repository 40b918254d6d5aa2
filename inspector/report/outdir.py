"""A report directory written by one run at a time, where only files this tool wrote are ever removed.

- :func:`locked`: an exclusive lock on the directory itself (``flock``) while a report is written, so two
  runs writing the same ``--out`` at once take turns; the directory ends with one run's complete set.
  A run that cannot take turns (``scan``, which may run for hours) asks not to wait and fails at once.
- A manifest (``.winspect-report.json``) lists the files a run wrote, with their size and modification
  time. A later run removes a file of the earlier set that it does not write again (a plot page that no
  longer exists) only if the manifest lists it, it is unchanged since, and it is not protected (an input,
  or a file an input reads). Nothing is removed by its name's pattern.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..errors import OutputError

MANIFEST = ".winspect-report.json"
MAX_MANIFEST_BYTES = 1 << 20

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None


@contextlib.contextmanager
def locked(out: Path, wait: bool = True):
    """Hold an exclusive lock on directory ``out``: wait for another run's lock to be released, or, when
    not ``wait``, raise OutputError at once if another run holds it."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        raise OutputError(f"{out}: cannot open the report directory ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise OutputError(f"{out}: another winspect run is writing this directory; wait for it to end "
                              "or choose another output directory") from None
        yield
    finally:
        os.close(fd)


def earlier_files(out: Path) -> dict[str, list[int]]:
    """name -> [size, mtime_ns] of the files the earlier run wrote ({} without a readable manifest)."""
    path = out / MANIFEST
    try:
        if not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
            return {}
        files = json.loads(path.read_text("utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError, UnicodeError):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, list) and len(v) == 2}


def is_protected(path: Path, protect) -> bool:
    for p in protect:
        with contextlib.suppress(OSError):
            if path.exists() and path.samefile(p):
                return True
    return False


def refuse_protected(path: Path, protect) -> None:
    if is_protected(path, protect):
        raise OutputError(f"{path}: is an input of this command; refusing to overwrite it")


def signature(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def remove_stale(out: Path, earlier: dict, written: set[str], protect) -> None:
    """Remove the earlier run's files that this run did not write, when unchanged and not protected."""
    for name, sig in earlier.items():
        path = out / name
        if name in written or Path(name).name != name or name.startswith("."):
            continue
        if not path.is_file() or path.is_symlink() or is_protected(path, protect):
            continue
        with contextlib.suppress(OSError):
            if signature(path) != sig:
                continue  # changed since that run wrote it: no longer ours
            path.unlink()


def manifest(out: Path, written: set[str]) -> dict:
    files = {}
    for name in sorted(written):
        with contextlib.suppress(OSError):
            files[name] = signature(out / name)
    return {"written_by": "winspect --out", "files": files}
