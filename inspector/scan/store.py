"""A scan's output directory, written as results arrive and always readable, in bounded memory.

- ``models.jsonl``: the journal, one line per finished model, appended as each finishes; the source of
  truth for the tables below and what ``--resume`` reads back (a line cut short by a kill is ignored,
  and that model done again);
- ``tensors.parquet/``: a Parquet dataset, one file per model (``part-<hash of its path>.parquet``),
  each written to a hidden temporary file and renamed, so a reader never sees half a file;
- ``models.parquet`` and ``models.csv``: every row so far, in path order, rewritten atomically from the
  journal every few seconds and at the end (also when the scan is interrupted).

The client keeps no row: for each finished model only where its line starts in the journal. The tables
are written by reading those lines back in path order, BATCH at a time, into Parquet row groups of at
most ROW_GROUP rows and a CSV written as it goes; the report's figures are gathered on the same pass.
"""

from __future__ import annotations

import secrets
import json
import math
import time
from pathlib import Path

from ..errors import OutputError
from ..report.export import atomic_write, write_bytes
from ..report.zoo import ZooTally
from .discover import Model
from .task import PLACE_MARK, model_frame, part_name

JOURNAL = "models.jsonl"
TENSORS = "tensors.parquet"
OUTPUT_FILES = (JOURNAL, "models.parquet", "models.csv", "report.html", "report.md")
FLUSH_SECONDS = 2.0  # the tables are rewritten at most this often...
FLUSH_SHARE = 20  # ...and at most once every FLUSH_SHARE times the last rewrite's duration
BATCH = 128  # journal lines read back and converted at a time
ROW_GROUP = 1024  # rows per row group of models.parquet


class ScanStore:
    """The output directory of one scan. ``index`` maps each finished model's path to the offset of its
    row in the journal: all the client keeps per model (after :meth:`keep_only`, only the scan's models,
    unchanged since their row was written)."""

    def __init__(self, out, resume: bool = False):
        self.out = Path(out)
        try:
            (self.out / TENSORS).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.out}: cannot create the output directory ({e.strerror or e})") from None
        if not resume:
            self._clear()
        self.place = self._mark()
        self.index: dict[str, int] = read_index(self.out / JOURNAL)
        self._journal = open(self.out / JOURNAL, "ab")
        self._end = self._journal.seek(0, 2)
        self._flushed, self._interval = time.monotonic(), FLUSH_SECONDS

    def _clear(self) -> None:
        """Remove a previous scan's outputs: the tensor files of the models its journal lists (nothing is
        removed by its name's pattern), then the journal and the tables."""
        for path in read_index(self.out / JOURNAL):
            (self.out / TENSORS / part_name(path)).unlink(missing_ok=True)
        for name in OUTPUT_FILES:
            (self.out / name).unlink(missing_ok=True)

    def done(self, model: Model) -> bool:
        """Whether a row for this model, as it is now, is already written (:meth:`keep_only` first)."""
        return model.path in self.index

    def _mark(self) -> tuple[str, str]:
        """(the tensor tables' directory, a token written in it, hidden from datasets): a task that reads
        the same token there sees this directory, and writes its model's table itself (task.delivered)."""
        token = secrets.token_hex(16)
        write_bytes(token.encode("ascii"), self.parts / PLACE_MARK)
        return str(self.parts), token

    @property
    def parts(self) -> Path:
        """The directory of the tensor tables (``part_name`` of each model's path)."""
        return self.out / TENSORS

    def add(self, model: Model, row: dict, tensors: bytes | bool | None) -> None:
        """Record one finished model: its tensor table first (Parquet bytes to write; True: the task wrote
        it, see ``place``; None: it has none), then its journal line."""
        if isinstance(tensors, bytes):
            write_bytes(tensors, self.parts / part_name(model.path))
        elif tensors is None:
            (self.parts / part_name(model.path)).unlink(missing_ok=True)
        line = (json.dumps(row, default=_plain) + "\n").encode("ascii")  # JSON escapes the rest
        self._journal.write(line)
        self._journal.flush()
        self.index[model.path] = self._end
        self._end += len(line)
        if time.monotonic() - self._flushed > self._interval:
            self.flush()

    def keep_only(self, models: list[Model]) -> None:
        """Forget the rows of models no longer among the scan's, or changed since (another size or
        modification time), with their tensor files; rewrite the journal with the rows kept."""
        kept: dict[str, int] = {}
        with open(self.out / JOURNAL, "rb") as journal:
            for m in models:
                offset = self.index.pop(m.path, None)
                if offset is None:
                    continue
                if _key(_row_at(journal, offset)) == (m.size, m.mtime_ns):
                    kept[m.path] = offset
                else:
                    self.index[m.path] = offset  # changed: forgotten below
        for path in self.index:
            (self.out / TENSORS / part_name(path)).unlink(missing_ok=True)
        self.index = kept
        if self._end:  # an earlier scan's journal: keep only the lines of the rows kept
            self._compact()

    def _compact(self) -> None:
        """Rewrite the journal with only the lines ``index`` points to (atomically), and point to them there."""
        self._journal.close()
        moved: dict[str, int] = {}

        def copy(f) -> None:
            with open(self.out / JOURNAL, "rb") as old:
                for path, offset in self.index.items():
                    old.seek(offset)
                    moved[path] = f.tell()
                    f.write(old.readline())

        atomic_write(self.out / JOURNAL, copy, binary=True)
        self.index = moved
        self._journal = open(self.out / JOURNAL, "ab")
        self._end = self._journal.seek(0, 2)

    def frames(self, journal):
        """The rows written so far, in path order, as DataFrames (MODEL_COLUMNS) of at most BATCH rows;
        one empty frame when there is none."""
        rows: list[dict] = []
        for path in sorted(self.index):
            rows.append(_row_at(journal, self.index[path]))
            if len(rows) == BATCH:
                yield model_frame(rows)
                rows = []
        if rows or not self.index:
            yield model_frame(rows)

    def flush(self, tally: ZooTally | None = None) -> None:
        """Rewrite models.parquet and models.csv from the journal; count the rows into ``tally`` if given."""
        start = time.monotonic()
        self._journal.flush()
        with open(self.out / JOURNAL, "rb") as journal:
            frames = self.frames(journal)
            atomic_write(self.out / "models.parquet", lambda pf: atomic_write(
                self.out / "models.csv", lambda cf: write_tables(frames, pf, cf, tally)), binary=True)
        self._flushed = time.monotonic()
        self._interval = max(FLUSH_SECONDS, FLUSH_SHARE * (self._flushed - start))

    def close(self) -> None:
        self._journal.close()
        (self.parts / PLACE_MARK).unlink(missing_ok=True)


def write_tables(frames, parquet_file, csv_file, tally: ZooTally | None = None) -> None:
    """Write model-row DataFrames to a Parquet file (row groups of ROW_GROUP rows, rounded up to whole
    frames) and a CSV file, and count them into ``tally``. No dictionary encoding: its hash tables grow
    the writer's memory with the rows (by megabytes at a few thousand models), and the columns it would
    shrink are short."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, group, rows = None, [], 0
    for i, df in enumerate(frames):
        df.to_csv(csv_file, index=False, header=(i == 0))
        if tally is not None:
            tally.add(df)
        group.append(pa.Table.from_pandas(df, preserve_index=False))
        writer = writer or pq.ParquetWriter(parquet_file, group[0].schema, use_dictionary=False)
        rows += len(df)
        if rows >= ROW_GROUP:
            writer.write_table(pa.concat_tables(group))
            group, rows = [], 0
    if group:
        writer.write_table(pa.concat_tables(group))
    writer.close()


def read_index(path: Path) -> dict[str, int]:
    """path -> the offset of the last complete row written for it in the journal at ``path`` (lines cut
    short are skipped), read a line at a time."""
    index: dict[str, int] = {}
    offset, line = 0, b""
    try:
        with open(path, "rb") as journal:
            for line in journal:
                row = _parse(line)
                if row is not None:
                    index[row["path"]] = offset
                offset += len(line)
    except FileNotFoundError:
        return index
    if line and not line.endswith(b"\n"):  # a kill cut the last line: the next one starts afresh
        with open(path, "ab") as f:
            f.write(b"\n")
    return index


def _parse(line: bytes) -> dict | None:
    """A journal line's row, or None for a line cut short (no newline) or not a row."""
    if not line.endswith(b"\n"):
        return None
    try:
        row = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("path"), str) else None


def _row_at(journal, offset: int) -> dict:
    journal.seek(offset)
    return json.loads(journal.readline().decode("utf-8", "replace"))


def _key(row: dict) -> tuple:
    return row.get("size"), row.get("mtime_ns")


def _plain(x):
    """JSON for the numpy and pandas scalars a row may hold."""
    if hasattr(x, "item"):
        return x.item()
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return str(x)
