"""A scan's output directory, written as results arrive and always readable.

- ``models.jsonl``: the journal, one line per finished model, appended as each finishes; what
  ``--resume`` reads back (a line cut short by a kill is ignored, and that model done again);
- ``tensors.parquet/``: a Parquet dataset, one file per model (``part-<hash of its path>.parquet``),
  each written to a hidden temporary file and renamed, so a reader never sees half a file;
- ``models.parquet`` and ``models.csv``: every row so far, rewritten atomically every few seconds
  and at the end (also when the scan is interrupted).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

from ..errors import OutputError
from ..report.export import atomic_write, write_bytes, write_csv
from .discover import Model
from .task import model_frame

JOURNAL = "models.jsonl"
TENSORS = "tensors.parquet"
OUTPUT_FILES = (JOURNAL, "models.parquet", "models.csv", "report.html", "report.md")
FLUSH_SECONDS = 2.0


def part_name(path: str) -> str:
    return f"part-{hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:20]}.parquet"


class ScanStore:
    """The output directory of one scan; ``rows`` maps each finished model's path to its row."""

    def __init__(self, out, resume: bool = False):
        self.out = Path(out)
        self.rows: dict[str, dict] = {}
        try:
            (self.out / TENSORS).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.out}: cannot create the output directory ({e.strerror or e})") from None
        if resume:
            self.rows = read_journal(self.out / JOURNAL)
        else:
            self._clear()
        self._journal = open(self.out / JOURNAL, "a", encoding="utf-8")
        self._flushed = time.monotonic()

    def _clear(self) -> None:
        """Remove a previous scan's outputs: the tensor files of the models its journal lists (nothing is
        removed by its name's pattern), then the journal and the tables."""
        for path in read_journal(self.out / JOURNAL):
            (self.out / TENSORS / part_name(path)).unlink(missing_ok=True)
        for name in OUTPUT_FILES:
            (self.out / name).unlink(missing_ok=True)

    def done(self, model: Model) -> bool:
        """Whether a row for this model, as it is now (same size and time), is already written."""
        row = self.rows.get(model.path)
        return row is not None and (row.get("size"), row.get("mtime_ns")) == (model.size, model.mtime_ns)

    def add(self, row: dict, tensors: bytes | None) -> None:
        """Record one finished model: its tensor table first, then its journal line."""
        part = self.out / TENSORS / part_name(row["path"])
        if tensors is not None:
            write_bytes(tensors, part)
        else:
            part.unlink(missing_ok=True)
        self._journal.write(json.dumps(row, default=_plain) + "\n")
        self._journal.flush()
        self.rows[row["path"]] = row
        if time.monotonic() - self._flushed > FLUSH_SECONDS:
            self.flush()

    def keep_only(self, models: list[Model]) -> None:
        """Forget rows of models no longer among the scan's (moved, deleted, or rescanned after a change)."""
        paths = {m.path for m in models}
        for path in [p for p in self.rows if p not in paths]:
            del self.rows[path]
            (self.out / TENSORS / part_name(path)).unlink(missing_ok=True)

    def frame(self):
        return model_frame(sorted(self.rows.values(), key=lambda r: r["path"]))

    def flush(self) -> None:
        """Rewrite models.parquet and models.csv from every row so far."""
        df = self.frame()
        atomic_write(self.out / "models.parquet", lambda f: df.to_parquet(f, index=False), binary=True)
        write_csv(df, self.out / "models.csv")
        self._flushed = time.monotonic()

    def close(self) -> None:
        self._journal.close()


def read_journal(path: Path) -> dict[str, dict]:
    """path -> the last complete row written for it (lines cut short are skipped)."""
    rows: dict[str, dict] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "path" in row:
            rows[row["path"]] = row
    if text and not text.endswith("\n"):  # a kill cut the last line: the next one starts afresh
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n")
    return rows


def _plain(x):
    """JSON for the numpy and pandas scalars a row may hold."""
    if hasattr(x, "item"):
        return x.item()
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return str(x)
