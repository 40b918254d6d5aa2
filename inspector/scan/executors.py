"""Where a scan's tasks run: a local process pool, or a Dask distributed cluster.

Both yield ``(model, (row, tensor bytes))`` as tasks finish, keep at most a window of tasks in flight
(so the client's memory does not grow with the number of models), and turn a task that cannot finish
(its worker died too often) into an error row. The local pool imports nothing from Dask.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

from ..errors import InspectorError
from .discover import Model
from .task import base_row, inspect_model

ATTEMPTS = 3  # tries for a model whose worker process dies under it
WINDOW_PER_WORKER = 4
PRELOAD = ["inspector.scan.task"]  # imported once by the fork server: every pool process starts with it


class SchedulerUnavailable(InspectorError):
    """The Dask scheduler cannot be reached, or the ``distributed`` package is missing."""


def died_row(model: Model, attempts: int) -> tuple[dict, None]:
    row = base_row(model, "error", f"the worker inspecting it died {attempts} times (out of memory or a crash)")
    row["seconds"] = float("nan")
    return row, None


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def local_results(models: Iterable[Model], workers: int) -> Iterator[tuple[Model, tuple]]:
    """Run each model in a pool of ``workers`` processes; a pool broken by a dead process is replaced and
    the models it held are tried again (at most ATTEMPTS times each)."""
    todo = list(models)[::-1]
    tries: dict[str, int] = {}
    while todo:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD + [m for m in ("torch",) if m in sys.modules])
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_ignore_interrupts)
        try:
            broken = yield from _drain(pool, todo, workers * WINDOW_PER_WORKER)
        finally:  # on Ctrl-C or an early stop: drop what has not started, do not wait
            pool.shutdown(wait=False, cancel_futures=True)
        for model in broken:
            tries[model.path] = tries.get(model.path, 0) + 1
            if tries[model.path] >= ATTEMPTS:
                yield model, died_row(model, tries[model.path])
            else:
                todo.append(model)


# torch (for pickles) is preloaded only when this process has imported it already: a scan of a zoo of
# pickles then does not import it again in every pool process, and other scans do not pay for it.


def _ignore_interrupts() -> None:
    """Pool processes leave Ctrl-C to the client, which stops the scan and keeps what is finished."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _drain(pool, todo: list[Model], window: int):
    """Submit from ``todo`` keeping ``window`` in flight, yield results; return the models a broken pool lost."""
    running: dict = {}
    while todo or running:
        while todo and len(running) < window:
            model = todo.pop()
            running[pool.submit(inspect_model, model)] = model
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            try:
                result = fut.result()
            except BrokenProcessPool:  # every model not yet yielded goes back to the caller
                return list(running.values())
            yield running.pop(fut), result
    return []


def dask_results(models: Iterable[Model], client) -> Iterator[tuple[Model, tuple]]:
    """Run each model as one task on the Dask cluster of ``client`` (:func:`dask_client`), results taken
    as they complete. A worker that dies mid-task has its task rescheduled by Dask; a task whose workers
    keep dying is an error row. Closes the client."""
    try:
        yield from _dask_drain(client, list(models)[::-1])
    finally:
        client.close()


def dask_client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise SchedulerUnavailable("--scheduler needs the distributed package: pip install 'winspect[dask]'") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise SchedulerUnavailable(f"{address}: cannot reach the Dask scheduler ({e})") from None


def _dask_drain(client, todo: list[Model]):
    from distributed import as_completed

    window = max(1, sum(client.nthreads().values())) * WINDOW_PER_WORKER
    pending = as_completed(loop=client.loop)  # the loop of this client, not of the default one
    owner: dict = {}
    while todo or owner:
        while todo and len(owner) < window:
            model = todo.pop()
            fut = client.submit(inspect_model, model, pure=False)
            owner[fut.key] = model
            pending.add(fut)
        fut = next(pending)
        model = owner.pop(fut.key)
        try:
            result = fut.result()
        except Exception:  # KilledWorker: the scheduler gave up after its allowed failures
            result = died_row(model, ATTEMPTS)
        fut.release()
        yield model, result
