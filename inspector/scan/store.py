"""A scan's output directory, written as results arrive and always readable, in bounded memory.

- ``models.jsonl``: the journal, one line per finished model, appended as each finishes; the source of
  truth for the tables below and what ``--resume`` reads back (a line cut short by a kill is ignored,
  and that model done again);
- ``tensors.parquet/``: a Parquet dataset, one file per model (``<hh>/part-<hash of its path>.parquet``,
  in 256 folders so that processes writing at once seldom wait for the same folder's lock), each written
  to a hidden temporary file and renamed, so a reader never sees half a file;
- ``models.parquet`` and ``models.csv``: every row so far, in path order, rewritten atomically from the
  journal every few seconds and at the end (also when the scan is interrupted), by the process of
  :mod:`.writer`.

The client keeps nothing per finished model: not its row, not where its line is. To rewrite the tables,
it says how many bytes of the journal are written; the writer process reads them back (BATCH lines at
a time, into Parquet row groups of ROW_GROUP rows) and gathers the report's figures on the same pass.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from pathlib import Path

from ..errors import OutputError
from ..report.export import atomic_write, write_bytes
from ..report.zoo import ZooTally
from .discover import Model
from .task import PLACE_MARK, part_name, write_part
from .writer import JOURNAL, TableJob, TableWriter, journal_offsets, row_at

TENSORS = "tensors.parquet"
OUTPUT_FILES = (JOURNAL, "models.parquet", "models.csv", "report.html", "report.md")
FLUSH_SECONDS = 2.0  # the tables are rewritten at most this often...
FLUSH_SHARE = 20  # ...and at most once every FLUSH_SHARE times the last rewrite's duration
BATCH = 128  # journal lines read back and converted at a time
ROW_GROUP = 1024  # rows per row group of models.parquet


class ScanStore:
    """The output directory of one scan. ``index`` maps the path of each model the journal had a row for
    when opened (with ``resume``) to the offset of that row, until :meth:`keep_only` has used it; the
    rows added afterwards are in the journal only. :meth:`close` when done."""

    def __init__(self, out, resume: bool = False, forked: bool = False):
        self.out = Path(out)
        try:
            (self.out / TENSORS).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.out}: cannot create the output directory ({e.strerror or e})") from None
        self.parts = str(self.out / TENSORS)  # the tensor tables' directory (a str: see _part)
        if not resume:
            self._clear()
        self.place = self._mark()
        self.index: dict[str, int] = read_index(self.out / JOURNAL)
        self._journal = open(self.out / JOURNAL, "ab")
        self._end = self._journal.seek(0, 2)
        self._flushed, self._interval = time.monotonic(), FLUSH_SECONDS
        # ``forked``: by the local pool's fork server, with the first row (that server may still be importing
        # now); otherwise a new Python, started now, while the cluster waits for its first tasks
        self._writer = TableWriter(start=not forked, forked=forked)

    def _clear(self) -> None:
        """Remove a previous scan's outputs: the tensor files of the models its journal lists (nothing is
        removed by its name's pattern), then the journal and the tables."""
        for path in read_index(self.out / JOURNAL):
            self._drop_part(path)
        for name in OUTPUT_FILES:
            (self.out / name).unlink(missing_ok=True)

    def _mark(self) -> tuple[str, str]:
        """(the tensor tables' directory, a token written in it, hidden from datasets): a task that reads
        the same token there sees this directory, and writes its model's table itself (task.delivered)."""
        token = secrets.token_hex(16)
        write_bytes(token.encode("ascii"), os.path.join(self.parts, PLACE_MARK))
        return self.parts, token

    def _drop_part(self, path: str) -> None:
        """Remove the tensor file of the model at ``path``, in its folder or (as scans wrote them before
        the folders) directly in the directory. With os.path: see ``report.export.replace_file``."""
        name = part_name(path)
        for file in (os.path.join(self.parts, name), os.path.join(self.parts, os.path.basename(name))):
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass

    def add(self, model: Model, row: dict, tensors: bytes | bool | None) -> None:
        """Record one finished model: its tensor table first (Parquet bytes to write; True: the task wrote
        it, see ``place``; None: it has none), then its journal line."""
        if isinstance(tensors, bytes):
            write_part(self.parts, model.path, tensors)
        elif tensors is None:
            self._drop_part(model.path)
        line = (json.dumps(row, default=_plain) + "\n").encode("ascii")  # JSON escapes the rest
        self._writer.launch()
        self._journal.write(line)
        self._journal.flush()
        self._end += len(line)
        took = self._writer.finished()
        if took is not None:  # a rewrite costs at most a FLUSH_SHARE-th of the time
            self._interval = max(FLUSH_SECONDS, FLUSH_SHARE * took)
        if time.monotonic() - self._flushed > self._interval:
            self._journal.flush()
            if self._writer.begin(TableJob(str(self.out), self._end, BATCH, ROW_GROUP)):
                self._flushed = time.monotonic()

    def keep_only(self, models: list[Model]) -> list[Model]:
        """Forget the rows of models no longer among the scan's, or changed since (another size or
        modification time), with their tensor files; rewrite the journal with the rows kept. Returns
        the models without a row (still to do); ``index`` is emptied."""
        kept: dict[str, int] = {}
        todo: list[Model] = []
        with open(self.out / JOURNAL, "rb") as journal:
            for m in models:
                offset = self.index.pop(m.path, None)
                if offset is not None and _key(row_at(journal, offset)) == (m.size, m.mtime_ns):
                    kept[m.path] = offset
                    continue
                todo.append(m)
                if offset is not None:
                    self.index[m.path] = offset  # changed: forgotten below
        for path in self.index:
            self._drop_part(path)
        self.index = kept
        if self._end:  # an earlier scan's journal: keep only the lines of the rows kept
            self._compact()
        self.index = {}
        return todo

    def _compact(self) -> None:
        """Rewrite the journal with only the lines ``index`` points to (atomically)."""
        self._journal.close()

        def copy(f) -> None:
            with open(self.out / JOURNAL, "rb") as old:
                for offset in self.index.values():
                    old.seek(offset)
                    f.write(old.readline())

        atomic_write(self.out / JOURNAL, copy, binary=True)
        self._journal = open(self.out / JOURNAL, "ab")
        self._end = self._journal.seek(0, 2)

    def flush(self, count: bool = False) -> ZooTally | None:
        """Rewrite models.parquet and models.csv from the journal (by the writer process), and wait for it
        (while the scan runs, :meth:`add` has them rewritten without waiting); with ``count``, return the
        report's figures, gathered on the same pass."""
        start = time.monotonic()
        self._journal.flush()
        tally = self._writer.write(TableJob(str(self.out), self._end, BATCH, ROW_GROUP, count))
        self._flushed = time.monotonic()
        self._interval = max(FLUSH_SECONDS, FLUSH_SHARE * (self._flushed - start))
        return tally

    def close(self) -> None:
        self._journal.close()
        self._writer.close()
        Path(self.parts, PLACE_MARK).unlink(missing_ok=True)


def read_index(path: Path) -> dict[str, int]:
    """path -> the offset of the last complete row written for it in the journal at ``path`` (lines cut
    short are skipped), read a line at a time."""
    try:
        with open(path, "rb") as journal:
            index = journal_offsets(journal)
            size = journal.seek(0, 2)
            cut = False
            if size:
                journal.seek(size - 1)
                cut = journal.read(1) != b"\n"
    except FileNotFoundError:
        return {}
    if cut:  # a kill cut the last line: the next one starts afresh
        with open(path, "ab") as f:
            f.write(b"\n")
    return index


def _key(row: dict) -> tuple:
    return row.get("size"), row.get("mtime_ns")


def _plain(x):
    """JSON for the numpy and pandas scalars a row may hold."""
    if hasattr(x, "item"):
        return x.item()
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return str(x)
