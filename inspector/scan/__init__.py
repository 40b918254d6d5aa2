"""``scan``: inspect every model under some paths, on a local process pool or a Dask cluster.

``inspector.scan(paths, out, ...)`` calls :func:`scan` (this module is callable), and
``inspector.scan.scan`` is the same function.

:func:`scan` finds the models (:mod:`.discover`), runs them in tasks (:mod:`.executors`, the
task itself in :mod:`.task`), and writes rows as they arrive (:mod:`.store`): ``models.parquet``,
``models.csv``, the ``tensors.parquet`` dataset, then ``report.html`` and ``report.md``.
"""

from __future__ import annotations

import math
import os
import sys
import types
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FindingsFound
from ..finding import FINDING_TYPES
from ..report.bundle import report_dir
from ..report.export import write_text
from ..report.outdir import locked
from ..report.zoo import ZooTally, zoo_html, zoo_markdown
from .discover import Model, discover
from .executors import (BATCH_MODELS, DASK_BATCH_MODELS, SchedulerUnavailable, dask_client, dask_results,
                        default_workers, local_results, start_fork_server)
from .store import JOURNAL, TENSORS, ScanStore
from .task import MODEL_COLUMNS, TENSOR_TABLE_COLUMNS, base_row

if TYPE_CHECKING:  # (pandas is imported where it is used)
    import pandas as pd

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


@dataclass
class ScanResult:
    """A finished scan: its directory, the figures its report shows (``tally``), and the model rows
    (``models``, read from models.parquet when first asked for)."""

    out: Path
    tally: ZooTally
    resumed: int = 0  # rows kept from an earlier run (--resume)

    @cached_property
    def models(self) -> pd.DataFrame:
        """One row per model (MODEL_COLUMNS), in path order: models.parquet, read whole."""
        import pandas as pd

        return pd.read_parquet(self.out / "models.parquet")

    @property
    def total(self) -> int:
        """How many models the scan has rows for."""
        return self.tally.models

    def failed_on(self, fail_on) -> list[str]:
        """The finding types some model has that are listed in ``fail_on``, in FINDING_TYPES order."""
        return [t for t in FINDING_TYPES if t in fail_on and self.tally.with_finding[t] > 0]

    def check(self, fail_on) -> None:
        failed = self.failed_on(fail_on)
        if failed:
            raise FindingsFound(f"found {', '.join(failed)} (--fail-on {', '.join(fail_on) or 'nothing'})")

    def counts(self) -> dict[str, int]:
        return dict(self.tally.status)

    def tensors(self):
        """The tensors.parquet dataset (pyarrow.dataset; read it in batches, or ``.to_table()`` when small)."""
        import pyarrow.dataset as ds

        return ds.dataset(self.out / TENSORS, format="parquet")


def scan(paths, out, *, scheduler: str | None = None, workers: int | None = None, resume: bool = False,
         timeout: float | None = None, models_per_task: int | None = None, progress=None) -> ScanResult:
    """Inspect every model under ``paths`` (files, directories, globs, ``@LIST`` files) into ``out``.

    Runs on a local pool of ``workers`` processes (default: the core count), or on the Dask cluster at
    ``scheduler`` (or $DASK_SCHEDULER_ADDRESS). ``resume`` keeps the rows of an earlier scan into ``out``
    whose model is unchanged. ``timeout``: seconds one model may take, after which it is an error row
    (None or 0: no limit). ``models_per_task``: small models run at most this many to a task (a model of
    more than 4 MiB of files runs alone; default 8 on the local pool, 16 on Dask; 1: one task per model).
    ``progress``, if given, has ``begin(models, bytes)`` and ``done(row)``.
    Raises OutputError at once when another scan is writing ``out``."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    address = scheduler or os.environ.get(SCHEDULER_ENV)
    if not address:
        start_fork_server()
    models = discover(paths)
    client = dask_client(address) if address else None  # an unreachable cluster fails before any file is written
    try:
        with locked(report_dir(out, "scan"), wait=False):  # one scan at a time writes a directory
            plan = Plan(workers, timeout if timeout and math.isfinite(timeout) else None, models_per_task)
            return _scan_into(models, out, client, plan, resume, progress)
    finally:
        if client is not None:
            client.close()


@dataclass(frozen=True)
class Plan:
    """How tasks run: ``workers`` local processes (None: the core count), ``timeout`` seconds per model,
    ``per_task`` small models a task at most (None: BATCH_MODELS locally, DASK_BATCH_MODELS on Dask)."""

    workers: int | None = None
    timeout: float | None = None
    per_task: int | None = None


def _scan_into(models: list[Model], out, client, plan: Plan, resume: bool, progress) -> ScanResult:
    store = ScanStore(out, resume, forked=client is None)  # (the local pool's fork server is running)
    try:
        todo = store.keep_only(models)
        kept = len(models) - len(todo)
        if progress is not None:
            progress.begin(len(todo), sum(m.size for m in todo))
        _run(store, todo, client, plan, progress)
    finally:
        try:
            tally = store.flush(count=True)
        finally:
            store.close()
    write_text(zoo_html(tally), store.out / "report.html")
    write_text(zoo_markdown(tally), store.out / "report.md")
    return ScanResult(store.out, tally, kept)


def _run(store: ScanStore, todo: list[Model], client, plan: Plan, progress) -> None:
    for model in [m for m in todo if m.duplicate_of]:
        _record(store, model, base_row(model, "skipped", f"same files as {model.duplicate_of}"), None, progress)
    todo = [m for m in todo if not m.duplicate_of]
    if client is not None:
        results = dask_results(todo, client, plan.timeout, store.place, plan.per_task or DASK_BATCH_MODELS)
    else:
        results = local_results(todo, plan.workers or default_workers(), plan.timeout, store.place,
                                plan.per_task or BATCH_MODELS)
    for model, (row, data) in results:
        _record(store, model, row, data, progress)


def _record(store: ScanStore, model: Model, row: dict, data, progress) -> None:
    store.add(model, row, data)
    if progress is not None:
        progress.done(row)


class CallableModule(types.ModuleType):
    """This module, callable: ``inspector.scan(...)`` is ``inspector.scan.scan(...)``."""

    def __call__(self, *args, **kwargs) -> ScanResult:
        return scan(*args, **kwargs)


sys.modules[__name__].__class__ = CallableModule

__all__ = ["scan", "ScanResult", "Model", "discover", "MODEL_COLUMNS", "TENSOR_TABLE_COLUMNS",
           "SchedulerUnavailable", "SCHEDULER_ENV", "JOURNAL"]
