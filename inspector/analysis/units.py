"""Per-unit sign structure: how the signs fall within each output unit of a weight tensor.

A unit is one slice of a weight tensor along its output axis (``TensorRecord.out_axis``): a
PyTorch linear row or conv filter (axis 0), the last axis of a Keras kernel. Values arrive
flattened in C order, so the unit of flat offset ``i`` is ``(i // inner) % units`` where
``inner`` is the product of the dimensions after the output axis.

Columns (see ``table.schema.TENSOR_ANALYSIS_COLUMNS``):

* ``units``: number of output units;
* ``all_nonpos_units``: units whose incoming weights are all <= 0 (no positive value);
* ``dead_relu_candidates``: of those, the units whose bias is also <= 0, or that have no
  bias: with non-negative inputs (the output of a ReLU, an image) their pre-activation is
  never positive, so a ReLU after them never opens. A normalisation layer between them
  and the ReLU can still shift them: they are candidates, not proven dead;
* ``unit_neg_frac_min`` / ``unit_neg_frac_max``: extremes of the per-unit negative fraction.

NaN values are neither negative nor positive, as in the tensor table's counts.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..dtypes import is_float
from . import kernels

MIN_RUN = 16  # below this many consecutive elements per unit, count by periods instead of runs
_UNIT_MASK = "_nonpos_units"  # private row keys, consumed by resolve_dead_relu
_BIAS_MASK = "_bias_nonpos"
UNIT_ROW_KEYS = (_UNIT_MASK, _BIAS_MASK)  # the private row keys of this module


class UnitSigns:
    """Per-unit counts of negative and positive values of one weight tensor, chunk by chunk."""

    def __init__(self, shape: tuple[int, ...], out_axis: int):
        self.units = shape[out_axis]
        self.inner = math.prod(shape[out_axis + 1 :])
        self.unit_size = math.prod(shape) // self.units
        self.neg = np.zeros(self.units, dtype=np.int64)
        self.pos = np.zeros(self.units, dtype=np.int64)
        self.offset = 0

    def part(self, start: int) -> "UnitSigns":
        """A reducer for the tensor's values from flat offset ``start`` on (see :meth:`merge`)."""
        other = copy.copy(self)
        other.neg = np.zeros_like(self.neg)
        other.pos = np.zeros_like(self.pos)
        other.offset = start
        return other

    def merge(self, other: "UnitSigns") -> None:
        """Add the counts of another part of the same tensor."""
        self.neg += other.neg
        self.pos += other.pos

    def update(self, chunk: np.ndarray) -> None:
        n = chunk.size
        if n == 0:
            return
        if self.inner >= MIN_RUN and kernels.row_code(chunk.dtype):
            self._add_runs_kernel(chunk.reshape(-1), n)
            self.offset += n
            return
        neg, pos = self._masks(chunk)
        if self.inner >= MIN_RUN:
            self._add_runs(neg, pos, n)
        else:
            self._add_periods(neg, pos, n)
        self.offset += n

    def _add_runs(self, neg: np.ndarray, pos: np.ndarray, n: int) -> None:
        """Sum the masks over each run of ``inner`` consecutive elements (one unit each): the
        chunk's whole runs as rows of a (runs, inner) grid, the partial runs at its ends apart."""
        inner = self.inner
        head = min(n, -self.offset % inner)
        body = (n - head) // inner * inner
        if head:
            self._add_ids(neg[:head], pos[:head], self.offset)
        if body:
            first = (self.offset + head) // inner
            ids = np.arange(first, first + body // inner, dtype=np.int64) % self.units
            acc = np.uint16 if inner < 1 << 16 else np.int64
            for mask, out in ((neg, self.neg), (pos, self.pos)):
                rows = mask[head : head + body].view(np.uint8).reshape(-1, inner).sum(axis=1, dtype=acc)
                np.add.at(out, ids, rows.astype(np.int64))
        if head + body < n:
            self._add_ids(neg[head + body :], pos[head + body :], self.offset + head + body)

    def _add_runs_kernel(self, chunk: np.ndarray, n: int) -> None:
        """As :meth:`_add_runs`, the whole runs counted by ``kernels.row_signs`` straight from the values."""
        inner = self.inner
        head = min(n, -self.offset % inner)
        body = (n - head) // inner * inner
        if head:
            self._add_ids(*self._masks(chunk[:head]), self.offset)
        if body:
            neg, pos = np.empty((2, body // inner), dtype=np.int64)
            code = kernels.row_code(chunk.dtype)
            kernels.row_signs(kernels.raw(chunk[head : head + body]), code, inner, neg, pos)
            first = (self.offset + head) // inner % self.units
            if first + neg.size <= self.units:  # no wrap-around: one slice of units
                self.neg[first : first + neg.size] += neg
                self.pos[first : first + neg.size] += pos
            else:
                ids = np.arange(first, first + neg.size, dtype=np.int64) % self.units
                np.add.at(self.neg, ids, neg)
                np.add.at(self.pos, ids, pos)
        if head + body < n:
            self._add_ids(*self._masks(chunk[head + body :]), self.offset + head + body)

    @staticmethod
    def _masks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values < 0, values > 0); NaN is neither."""
        if is_float(values.dtype) and not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float32)  # bf16 / f8 (ml_dtypes): exact, and compares much faster
        with np.errstate(invalid="ignore"):
            return values < 0, values > 0

    def _add_periods(self, neg: np.ndarray, pos: np.ndarray, n: int) -> None:
        """Short runs (e.g. Keras kernels, output axis last): the unit pattern repeats every
        ``units * inner`` elements, so whole periods are summed as a (periods, units, inner) grid."""
        period = self.units * self.inner
        head = min(n, -self.offset % period)
        body = (n - head) // period * period
        if head:
            self._add_ids(neg[:head], pos[:head], self.offset)
        if body:
            grid = (-1, self.units, self.inner)
            self.neg += np.count_nonzero(neg[head : head + body].reshape(grid), axis=(0, 2))
            self.pos += np.count_nonzero(pos[head : head + body].reshape(grid), axis=(0, 2))
        if head + body < n:
            self._add_ids(neg[head + body :], pos[head + body :], self.offset + head + body)

    def _add_ids(self, neg: np.ndarray, pos: np.ndarray, start: int) -> None:
        ids = (np.arange(start, start + neg.size, dtype=np.int64) // self.inner) % self.units
        self.neg += np.bincount(ids[neg], minlength=self.units)
        self.pos += np.bincount(ids[pos], minlength=self.units)

    def result(self) -> dict:
        frac = self.neg / self.unit_size
        nonpos = self.pos == 0
        count = int(np.count_nonzero(nonpos))
        return {
            "units": self.units,
            "all_nonpos_units": count,
            "dead_relu_candidates": count,  # until resolve_dead_relu finds the layer's bias
            "unit_neg_frac_min": float(frac.min()),
            "unit_neg_frac_max": float(frac.max()),
            _UNIT_MASK: nonpos,
        }


class BiasSigns:
    """Which elements of a bias vector are <= 0 (kept for the dead-ReLU count of its layer)."""

    def __init__(self):
        self.parts: list[np.ndarray] = []

    def update(self, chunk: np.ndarray) -> None:
        with np.errstate(invalid="ignore"):
            self.parts.append(chunk <= 0)  # a new array: safe when the chunk's buffer is reused

    def result(self) -> dict:
        return {_BIAS_MASK: np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=bool)}


def unit_signs(record):
    """Reducer factory: per-unit signs for weight tensors with an output axis."""
    if record.kind != "weight" or record.out_axis is None or record.numel == 0:
        return None
    return UnitSigns(record.shape, record.out_axis)


def bias_signs(record):
    """Reducer factory: the sign mask of 1-D bias tensors."""
    if record.kind != "bias" or len(record.shape) != 1 or record.numel == 0:
        return None
    return BiasSigns()


def resolve_dead_relu(rows: list[dict]) -> None:
    """Finish ``dead_relu_candidates`` with each weight's bias, and drop the private masks.

    The bias of a weight is a ``bias`` row of the same layer with one value per unit,
    preferring the one named like the weight (``fc.weight`` / ``fc.bias``,
    ``weight_ih_l0`` / ``bias_ih_l0``). A unit is a candidate when its weights and its
    bias are all <= 0; without a bias, every all-non-positive unit is.
    """
    biases: dict[str, list[tuple[str, np.ndarray]]] = {}
    for row in rows:
        if _BIAS_MASK in row:
            biases.setdefault(row["layer"], []).append((row["name"], row.pop(_BIAS_MASK)))
    for row in rows:
        if _UNIT_MASK not in row:
            continue
        nonpos = row.pop(_UNIT_MASK)
        bias = _bias_for(row["name"], nonpos.size, biases.get(row["layer"], []))
        if bias is not None:
            row["dead_relu_candidates"] = int(np.count_nonzero(nonpos & bias))


def _bias_for(name: str, units: int, candidates: list[tuple[str, np.ndarray]]):
    fits = [(n, m) for n, m in candidates if m.size == units]
    leaf = name.replace("/", ".").rsplit(".", 1)[-1]
    for n, m in fits:
        if n.replace("/", ".").rsplit(".", 1)[-1] == leaf.replace("weight", "bias").replace("kernel", "bias"):
            return m
    return fits[0][1] if fits else None
