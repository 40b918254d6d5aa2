"""A scan's tables (``models.parquet``, ``models.csv``) and its report's figures, written from the journal
by a process of their own, so that the client's memory does not grow with them.

Writing them in the client made its peak memory grow with the number of models: the Parquet writer's
buffers reach the size of a row group (1,024 rows) only once there are that many models (about 3 MB
more from 100 to 1,000 models), and its metadata grows with the row groups. The client now only says
how far the journal goes (:class:`TableJob`) to a :class:`TableWriter`: one process, which reads the
journal back, writes the tables atomically, and replies with the figures or a one-line error; the client
never writes Parquet. On the local pool, the pool's fork server forks it (:class:`ForkedWriter`: it has
imported all the writer needs) with the first result; on Dask, it is a new Python process started with
the scan's outputs, whose imports (a quarter of a second of CPU) then go on while the cluster waits for
its first tasks, not while the workers need the cores.

The journal is the source of truth: when the writer process cannot start, dies, or is stopped by a
second Ctrl-C, the client writes the tables itself from then on (the same files, by the same code).

The writer does without pandas (importing it cost the process about 0.3 s of CPU per scan, converting
and writing 1,000 rows through DataFrames about 0.1 s): rows become plain columns (``model_columns``),
written by the csv module and as Arrow arrays built from their buffers, with the schema and pandas
metadata ``pa.Table.from_pandas`` gave, so that both files are the bytes the pandas route wrote.
"""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InspectorError, OutputError, first_line
from ..report.export import atomic_write
from ..report.zoo import ZooTally
from .task import MODEL_COLUMNS, model_arrow, model_columns, model_schema

JOURNAL = "models.jsonl"
TABLES = ("models.parquet", "models.csv")
ROOT = str(Path(__file__).resolve().parents[2])  # where this ``inspector`` package is imported from
SERVE = "import sys; sys.path.insert(0, sys.argv[1]); from inspector.scan.writer import serve; serve()"


@dataclass(frozen=True)
class TableJob:
    """Rewrite the tables of the scan in ``out`` from the first ``end`` bytes of its journal: rows in path
    order (the last complete line of each path), read back ``batch`` at a time, into Parquet row groups
    of at least ``row_group`` rows; with ``count``, gather the report's figures on the same pass."""

    out: str
    end: int
    batch: int
    row_group: int
    count: bool = False

    def run(self) -> ZooTally | None:
        out = Path(self.out)
        tally = ZooTally() if self.count else None
        with open(out / JOURNAL, "rb") as journal:
            batches = journal_batches(journal, self.end, self.batch)
            atomic_write(out / TABLES[0], lambda pf: atomic_write(
                out / TABLES[1], lambda cf: write_tables(batches, pf, cf, tally, self.row_group)), binary=True)
        return tally


class TableWriter:
    """Runs :class:`TableJob` s, one at a time, in a Python process (started at once, or with ``start=False``
    by :meth:`launch` or the first job), or in this process when that one cannot start or dies: ``write`` waits for the job's result; ``begin`` hands a job over
    and returns at once, ``finished`` says when it is done, so that the scan goes on meanwhile. Both
    raise OutputError with a job's error."""

    def __init__(self, start: bool = True, forked: bool = False):
        self.proc = None
        self.forked = forked  # started by the local pool's fork server (see ForkedWriter), not as a new Python
        self.launched = False  # whether the process was started (proc None since then: it could not be, or died)
        self.out: str | None = None  # the directory of the last job (leftovers are removed there)
        self.since: float | None = None  # when the job in progress was handed over (None: no job is)
        if start:
            self.launch()

    def launch(self) -> None:
        """Start the process, once (its imports take a quarter of a second of CPU: a scan starts it with its
        first result, not while the pool's fork server does the same)."""
        if self.launched:
            return
        self.launched = True
        try:
            self.proc = ForkedWriter() if self.forked else subprocess.Popen(
                [sys.executable, "-c", SERVE, ROOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except (OSError, EOFError):  # (EOFError: the fork server went away)
            self.proc = None

    def write(self, job: TableJob) -> ZooTally | None:
        self.launch()
        if self.since is not None:
            self._reply()  # the job in progress first
        self.out = job.out
        reply = self._ask(job) if self.proc is not None else None
        return job.run() if reply is None else _value(reply)

    def begin(self, job: TableJob) -> bool:
        """Hand ``job`` to the process without waiting (in this process, when there is none, waiting);
        False, and nothing done, while an earlier job is in progress."""
        if self.since is not None:
            return False
        self.launch()
        self.out = job.out
        try:
            if self.proc is not None:
                send(self.proc.stdin, job)
                self.since = time.monotonic()
                return True
        except OSError:
            self._stop()
        job.run()
        return True

    def finished(self) -> float | None:
        """The seconds the job handed over by ``begin`` took, once it is done (None before that, or when
        there is none)."""
        if self.since is None or not select.select([self.proc.stdout], [], [], 0)[0]:
            return None
        since = self.since
        self._reply()
        return time.monotonic() - since

    def _reply(self) -> None:
        """Wait for the reply to the job in progress (none, when the process died with it)."""
        self.since = None
        try:
            _value(receive(self.proc.stdout))
        except (OSError, EOFError, pickle.UnpicklingError):
            self._stop()
        except OutputError:
            raise
        except BaseException:  # Ctrl-C while waiting: its reply would be owed; stop it
            self._stop()
            raise

    def _ask(self, job: TableJob):
        """(True, the job's result) or (False, its error) from the process; None when it died."""
        try:
            send(self.proc.stdin, job)
            return receive(self.proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError):
            self._stop()
            return None
        except BaseException:  # Ctrl-C while waiting: its reply would be owed; stop it, write here
            self._stop()
            raise

    def _stop(self) -> None:
        """Kill the process (once it is dead, no rename of its can come after ours) and remove what it
        left half-written."""
        proc, self.proc = self.proc, None
        proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):  # a request it did not read: a broken pipe
                f.close()
        if self.out is not None:
            remove_leftovers(Path(self.out))

    def close(self) -> None:
        """Let the process end (it ends when its requests end), killing it after a few seconds."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


class ForkedWriter:
    """The writer process forked by the local pool's fork server, which has imported this module and
    pyarrow already (a new Python process takes a quarter of a second of CPU to do so, while the pool's
    processes need the cores): :func:`serve` on a pair of pipes, with what :class:`TableWriter` uses of a
    ``subprocess.Popen`` (``stdin``, ``stdout``, ``kill``, ``wait``, ``poll``)."""

    def __init__(self):
        ctx = multiprocessing.get_context("forkserver")
        jobs, self_jobs = ctx.Pipe(duplex=False)  # (reading end, writing end)
        self_replies, replies = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=serve, args=(jobs, replies), daemon=True, name="winspect table writer")
        try:
            self.process.start()
        except BaseException:
            self_jobs.close()
            self_replies.close()
            raise
        finally:
            jobs.close()  # the process has its own copies: its input ends when ``stdin`` is closed
            replies.close()
        self.stdin, self.stdout = as_file(self_jobs, "wb"), as_file(self_replies, "rb")

    def kill(self) -> None:
        self.process.kill()

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired("table writer", timeout)
        return self.process.exitcode


def as_file(connection, mode: str):
    """A multiprocessing connection's pipe as a file object (the connection closed)."""
    fd = os.dup(connection.fileno())
    connection.close()
    return os.fdopen(fd, mode)


def _value(reply: tuple[bool, object]):
    ok, value = reply
    if not ok:
        raise OutputError(value)
    return value


def serve(jobs=None, replies=None) -> None:
    """The writer process: run each job read from standard input, reply on standard output (or on the
    pipes ``jobs`` and ``replies``, multiprocessing connections), until the input ends. Ctrl-C is the
    client's (it waits for these tables); stray prints go to standard error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if jobs is None:
        jobs, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
    else:
        jobs, replies = as_file(jobs, "rb"), as_file(replies, "wb")
    import pyarrow.parquet  # noqa: F401  (imported while the scan starts, not at the first job)

    model_schema()  # (and its metadata made)

    while True:
        try:
            job = receive(jobs)
        except EOFError:  # every job is done and answered: end now, without the interpreter's teardown
            os._exit(0)  # (0.1 s with pyarrow loaded, which the client would wait for)
        try:
            send(replies, run_job(job))
        except OSError:  # the client is gone
            return


def run_job(job: TableJob) -> tuple[bool, object]:
    try:
        return True, job.run()
    except InspectorError as e:
        return False, first_line(e)
    except Exception as e:  # a bug: said in one line, the scan's outputs stay as they were
        return False, f"{job.out}: cannot write {' and '.join(TABLES)} (unexpected {type(e).__name__}: {first_line(e)})"


def send(f, obj) -> None:
    data = pickle.dumps(obj)
    f.write(len(data).to_bytes(8, "little") + data)
    f.flush()


def receive(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    size = int.from_bytes(head, "little")
    data = f.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def remove_leftovers(out: Path) -> None:
    """The hidden temporary files of the tables (``atomic_write``'s) left by a writer that was killed."""
    for name in TABLES:
        for f in out.glob(f".{name}.*.tmp"):
            f.unlink(missing_ok=True)


def journal_offsets(journal, end: int | None = None) -> dict[str, int]:
    """path -> the offset of the last complete row for it among the journal's lines that start before
    ``end`` (all of them when None); lines cut short, or not rows, are skipped."""
    index: dict[str, int] = {}
    offset = 0
    journal.seek(0)
    for line in journal:
        if end is not None and offset >= end:
            break
        row = parse_row(line)
        if row is not None:
            index[row["path"]] = offset
        offset += len(line)
    return index


def journal_batches(journal, end: int, batch: int):
    """The journal's rows (up to ``end``) in path order, as :func:`model_columns` of at most ``batch``
    rows; one of no rows when there is none."""
    index = journal_offsets(journal, end)
    rows: list[dict] = []
    for path in sorted(index):
        rows.append(row_at(journal, index[path]))
        if len(rows) == batch:
            yield model_columns(rows)
            rows = []
    if rows or not index:
        yield model_columns(rows)


def write_tables(batches, parquet_file, csv_file, tally: ZooTally | None = None, row_group: int = 1024) -> None:
    """Write batches of model rows (:func:`model_columns`) to a Parquet file (row groups of ``row_group``
    rows, rounded up to whole batches) and a CSV file, and count them into ``tally``. No dictionary
    encoding: its hash tables grow the writer's memory with the rows, and the columns it would shrink
    are short. Without pandas: the CSV is the bytes ``DataFrame.to_csv(index=False)`` writes for
    the rows as a frame of Int64, string and float64 columns (the csv module's quoting; floats as their repr, which numpy's str of a float64
    is; empty for a missing value), and pandas reads the Parquet file back as that frame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = csv.writer(csv_file, lineterminator=os.linesep)  # DataFrame.to_csv's defaults
    lines.writerow(MODEL_COLUMNS)
    writer, group, rows = pq.ParquetWriter(parquet_file, model_schema(), use_dictionary=False), [], 0
    for columns in batches:
        lines.writerows(zip(*columns.values()))
        if tally is not None:
            tally.add(columns)
        group.append(model_arrow(columns))
        rows += group[-1].num_rows
        if rows >= row_group:
            writer.write_table(pa.concat_tables(group))
            group, rows = [], 0
    if group:
        writer.write_table(pa.concat_tables(group))
    writer.close()


def parse_row(line: bytes) -> dict | None:
    """A journal line's row, or None for a line cut short (no newline) or not a row."""
    if not line.endswith(b"\n"):
        return None
    try:
        row = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("path"), str) else None


def row_at(journal, offset: int) -> dict:
    journal.seek(offset)
    return json.loads(journal.readline().decode("utf-8", "replace"))
