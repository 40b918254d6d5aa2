"""Where an output file really goes: a device or pipe is written directly, a symlink's target is replaced.

The temporary-file-and-rename that keeps a regular file intact on failure must not be applied to
``/dev/full``, ``/dev/stdout`` (a symlink to a pipe or terminal), a FIFO or a socket: the rename would
put a regular file where the device or link was. A symlink to a regular file keeps its link: the
file it points to is replaced.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import OutputError


def target_of(path: Path) -> tuple[Path, bool]:
    """(the path to write, whether to write it directly rather than through a temporary file)."""
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        return path, False
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        return path, True  # a device, FIFO or socket: open it as it is
    real = Path(os.path.realpath(path))
    if str(real).startswith(("/proc/", "/dev/")):  # /dev/stdout redirected to a file: still that descriptor
        return path, True
    return real, False


def write_direct(path: Path, write, binary: bool) -> Path:
    """Write to a non-regular file as it is; a full device (ENOSPC) or a closed reader is an error."""
    try:
        with open(path, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
    except OSError as e:
        why = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise OutputError(f"{path}: cannot write ({why})") from None
    return path
