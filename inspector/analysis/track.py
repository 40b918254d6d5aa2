"""Tracking one training run across checkpoints: ordering, and the per-checkpoint pass.

Sources are paths or globs, expanded here (a glob that matches nothing is an error), then
put in natural order (``epoch2`` before ``epoch10``) whatever order they were given in, then in
step order when every name carries its own step (:func:`checkpoint_steps`).
Each checkpoint is read once for its statistics; the same chunk pass feeds a
:class:`~inspector.analysis.diff.PairedChange` that reads the previous checkpoint's tensor
in lockstep, giving the change (and sign flips) from the previous step.
"""

from __future__ import annotations

import glob
import os
import re

from ..errors import InspectorError, SourceNotFound
from ..kinds import step_from_name
from ..names import natural_key
from .diff import PairedChange, align_names

_GLOB_CHARS = "*?["


def source_list(sources) -> list[str]:
    """A list of sources from one path / name / glob or an iterable of them."""
    if isinstance(sources, (str, os.PathLike)):
        return [str(sources)]
    return [str(s) for s in sources]


def ordered_sources(sources) -> list[str]:
    """Paths as given (globs expanded), duplicates removed, in natural order."""
    out: list[str] = []
    for s in source_list(sources):
        if any(c in s for c in _GLOB_CHARS) and not os.path.exists(s):
            found = glob.glob(s)
            if not found:
                raise SourceNotFound(f"{s}: the pattern matches no file")
            out.extend(found)
        else:
            out.append(s)
    return sorted(dict.fromkeys(out), key=natural_key)


def checkpoint_steps(checkpoints: list[str], step_regex: str | None = None) -> tuple[list[str], list[int], str]:
    """The checkpoints in step order, their steps, and where the steps came from.

    A step is the last number in a checkpoint's file name (``epoch20.pt`` -> 20), or what
    ``step_regex`` finds in its path (the first group, else the match). When every checkpoint
    has a step and no two share one, they are ordered by it (``name`` / ``regex``); otherwise
    they keep their natural order and the step is the position, 0 .. n-1 (``position``).
    """
    if step_regex is not None:
        try:
            re.compile(step_regex)
        except re.error as e:
            raise InspectorError(f"--step-regex {step_regex!r} is not a regular expression ({e})") from None
    steps = [step_from_name(c, step_regex) for c in checkpoints]
    if None not in steps and len(set(steps)) == len(steps):
        order = sorted(range(len(steps)), key=lambda i: steps[i])
        return [checkpoints[i] for i in order], [steps[i] for i in order], "regex" if step_regex else "name"
    return list(checkpoints), list(range(len(checkpoints))), "position"


def change_factory(prev_records: list, records: list, chunk_elems: int):
    """A reducer factory giving each record a PairedChange against its match in the previous checkpoint.

    Returns the factory and the alignment notes. Records without a same-shaped match get none.
    """
    map_prev, map_cur, notes = align_names([r.name for r in prev_records], [r.name for r in records])
    prev_by_name = {r.name: r for r in prev_records}
    key_of = {orig: key for key, orig in map_cur.items()}

    def factory(record):
        key = key_of.get(record.name)
        prev = prev_by_name.get(map_prev.get(key)) if key is not None else None
        if prev is None or prev.shape != record.shape:
            return None
        return PairedChange(prev, chunk_elems)

    return factory, notes
