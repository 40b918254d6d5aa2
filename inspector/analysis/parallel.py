"""Reduce a stream of records on a pool of threads; results come back in stream order.

numpy releases the GIL in file reads, casts and reductions, so threads share the
cores; bucket counting (``bincount`` / ``ufunc.at``) holds it. Work items are whole
tensors, or, for a large tensor whose record can read a range of its values and
that has no extra reducers, its parts (:func:`~inspector.analysis.stats.part_ranges`),
merged in order so that the result is the same bits whatever the number of threads.
At most ``2 * workers`` items are in flight, so memory stays bounded by a few chunks
and bucket tables per thread.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

from .stats import CHUNK_ELEMS, PART_CHUNKS, accumulate, analyze, part_ranges, row_of


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


def _work_items(rec, chunk_elems: int, reducers: list):
    """(fn, args) items for one record: its parts, or the whole tensor."""
    if not reducers and rec.range_reader is not None and rec.numel > chunk_elems * PART_CHUNKS:
        return [(accumulate, (rec, chunk_elems, (), a, b)) for a, b in part_ranges(rec.numel, chunk_elems)]
    return [(analyze, (rec, chunk_elems, reducers))]


def analyze_stream(records, chunk_elems: int = CHUNK_ELEMS, reducer_factories=(), workers: int | None = None,
                   skip=lambda rec: False, on_part=None) -> Iterator[tuple[object, dict | None]]:
    """Yield (record, stats row) in record order; (record, None) for records that ``skip`` says to pass over.

    Reducer factories are called in order, on the calling thread; so is ``on_part(record, elems)``
    after each part of a tensor reduced in parts.
    """
    workers = default_workers() if workers is None else workers
    pool = ThreadPoolExecutor(workers, thread_name_prefix="winspect") if workers > 1 else None
    window = 2 * workers
    pending: deque = deque()  # (record, reducers, item index, item count, future), in submission order
    merged: dict = {}  # id(record) -> accumulator of its parts so far
    try:
        for rec in records:
            if skip(rec):
                pending.append((rec, None, 0, 1, _Done(None)))
                continue
            reducers = [r for r in (f(rec) for f in reducer_factories) if r is not None]
            items = _work_items(rec, chunk_elems, reducers)
            for i, (fn, args) in enumerate(items):
                while len(pending) >= window:
                    yield from _finish_oldest(pending, merged, on_part)
                fut = pool.submit(fn, *args) if pool else _Done(fn(*args))
                pending.append((rec, reducers, i, len(items), fut))
        while pending:
            yield from _finish_oldest(pending, merged, on_part)
    finally:
        if pool:
            for *_, fut in pending:
                if isinstance(fut, Future):
                    fut.cancel()
            pool.shutdown(wait=True)


def _finish_oldest(pending: deque, merged: dict, on_part):
    rec, reducers, i, count, fut = pending.popleft()
    value = fut.result()
    if count == 1:
        yield rec, value
        return
    if on_part:
        on_part(rec, value.seen)
    if i == 0:
        merged[id(rec)] = value
    else:
        merged[id(rec)].merge(value)
    if i == count - 1:
        yield rec, row_of(merged.pop(id(rec)), reducers)
