"""Names and shapes as the tables spell them: natural order, the wrappers' prefixes, shape strings.

The ground floor: loaders, analyses and tables all use these, so they depend on nothing.
"""

from __future__ import annotations

import re

STRIP_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP and torch.compile wrappers


def natural_key(s: str):
    """Sort key putting ``layer2`` before ``layer10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def strip_prefixes(name: str) -> str:
    """A tensor name without the wrappers' prefixes (``module.``, ``_orig_mod.``), however nested."""
    changed = True
    while changed:
        changed = False
        for p in STRIP_PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name


def shape_str(shape) -> str:
    """``3x3x64`` for a shape, ``scalar`` for a 0-d one (the tables' ``shape`` column)."""
    return "x".join(str(s) for s in shape) if len(shape) else "scalar"
