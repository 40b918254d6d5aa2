"""A progress bar on stderr for inspections that take more than a moment.

It shows tensors and bytes done, the rate and the time left, appears only after
``DELAY`` seconds (quick runs print nothing), is drawn only on a terminal and is
removed when the run ends. It is a :data:`inspector.api.ProgressFn`: called with
each finished record; ``begin`` receives the totals when the source knows them and
``part_done`` the parts of large tensors as they finish.
"""

from __future__ import annotations

import sys
import threading
import time

DELAY = 0.5


def progress_for(stream=None, quiet: bool = False):
    """A :class:`ProgressBar` on ``stream`` (stderr), or None when quiet or not a terminal."""
    stream = stream or sys.stderr
    if quiet or not getattr(stream, "isatty", lambda: False)():
        return None
    return ProgressBar(stream)


class ProgressBar:
    def __init__(self, stream, delay: float = DELAY):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[tensors]} tensors"),
            DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=Console(file=stream), transient=True, refresh_per_second=4,
        )
        self.task = self.progress.add_task("inspecting", total=None, tensors="0")
        self.tensors, self.total_tensors = 0, None
        self.client = None  # a remote source's HTTP client: its received bytes are shown
        self._partial: dict[str, int] = {}
        self._timer = threading.Timer(delay, self.progress.start)
        self._timer.daemon = True
        self._timer.start()

    def begin(self, tensors: int, nbytes: int) -> None:
        self.total_tensors = tensors
        self.progress.update(self.task, total=nbytes, tensors=f"0/{tensors}")

    def network(self, client) -> None:
        """Show the network bytes received through ``client`` (and their rate) in the description."""
        self.client = client
        self._started = time.monotonic()
        self.progress.update(self.task, description="inspecting (network 0 B)")

    def _show_network(self) -> None:
        if self.client is None:
            return
        got = self.client.received
        rate = got / max(time.monotonic() - self._started, 1e-9)
        self.progress.update(self.task, description=f"inspecting (network {_mb(got)}, {_mb(rate)}/s)")

    def part_done(self, record, elems: int) -> None:
        nbytes = elems * record.np_dtype.itemsize
        self._partial[record.name] = self._partial.get(record.name, 0) + nbytes
        self.progress.update(self.task, advance=nbytes)
        self._show_network()

    def __call__(self, record) -> None:
        self.tensors += 1
        left = (record.nbytes or 0) - self._partial.pop(record.name, 0)
        total = f"/{self.total_tensors}" if self.total_tensors else ""
        self.progress.update(self.task, advance=max(left, 0), tensors=f"{self.tensors}{total}")
        self._show_network()

    def close(self) -> None:
        self._timer.cancel()
        self.progress.stop()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ScanProgressBar:
    """A scan's progress on stderr: models done / total, bytes, rate and errors so far
    (``begin(models, bytes)`` then ``done(row)`` per finished model)."""

    def __init__(self, stream):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TextColumn("models"),
            TextColumn("{task.fields[nbytes]}"), TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[errors]} errors"), TimeRemainingColumn(),
            console=Console(file=stream), transient=True, refresh_per_second=4,
        )
        self.task = self.progress.add_task("scan", total=None, nbytes="", rate="", errors=0)
        self.errors = self.nbytes = 0
        self.total_bytes = 0

    def begin(self, models: int, nbytes: int) -> None:
        from rich.filesize import decimal

        self.total_bytes = nbytes
        self.progress.update(self.task, total=models, nbytes=f"0/{decimal(nbytes)}")
        self.progress.start()

    def done(self, row: dict) -> None:
        from rich.filesize import decimal

        self.errors += row.get("status") == "error"
        self.nbytes += int(row.get("size") or 0)
        task = self.progress.tasks[0]
        rate = f"{task.speed:.1f}/s" if task.speed else ""
        self.progress.update(self.task, advance=1, errors=self.errors, rate=rate,
                             nbytes=f"{decimal(self.nbytes)}/{decimal(self.total_bytes)}")

    def close(self) -> None:
        self.progress.stop()


def scan_progress_for(stream=None, quiet: bool = False):
    """A :class:`ScanProgressBar` on ``stream`` (stderr), or None when quiet or not a terminal."""
    stream = stream or sys.stderr
    if quiet or not getattr(stream, "isatty", lambda: False)():
        return None
    return ScanProgressBar(stream)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"
