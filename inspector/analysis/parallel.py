"""Reduce a stream of records on several threads; results come back in stream order.

Work items are of three sizes:

* a batch of small tensors (at most ``small.SMALL_MAX`` values each, consecutive in the
  stream), reduced together (:mod:`~inspector.analysis.small`);
* a whole tensor;
* for a large tensor whose record can read a range of its values, its parts
  (:func:`~inspector.analysis.stats.part_ranges`), merged in order so that the result is the
  same bits whatever the number of workers. A tensor with extra reducers is split only when
  every one of them can be: ``r.part(start)`` gives a reducer for the values from ``start``
  on, and ``r.merge(other)`` adds the next part's. Once merged, the few values that decide its
  percentiles are read again, the parts again on the workers (``BucketStats.second_look``).

At most ``WINDOW_PER_WORKER * workers`` items are unfinished at a time. A queued item holds
only its record and reducers until a worker takes it, so that the workers go from item to item
without waiting for the calling thread to hand out the next one (each hand-out is a wake-up and a
switch of the GIL: with a window of two items a worker, a BERT-sized model took 40 % more CPU on
two threads than on one). Parts hold their bucket counts until merged, so at most ``2 * workers``
parts are unfinished, and memory stays bounded by a few chunks and bucket tables per worker.
Finished items wait to be yielded in order, so that a large tensor does not leave the other
workers idle: up to ``AHEAD`` items.

Work runs on threads: file reads, numpy's casts and reductions, and the kernels
(:mod:`~inspector.analysis.kernels`) release the GIL. (Without the compiled kernels numpy's
``bincount`` holds it, and a second core adds less; a process pool would add start-up,
pickling and a second copy of every bucket table for that case only, so there is none.)
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from functools import partial
from typing import Iterator

from .complex_values import analysed
from .small import batch_full, reduce_batch, small_max
from .stats import CHUNK_ELEMS, PART_CHUNKS, accumulate, analyze, part_ranges, row_of

AHEAD = 256  # finished items waiting for an earlier one, at most
WINDOW_PER_WORKER = 32  # unfinished items a worker, at most (see the module docstring)


def default_workers() -> int:
    """Threads to use: the CPUs this process may run on (``WINSPECT_THREADS`` overrides)."""
    env = os.environ.get("WINSPECT_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _done(future) -> bool:
    if isinstance(future, _Batch):
        return future.future is not None and future.future.done()
    return future.done()


class _Done:
    """A finished work item when no thread pool is used."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value

    def done(self) -> bool:
        return True


class _Item:
    """A submitted work item: its records (several for a batch), which part of how many, its future."""

    __slots__ = ("records", "index", "count", "future")

    def __init__(self, records, index: int, count: int, future):
        self.records, self.index, self.count, self.future = records, index, count, future


class _Batch:
    """Small records gathered into one work item; submitted when full, or when its first record is
    the oldest one waiting. Records that come between them are not held up."""

    def __init__(self, chunk_elems: int):
        self.members: list = []  # (record, reducers)
        self.values = 0
        self.chunk_elems = chunk_elems
        self.future = None

    def add(self, rec, reducers) -> None:
        self.members.append((rec, reducers))
        self.values += rec.numel

    def full(self) -> bool:
        return batch_full(len(self.members), self.values)


class _Runner:
    """The thread pool (none for one worker) and the window of unfinished items."""

    def __init__(self, workers: int, chunk_elems: int, on_part):
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="winspect") if workers > 1 else None
        self.window = WINDOW_PER_WORKER * workers
        self.part_window = 2 * workers  # unfinished parts, at most
        self.chunk_elems = chunk_elems
        self.on_part = on_part
        self.pending: deque[_Item] = deque()
        self.merged: dict = {}  # id(record) -> (accumulator, reducers) of its parts so far
        self.batch: _Batch | None = None  # the batch small records join
        # kept up to date as items come and go, so that looking for room costs O(window), not O(pending):
        self.held: dict[int, list] = {}  # id(future) -> [future, pending items holding it]
        self.inflight: set = set()  # submitted futures not yet seen done
        self.parts = 0  # pending items that are parts of a tensor

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args) if self.pool else _Done(fn(*args))

    def _hold(self, future, items: int) -> None:
        self.held[id(future)] = [future, items]
        self.inflight.add(future)

    def add(self, records, index: int, count: int, fn, *args) -> Iterator[tuple[object, dict | None]]:
        """Submit one item (after yielding finished ones until there is room for it)."""
        yield from self._make_room()
        future = self.submit(fn, *args)
        self._hold(future, 1)
        self.parts += count > 1
        self.pending.append(_Item(records, index, count, future))

    def add_small(self, rec, reducers) -> Iterator[tuple[object, dict | None]]:
        """Add a small record to the open batch (an item of its own, finished with the batch)."""
        if self.batch is None:
            self.batch = _Batch(self.chunk_elems)
            yield from self._make_room()
        self.pending.append(_Item([rec], len(self.batch.members), 0, self.batch))
        self.batch.add(rec, reducers)
        if self.batch.full():
            self._submit_batch()

    def _submit_batch(self) -> None:
        batch, self.batch = self.batch, None
        batch.future = self.submit(reduce_batch, batch.members, batch.chunk_elems)
        self._hold(batch.future, len(batch.members))

    def drain(self) -> Iterator[tuple[object, dict | None]]:
        if self.batch is not None:
            self._submit_batch()
        while self.pending:
            yield from self._finish_oldest()

    def shutdown(self, wait_for_work: bool = True) -> None:
        """Wait for the pool's work, or (on an error or Ctrl-C) drop what has not started."""
        if self.pool:
            self.pool.shutdown(wait=wait_for_work, cancel_futures=not wait_for_work)

    def _running(self) -> set:
        """The submitted futures not done yet (at most the window and a batch)."""
        self.inflight = {f for f in self.inflight if not f.done()}
        return self.inflight

    def _make_room(self):
        """Yield finished items in order, and wait, until one more item may be submitted."""
        pending = self.pending
        while pending:
            while pending and _done(pending[0].future):
                yield from self._finish_oldest()
            running = self._running()
            if len(running) < self.window and len(self.held) < AHEAD and self.parts < self.part_window:
                return
            if pending and isinstance(pending[0].future, _Batch) and pending[0].future.future is None:
                self._submit_batch()  # the oldest record waits in the open batch: no more waiting
            elif self.parts >= self.part_window or len(self.held) >= AHEAD:
                yield from self._finish_oldest()  # waits for the oldest
            elif running:
                wait(running, return_when=FIRST_COMPLETED)

    def _release(self, item: _Item) -> None:
        """The item leaves the window: the count of items holding its future goes down."""
        f = item.future.future if isinstance(item.future, _Batch) else item.future
        held = self.held[id(f)]
        held[1] -= 1
        if held[1] == 0:
            del self.held[id(f)]
        self.parts -= item.count > 1

    def _finish_oldest(self):
        item = self.pending.popleft()
        rec = item.records[0]
        if isinstance(item.future, _Batch):  # a small tensor: row `index` of its batch
            if item.future.future is None:
                self._submit_batch()
            self._release(item)
            yield rec, item.future.future.result()[item.index]
            return
        self._release(item)
        value = item.future.result()
        if item.count == 1:
            yield rec, value
            return
        acc, part_reducers = value
        if self.on_part:
            self.on_part(rec, acc.seen)
        if item.index == 0:
            self.merged[id(rec)] = value
        else:
            total, total_reducers = self.merged[id(rec)]
            total.merge(acc)
            for r, p in zip(total_reducers, part_reducers):
                r.merge(p)
        if item.index == item.count - 1:
            total, reducers = self.merged.pop(id(rec))
            if total.needs_look():
                total.second_look(self._readers(rec), self._run)
            yield rec, row_of(total, reducers)

    def _readers(self, rec) -> list:
        """Zero-argument readers of a record's parts (see BucketStats.second_look)."""
        return [partial(rec.range_chunks, a, b, self.chunk_elems) for a, b in part_ranges(rec.numel, self.chunk_elems)]

    def _run(self, fn, args) -> list:
        """``[fn(a) for a in args]``, on the pool."""
        return [f.result() for f in [self.submit(fn, a) for a in args]]


def reduce_part(rec, chunk_elems: int, reducers: list, start: int, stop: int):
    """(accumulator, reducers) of the values [start, stop) of a record, on this thread."""
    return accumulate(rec, chunk_elems, reducers, start, stop), reducers


def _split(rec, chunk_elems: int, reducers: list) -> list[tuple[int, int]] | None:
    """The part ranges of a record to reduce in parts, or None to reduce it whole."""
    splittable = all(hasattr(r, "part") and hasattr(r, "merge") for r in reducers)
    if splittable and rec.range_reader is not None and rec.numel > chunk_elems * PART_CHUNKS:
        return part_ranges(rec.numel, chunk_elems)
    return None


def analyze_stream(records, chunk_elems: int = CHUNK_ELEMS, reducer_factories=(), workers: int | None = None,
                   skip=lambda rec: False, on_part=None) -> Iterator[tuple[object, dict | None]]:
    """Yield (record, stats row) in record order; (record, None) for records that ``skip`` says to pass over.

    Reducer factories are called in order, on the calling thread; so is ``on_part(record, elems)``
    after each part of a tensor reduced in parts.
    """
    run = _Runner(default_workers() if workers is None else workers, chunk_elems, on_part)
    limit = small_max(chunk_elems)
    try:
        for rec in map(analysed, records):  # complex tensors: through their magnitudes
            if skip(rec):
                yield from run.add([rec], 0, 1, lambda: None)
                continue
            reducers = [r for r in (f(rec) for f in reducer_factories) if r is not None]
            if rec.numel <= limit:
                yield from run.add_small(rec, reducers)
                continue
            ranges = _split(rec, chunk_elems, reducers)
            if ranges is None:
                yield from run.add([rec], 0, 1, analyze, rec, chunk_elems, reducers)
                continue
            for i, (a, b) in enumerate(ranges):
                part = [r.part(a) for r in reducers]
                yield from run.add([rec], i, len(ranges), reduce_part, rec, chunk_elems, part, a, b)
        yield from run.drain()
    except BaseException:
        run.shutdown(wait_for_work=False)
        raise
    run.shutdown()
