"""Where a scan's tasks run: a local process pool, or a Dask distributed cluster.

Both yield ``(model, (row, tensor bytes))`` as tasks finish, keep at most a window of tasks in flight
(so the client's memory does not grow with the number of models), and turn a task that cannot finish
(its worker died too often) into an error row. The local pool imports nothing from Dask.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

from ..errors import InspectorError, first_line
from .discover import Model
from .task import base_row, delivered, inspect_model, timed_batch, timeout_row

ATTEMPTS = 3  # tries for a model whose worker process dies under it
POLL_SECONDS = 0.25  # how often the local pool looks for models over their time, when there is a timeout
WINDOW_PER_WORKER = 4  # tasks in flight per local worker
# Dask tasks in flight per worker thread: a task's round trip through the scheduler takes a few ms, so
# that a small window leaves the workers waiting (a zoo of small models: 4 a thread ran 15 % slower than 32)
DASK_WINDOW_PER_THREAD = 32
# a local task runs a batch of models: the client's and the pool's cost per task (a round trip through the
# executor's queues and threads, ~1 ms of CPU) is paid once for several small models. A batch holds at most
# BATCH_MODELS models and BATCH_BYTES of files (a larger model goes alone), and fewer near the end, so that
# the last tasks are spread over the workers.
BATCH_MODELS = 8
BATCH_BYTES = 4 << 20
# on Dask, a task costs about 1.9 ms of CPU between client, scheduler and worker (1,000 tasks that do
# nothing: 1.5 s on a 2-worker cluster on loopback), as much as inspecting a small model: small models
# share a task, up to DASK_BATCH_MODELS of them (16 a task ran 3-8 % faster than 8 there); a model of
# more than BATCH_BYTES is a task of its own, and a failed task of several has each model run again alone
DASK_BATCH_MODELS = 16
# imported once by the fork server, so that every pool process starts with them: the task, what inspects
# (loaders, analyzer, tables) and the Parquet writer of the tensor tables (pandas is not needed there)
PRELOAD = ["inspector.scan.task", "inspector.audit", "pyarrow.parquet"]


class SchedulerUnavailable(InspectorError):
    """The Dask scheduler cannot be reached, or the ``distributed`` package is missing."""


class PoolUnavailable(InspectorError):
    """The local pool's processes die before they run anything, pool after pool."""


def died_row(model: Model, attempts: int) -> tuple[dict, None]:
    row = base_row(model, "error", f"the worker inspecting it died {attempts} times (out of memory or a crash)")
    row["seconds"] = float("nan")
    return row, None


def lost_row(model: Model, error: BaseException) -> tuple[dict, None]:
    """The row of a model whose Dask task ended in an error other than its worker dying."""
    row = base_row(model, "error", f"the Dask task failed: {type(error).__name__}: {first_line(error)}")
    row["seconds"] = float("nan")
    return row, None


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def local_results(models: Iterable[Model], workers: int, timeout: float | None = None,
                  place: tuple[str, str] | None = None, per_task: int = BATCH_MODELS) -> Iterator[tuple[Model, tuple]]:
    """Run each model in a pool of ``workers`` processes. A model still running after ``timeout`` seconds
    has its process killed and is an error row; a pool broken by a dead process is replaced and the
    models it held are run again (those that had started at most ATTEMPTS times each, unless the pool
    was broken by a timeout's kill). With ``place`` (the scan's tensor directory and token), each task
    writes its model's tensor table there itself and gives back ``(row, True)`` (:func:`.task.delivered`).
    Small models run up to ``per_task`` a task (:func:`next_batch`)."""
    todo = list(models)[::-1]
    tries: dict[str, int] = {}
    idle = 0  # pools in a row that broke before running anything
    while todo:
        pool = LocalPool(workers, timeout, place, per_task)
        try:
            yield from pool.drain(todo, workers * WINDOW_PER_WORKER)
        finally:  # on Ctrl-C or an early stop: drop what has not started, do not wait
            pool.shutdown()
        idle = 0 if pool.ran else idle + 1
        if idle >= ATTEMPTS:
            raise PoolUnavailable(
                f"the scan's worker processes exit before running a model ({idle} pools in a row); from a Python "
                "script, call inspector.scan under `if __name__ == \"__main__\":`, as multiprocessing requires")
        for model in pool.lost:
            if model.path in pool.killed:
                yield model, timeout_row(model, timeout, pool.killed[model.path])
            elif pool.killed or model.path not in pool.started:
                todo.append(model)  # it did not break the pool
            else:
                tries[model.path] = tries.get(model.path, 0) + 1
                if tries[model.path] >= ATTEMPTS:
                    yield model, died_row(model, tries[model.path])
                else:
                    todo.append(model)


# torch (for pickles) is preloaded only when this process has imported it already: a scan of a zoo of
# pickles then does not import it again in every pool process, and other scans do not pay for it.

_started = None  # in a pool process: where each task says that it starts (LocalPool.starts)
_threads = 1  # in a pool process: threads per inspection


def _init_pool_process(starts, threads: int) -> None:
    """Pool processes leave Ctrl-C to the client, which stops the scan and keeps what is finished."""
    global _started, _threads
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _started, _threads = starts, threads


def started_task(model: Model, place: tuple[str, str] | None = None):
    """Say which process runs ``model`` since when (before anything can hang), inspect it, and write its
    tensor table into ``place`` (see :func:`.task.delivered`): the client then only writes the row, and the
    file work is spread over the pool."""
    _started.put((model.path, os.getpid(), time.monotonic()))
    return delivered(model, inspect_model(model, _threads), place)


def started_batch(models: list[Model], place: tuple[str, str] | None = None) -> list:
    """A pool task: :func:`started_task` for each model of a batch, one after the other; their results."""
    return [started_task(m, place) for m in models]


def next_batch(todo: list[Model], workers: int, per_task: int = BATCH_MODELS,
               window: int = WINDOW_PER_WORKER) -> list[Model]:
    """The next batch of models from the end of ``todo``: at most ``per_task`` of them and BATCH_BYTES of
    files (a larger model goes alone), and fewer once ``todo`` is short, so that the last tasks spread over
    the ``workers`` (``window`` tasks in flight each)."""
    most = max(1, min(per_task, len(todo) // (workers * window)))
    batch = [todo.pop()]
    size = batch[0].size
    while todo and len(batch) < most and size + todo[-1].size <= BATCH_BYTES:
        size += todo[-1].size
        batch.append(todo.pop())
    return batch


def pool_threads(workers: int) -> int:
    """Threads per inspection in a pool of ``workers`` processes: the CPUs shared out among them."""
    return max(1, default_workers() // max(1, workers))


def preloaded() -> list[str]:
    """The modules the fork server imports for every pool process (PRELOAD, and torch, see above)."""
    return PRELOAD + [m for m in ("torch",) if m in sys.modules]


def start_fork_server() -> None:
    """Start the local pool's fork server now: its imports (a quarter of a second) then go on while the
    scan finds its models and opens its outputs, instead of after."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(preloaded())
    forkserver.ensure_running()


class LocalPool:
    """One process pool, and what the client knows of its tasks: ``started`` (path -> (pid, start) of the
    model each process is running), ``killed`` (path -> seconds it ran) and, once broken, ``lost`` (the
    models it held). A task is a batch of models (:func:`next_batch`); their results come back together,
    so a model finished in a batch that a broken pool loses is run again (it is not charged a try: only
    the model a process was running when the pool broke is)."""

    def __init__(self, workers: int, timeout: float | None, place: tuple[str, str] | None = None,
                 per_task: int = BATCH_MODELS):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(preloaded())
        self.starts = ctx.SimpleQueue()  # written whole before a task runs (no feeder thread)
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_pool_process,
                                        initargs=(self.starts, pool_threads(workers)))
        self.workers, self.timeout, self.place, self.per_task = workers, timeout, place, per_task
        self.started: dict[str, tuple[int, float]] = {}
        self.running_in: dict[int, str] = {}  # pid -> the path of the model it started last
        self.killed: dict[str, float] = {}
        self.lost: list[Model] = []
        self.ran = False  # whether a model started or finished in this pool

    def drain(self, todo: list[Model], window: int):
        """Submit batches from the end of ``todo`` keeping ``window`` in flight and yield results, until
        ``todo`` is empty or the pool breaks (then ``lost`` holds the models not yielded)."""
        running: dict = {}
        while todo or running:
            if not self._submit(todo, running, window) and not running:
                return  # broken before anything was handed to it: a new pool takes ``todo``
            finished, _ = wait(running, timeout=POLL_SECONDS if self.timeout else None, return_when=FIRST_COMPLETED)
            self._note_starts()  # before the results: a finished task's starts are already in the queue
            for fut in finished:
                batch = running.pop(fut)
                try:
                    results = fut.result()
                except BrokenProcessPool:
                    self.lost += batch
                    continue
                yield from self._delivered(batch, results)
            if self.lost:
                yield from self._finished_before_break(running)
                return
            self._kill_overdue()

    def _delivered(self, batch: list[Model], results: list):
        self.ran = True
        for model, result in zip(batch, results):
            self.started.pop(model.path, None)
            yield model, result

    def _submit(self, todo: list[Model], running: dict, window: int) -> bool:
        """Hand batches from ``todo`` to the pool until ``window`` are in flight; False when the pool turns
        out to be broken (a process died since the last look), the batch it refused back on ``todo``."""
        while todo and len(running) < window:
            batch = next_batch(todo, self.workers, self.per_task)
            try:
                running[self.pool.submit(started_batch, batch, self.place)] = batch
            except BrokenProcessPool:
                todo.extend(reversed(batch))
                return False
        return True

    def _finished_before_break(self, running: dict):
        """Yield the results the broken pool delivered; the other models are ``lost``."""
        for fut, batch in running.items():
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                yield from self._delivered(batch, fut.result())
            else:
                self.lost += batch

    def _note_starts(self) -> None:
        """Read the starts the pool processes said: a process's new start means that the model it started
        before is finished (its result comes with its batch)."""
        while not self.starts.empty():
            path, pid, since = self.starts.get()
            before = self.running_in.get(pid)
            if before is not None:
                self.started.pop(before, None)
            self.running_in[pid] = path
            self.started[path] = (pid, since)
            self.ran = True

    def _kill_overdue(self) -> None:
        """Kill the process of each model running for longer than ``timeout`` (the pool breaks)."""
        now = time.monotonic()
        for path, (pid, since) in self.started.items():
            if self.timeout and now - since > self.timeout and path not in self.killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.killed[path] = now - since

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.starts.close()


def dask_results(models: Iterable[Model], client, timeout: float | None = None,
                 place: tuple[str, str] | None = None,
                 per_task: int = DASK_BATCH_MODELS) -> Iterator[tuple[Model, tuple]]:
    """Run the models on the Dask cluster of ``client`` (:func:`dask_client`), up to ``per_task`` small
    models a task (:func:`next_batch`; 1: one task per model), results taken as they complete. A worker
    that dies mid-task has its task rescheduled by Dask; the models of a task whose workers keep dying
    are each run again at the end, alone on the cluster, and one whose workers die then is an error row
    (so that one model that kills its workers takes neither its task's other models nor those beside it
    on the same workers with it, see :class:`DaskTasks`); the models of a task of several that fails
    otherwise are each run again in a task of their own. A task still inspecting a model after ``timeout`` seconds
    returns an error row for it and leaves its inspection behind in the worker (:func:`.task.timed_inspect`).
    A worker that sees ``place`` writes the model's tensor table there. Closes the client."""
    try:
        yield from _dask_drain(client, list(models)[::-1], timeout, place, per_task)
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


def _dask_drain(client, todo: list[Model], timeout: float | None, place: tuple[str, str] | None, per_task: int):
    yield from DaskTasks(client, todo, per_task).drain(timeout, place)


class DaskTasks:
    """The models of a scan on Dask and its tasks in flight: ``todo`` (taken from the end, ``per_task`` small
    models a task), ``owner`` (a future's key -> the models of its task), ``alone`` (the models of a task
    of several that failed: each goes again in a task of its own) and ``suspects``.

    When a worker dies, the scheduler counts a failure against every task it was given, not only the one
    it was running; after its allowed failures a task is ``KilledWorker``, and so may be a task that only
    sat beside the one that kills its workers. The models of such a task are suspects: each is run again
    once everything else is done, one at a time with nothing beside it, and only what happens then is its
    row."""

    def __init__(self, client, todo: list[Model], per_task: int):
        self.client, self.todo, self.per_task = client, todo, per_task
        self.threads = max(1, sum(client.nthreads().values()))
        self.per_thread = max(WINDOW_PER_WORKER, DASK_WINDOW_PER_THREAD // per_task)  # tasks in flight a thread
        self.window = self.threads * self.per_thread
        self.owner: dict = {}
        self.alone: list[Model] = []
        self.suspects: list[Model] = []
        self.isolated: set[str] = set()  # the suspects run so far

    def drain(self, timeout: float | None, place: tuple[str, str] | None):
        # results come with the futures, fetched on the client's own loop (not the default client's)
        pending = _as_completed(self.client)
        deaths = _deaths(self.client)
        while self.todo or self.alone or self.suspects or self.owner:
            batches = self._next_tasks()
            if batches:
                futures = self.client.map(timed_batch, batches, timeout=timeout, place=place, pure=False)
                self.owner.update((f.key, b) for f, b in zip(futures, batches))
                pending.update(futures)
            fut, result = next(pending)
            models = self.owner.pop(fut.key)
            if fut.status == "error":  # (its result here is not the exception itself)
                result = fut.exception()
            fut.release()
            if self._again(models, result):
                continue
            for model, one in zip(models, [result] * len(models) if isinstance(result, BaseException) else result):
                yield model, _dask_result(model, one, deaths)

    def _next_tasks(self) -> list[list[Model]]:
        """The tasks to hand out now, in one group (one message, not one each), once half the window is
        free; a suspect alone, once nothing else is left or running."""
        if (self.todo or self.alone) and len(self.owner) <= self.window // 2:
            return [[self.alone.pop()] if self.alone else
                    next_batch(self.todo, self.threads, self.per_task, self.per_thread)
                    for _ in range(self.window - len(self.owner)) if self.todo or self.alone]
        if self.suspects and not (self.todo or self.alone or self.owner):
            self.isolated.add(self.suspects[-1].path)
            return [[self.suspects.pop()]]
        return []

    def _again(self, models: list[Model], result) -> bool:
        """Whether the models of a failed task go again (as suspects, or each alone) instead of being rows."""
        if _killed_worker(result) and not (len(models) == 1 and models[0].path in self.isolated):
            self.suspects += models
            return True
        if isinstance(result, BaseException) and len(models) > 1:
            self.alone += models
            return True
        return False


def _killed_worker(result) -> bool:
    from distributed import KilledWorker

    return isinstance(result, KilledWorker)


def _as_completed(client):
    from distributed import as_completed

    return as_completed(loop=client.loop, with_results=True, raise_errors=False)


def _deaths(client) -> int:
    """How many of its workers die under a task before the scheduler gives up on it (``KilledWorker``):
    one more than its allowed failures (4, with Dask's default of 3, when it does not say)."""
    try:
        return 1 + int(client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures))
    except Exception:  # an older or locked-down scheduler: the default, 3 allowed failures
        return ATTEMPTS + 1


def _dask_result(model: Model, result, deaths: int = ATTEMPTS + 1) -> tuple:
    """A task's result; for a task that failed (its exception, or CancelledError): the row saying how
    (``deaths``: the workers that died under a task the scheduler gave up on)."""
    from distributed import KilledWorker

    if isinstance(result, KilledWorker):  # the scheduler gave up after its allowed failures
        return died_row(model, deaths)
    if isinstance(result, BaseException):  # the task did not come back (cancelled, lost): say so, go on
        return lost_row(model, result)
    return result
