"""Progress of an inspection or a scan, as rich renderables; they draw nothing themselves.

:class:`ProgressBar` shows tensors and bytes done, the rate and the time left. It is a
:data:`inspector.api.ProgressFn`: called with each finished record; ``begin`` receives the totals when
the source knows them and ``part_done`` the parts of large tensors as they finish.
:class:`ScanProgressBar` shows models done, bytes, rate and errors. The command line puts them on
stderr, only on a terminal, from ``DELAY`` seconds on (quick runs print nothing), and removes them
when the run ends.
"""

from __future__ import annotations

import sys
import time

DELAY = 0.5


def progress_for(stream=None, quiet: bool = False):
    """A :class:`ProgressBar` for a run whose progress would be shown on ``stream`` (stderr), or None when
    quiet or not a terminal."""
    stream = stream or sys.stderr
    if quiet or not getattr(stream, "isatty", lambda: False)():
        return None
    return ProgressBar()


class ProgressBar:
    def __init__(self):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(  # never started: rendered by whoever shows it
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[tensors]} tensors"),
            DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), auto_refresh=False,
        )
        self.task = self.progress.add_task("inspecting", total=None, tensors="0")
        self.tensors, self.total_tensors = 0, None
        self.client = None  # a remote source's HTTP client: its received bytes are shown
        self._partial: dict[str, int] = {}

    def renderable(self):
        """What the bar looks like now."""
        return self.progress.get_renderable()

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


class ScanProgressBar:
    """A scan's progress: models done / total, bytes, rate and errors so far (``begin(models, bytes)``
    then ``done(row)`` per finished model)."""

    def __init__(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn)

        self.progress = Progress(  # never started: rendered by whoever shows it
            TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TextColumn("models"),
            TextColumn("{task.fields[nbytes]}"), TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[errors]} errors"), TimeRemainingColumn(), auto_refresh=False,
        )
        self.task = self.progress.add_task("scan", total=None, nbytes="", rate="", errors=0)
        self.errors = self.nbytes = 0
        self.total_bytes = 0

    def renderable(self):
        """What the bar looks like now."""
        return self.progress.get_renderable()

    def begin(self, models: int, nbytes: int) -> None:
        from rich.filesize import decimal

        self.total_bytes = nbytes
        self.progress.update(self.task, total=models, nbytes=f"0/{decimal(nbytes)}")

    def done(self, row: dict) -> None:
        from rich.filesize import decimal

        self.errors += row.get("status") == "error"
        self.nbytes += int(row.get("size") or 0)
        task = self.progress.tasks[0]
        rate = f"{task.speed:.1f}/s" if task.speed else ""
        self.progress.update(self.task, advance=1, errors=self.errors, rate=rate,
                             nbytes=f"{decimal(self.nbytes)}/{decimal(self.total_bytes)}")

def scan_progress_for(stream=None, quiet: bool = False):
    """A :class:`ScanProgressBar` for a scan whose progress would be shown on ``stream`` (stderr), or None
    when quiet or not a terminal."""
    stream = stream or sys.stderr
    if quiet or not getattr(stream, "isatty", lambda: False)():
        return None
    return ScanProgressBar()


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"
