"""Reduce a stream of records on several cores; results come back in stream order.

Work items are whole tensors, or, for a large tensor whose record can read a range
of its values, its parts (:func:`~inspector.analysis.stats.part_ranges`), merged in
order so that the result is the same bits whatever the number of workers. A tensor
with extra reducers is split only when every one of them can be: ``r.part(start)``
gives a reducer for the values from ``start`` on, and ``r.merge(other)`` adds the
next part's. At most ``2 * workers`` items are unfinished at a time, so memory stays
bounded by a few chunks and bucket tables per worker. Finished items wait to be
yielded in order, so that a large tensor does not leave the other workers idle: up
to ``AHEAD`` items, of which at most ``2 * workers`` parts (each holds a bucket table).

Work runs on threads: file reads, numpy's casts and reductions, and the compiled
kernels (:mod:`~inspector.analysis.kernels`) release the GIL. Without the kernels,
most of the time goes to numpy's ``bincount``, which holds the GIL; then items whose
range reader is plain data (``portable``: safetensors file ranges) go to worker
processes, forked on Linux once ``PROCESS_MIN_BYTES`` of such tensors have been seen,
with their extra reducers when those can be pickled (a reducer's state comes back
inside the row it returns); the rest (torch tensors, reducers that cannot be pickled)
stay on threads.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Iterator

from . import kernels
from .complex_values import analysed
from .stats import CHUNK_ELEMS, PART_CHUNKS, StatsAccumulator, accumulate, analyze, part_ranges, row_of

PROCESS_MIN_BYTES = 64 << 20
AHEAD = 256  # finished items waiting for an earlier one, at most
INLINE_MAX_ELEMS = 1024  # tensors this small are reduced on the calling thread


def default_workers() -> int:
    """Threads to use: the CPUs this process may run on (``WINSPECT_THREADS`` overrides)."""
    env = os.environ.get("WINSPECT_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Done:
    """A finished work item when no thread pool is used."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value

    def done(self) -> bool:
        return True


def reduce_range(read_range, dtype, numel: int, chunk_elems: int, start: int, stop: int, reducers=()):
    """The values [start, stop) of a tensor, read with a portable range reader (``reducers`` fed every
    chunk in order): its stats row when that is the whole tensor, else (accumulator, reducers) of that part."""
    acc = StatsAccumulator(dtype, numel, chunk_elems)
    for chunk in read_range(start, stop, chunk_elems):
        acc.update(chunk)
        for r in reducers:
            r.update(chunk)
    if (start, stop) == (0, numel):
        return row_of(acc, reducers)
    acc.drop_buffers()
    return acc, list(reducers)


def reduce_part(rec, chunk_elems: int, reducers: list, start: int, stop: int):
    """(accumulator, reducers) of the values [start, stop) of a record, on this thread."""
    return accumulate(rec, chunk_elems, reducers, start, stop), reducers


def _portable(rec, reducers: list) -> bool:
    """Whether a record's work can go to another process: plain-data reader, picklable reducers."""
    if not getattr(rec.range_reader, "portable", False):
        return False
    try:
        pickle.dumps(reducers)
    except Exception:  # reducers that hold local classes, open files, ...: keep them on a thread
        return False
    return True


class _Pools:
    """A thread pool, and a process pool for portable items once they are worth it."""

    def __init__(self, workers: int, processes: bool):
        self.workers = workers
        self.threads = ThreadPoolExecutor(workers, thread_name_prefix="winspect") if workers > 1 else None
        self.processes = None
        self.allow_processes = (processes and kernels.native is None and workers > 1
                                and sys.platform.startswith("linux"))
        self.portable_bytes = 0

    def submit(self, rec, fn, args, span: tuple[int, int], reducers: list) -> object:
        portable = self.allow_processes and _portable(rec, reducers)
        if portable and self.processes is None:
            self.portable_bytes += rec.nbytes or 0
            if self.portable_bytes >= PROCESS_MIN_BYTES:
                ctx = multiprocessing.get_context("fork")
                self.processes = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init)
        if portable and self.processes is not None:
            return self.processes.submit(reduce_range, rec.range_reader, rec.np_dtype, rec.numel, args[1], *span,
                                         reducers)
        if self.threads is None or rec.numel <= INLINE_MAX_ELEMS:  # a thread hand-off costs more than the work
            return _Done(fn(*args))
        return self.threads.submit(fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        """Wait for the pools' work, or (on an error or Ctrl-C) drop what has not started."""
        for pool in (self.threads, self.processes):
            if pool:
                pool.shutdown(wait=wait, cancel_futures=not wait)


def _worker_init() -> None:
    """Worker processes leave Ctrl-C to the main process, which stops the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _work_items(rec, chunk_elems: int, reducers: list):
    """(fn, args, (start, stop), reducers) items for one record: its parts, or the whole tensor."""
    splittable = all(hasattr(r, "part") and hasattr(r, "merge") for r in reducers)
    if splittable and rec.range_reader is not None and rec.numel > chunk_elems * PART_CHUNKS:
        items = []
        for a, b in part_ranges(rec.numel, chunk_elems):
            part = [r.part(a) for r in reducers]
            items.append((reduce_part, (rec, chunk_elems, part, a, b), (a, b), part))
        return items
    return [(analyze, (rec, chunk_elems, reducers), (0, rec.numel), reducers)]


def analyze_stream(records, chunk_elems: int = CHUNK_ELEMS, reducer_factories=(), workers: int | None = None,
                   skip=lambda rec: False, on_part=None, processes: bool = True) -> Iterator[tuple[object, dict | None]]:
    """Yield (record, stats row) in record order; (record, None) for records that ``skip`` says to pass over.

    Reducer factories are called in order, on the calling thread; so is ``on_part(record, elems)``
    after each part of a tensor reduced in parts. ``processes=False`` keeps all work on threads.
    """
    workers = default_workers() if workers is None else workers
    pools = _Pools(workers, processes)
    window = 2 * workers
    pending: deque = deque()  # (record, item index, item count, future), in submission order
    merged: dict = {}  # id(record) -> accumulator of its parts so far
    try:
        for rec in map(analysed, records):  # complex tensors: through their magnitudes
            if skip(rec):
                pending.append((rec, 0, 1, _Done(None)))
                continue
            reducers = [r for r in (f(rec) for f in reducer_factories) if r is not None]
            items = _work_items(rec, chunk_elems, reducers)
            for i, (fn, args, span, item_reducers) in enumerate(items):
                yield from _make_room(pending, merged, on_part, window)
                pending.append((rec, i, len(items), pools.submit(rec, fn, args, span, item_reducers)))
        while pending:
            yield from _finish_oldest(pending, merged, on_part)
    except BaseException:
        pools.shutdown(wait=False)
        raise
    pools.shutdown()


def _make_room(pending: deque, merged: dict, on_part, window: int):
    """Yield finished items in order, and wait, until one more item may be submitted."""
    while pending:
        while pending and pending[0][3].done():
            yield from _finish_oldest(pending, merged, on_part)
        running = [p[3] for p in pending if not p[3].done()]
        parts = sum(1 for p in pending if p[2] > 1)
        if len(running) < window and len(pending) < AHEAD and parts < window:
            return
        if parts >= window or len(pending) >= AHEAD:
            yield from _finish_oldest(pending, merged, on_part)  # waits for the oldest
        else:
            wait(running, return_when=FIRST_COMPLETED)


def _finish_oldest(pending: deque, merged: dict, on_part):
    rec, i, count, fut = pending.popleft()
    value = fut.result()
    if count == 1:
        yield rec, value
        return
    acc, part_reducers = value
    if on_part:
        on_part(rec, acc.seen)
    if i == 0:
        merged[id(rec)] = value
    else:
        total, total_reducers = merged[id(rec)]
        total.merge(acc)
        for r, p in zip(total_reducers, part_reducers):
            r.merge(p)
    if i == count - 1:
        yield rec, row_of(*merged.pop(id(rec)))
