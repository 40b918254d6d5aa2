"""Spectral analysis of weight matrices: a reducer over the record stream (``--spectral``).

Which tensors: ``weight``-kind tensors of rank >= 2 whose matrices (below) have both dimensions
>= ``MIN_DIM`` and which give at least ``MIN_EVALS`` eigenvalues together (WeightWatcher's
``min_evals``). Which matrices, as WeightWatcher combines them:

* a 2-d weight (linear, embedding, attention) is one matrix;
* a convolution kernel gives one out x in matrix per kernel position (``kh * kw`` for a 2-d
  conv; PyTorch ``(out, in, *k)``, Keras ``(*k, in, out)``), and its eigenvalues are pooled.
  A 2-d conv's matrices are scaled by ``sqrt(1/2)`` first (WeightWatcher's default
  ``conv2d_norm``), so its eigenvalues are half those of the raw slices;
* an LSTM / GRU kernel is split along its output axis into one matrix per gate (4 / 3),
  pooled the same way.

The eigenvalues are those of ``W^T W`` (squared singular values), from the Gram matrix of each
matrix's smaller side in float64 and a symmetric eigensolver. A matrix whose smaller side is
above ``EXACT_MAX_DIM`` gets only the top ``TOP_K`` eigenvalues, by a randomized block
(subspace-iteration) method in float32 over row blocks, in bounded memory; ``spectral_method``
says so. Every column is defined in docs/spectral.md.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .esd_fit import mp_fit, powerlaw_fit

MIN_DIM = 2
MIN_EVALS = 8
EXACT_MAX_DIM = 4096
TOP_K = 50
CONV2D_SCALE = 0.5  # eigenvalue factor of 2-d convs: WeightWatcher's conv2d_norm, (sqrt(1/2))^2
BLOCK_BYTES = 32 << 20
LANCZOS_MIN = 64  # Gram matrices larger than this get their top eigenvalue alone by Lanczos
BUFFER_F64_MAX = 1 << 24  # tensors up to this many values are held in float64, larger ones in float32
SPECTRUM_KEY = "_spectrum"  # private row key: what the plots need, popped by the table stage

SPECTRAL_COLUMNS = [
    "spectral_method", "num_evals", "spectral_norm", "log_spectral_norm", "log_norm", "stable_rank",
    "alpha", "alpha_weighted", "xmin", "num_pl_spikes", "mp_softrank", "num_spikes",
    "sigma_max", "frobenius_norm", "effective_rank", "sign_sigma_max", "sign_spectral_ratio",
]
RECURRENT_GATES = {"LSTM": 4, "LSTMCell": 4, "GRU": 3, "GRUCell": 3}


def gate_count(name: str, shape: tuple[int, ...], module_type: str | None, out_axis: int | None) -> int:
    """Gates stacked along the output axis of a recurrent kernel (1 for any other weight).

    The module type decides when the source names it (LSTM 4, GRU 3). Otherwise PyTorch's
    parameter names: ``weight_hh_l*`` has rows / columns = 4 or 3 gates; for ``weight_ih_l*``
    a layer path naming ``lstm`` or ``gru`` decides, else 4 when the rows divide by 4 (3 if only by 3).
    """
    if len(shape) != 2 or out_axis is None:
        return 1
    rows, cols = shape[out_axis], shape[1 - out_axis]
    gates = RECURRENT_GATES.get(module_type or "")
    leaf = name.replace("/", ".").rsplit(".", 1)[-1]
    if gates is None and leaf.startswith("weight_hh"):
        gates = rows // cols if rows % cols == 0 and rows // cols in (3, 4) else None
    elif gates is None and leaf.startswith("weight_ih"):
        path = name.lower()
        gates = 3 if "gru" in path else 4 if "lstm" in path else 4 if rows % 4 == 0 else 3
    return gates if gates and rows % gates == 0 else 1


def matrices(arr: np.ndarray, layout: str, gates: int, out_axis: int | None) -> list[np.ndarray]:
    """The 2-d matrices a weight tensor is analysed as (views, no copies)."""
    if arr.ndim == 2 and gates > 1:
        return np.split(arr, gates, axis=out_axis)
    if arr.ndim == 2:
        return [arr]
    if layout == "keras":  # (*k, in, out)
        flat = arr.reshape(-1, *arr.shape[-2:])
        return [flat[i] for i in range(flat.shape[0])]
    flat = arr.reshape(*arr.shape[:2], -1)  # (out, in, *k)
    return [flat[:, :, i] for i in range(flat.shape[2])]


def row_blocks(a: np.ndarray) -> list[slice]:
    rows = max(1, BLOCK_BYTES // max(1, a.shape[1] * 8))
    return [slice(r, min(a.shape[0], r + rows)) for r in range(0, a.shape[0], rows)]


def gram(a: np.ndarray, sign: bool = False) -> np.ndarray:
    """The float64 Gram matrix of a's smaller side (of sign(a) with ``sign``), built from row blocks."""
    if a.shape[0] < a.shape[1]:
        a = a.T
    g = np.zeros((a.shape[1], a.shape[1]))
    for s in row_blocks(a):
        b = np.ascontiguousarray(a[s], dtype=np.float64)  # BLAS needs contiguous blocks
        if sign:
            b = np.sign(b)
        g += b.T @ b
    return g


def gram_eigenvalues(a: np.ndarray, sign: bool = False) -> np.ndarray:
    """Eigenvalues of a^T a (a's smaller side), ascending; round-off below zero clipped to 0."""
    return np.clip(np.linalg.eigvalsh(gram(a, sign)), 0.0, None)


def top_gram_eigenvalue(g: np.ndarray) -> float:
    """The largest eigenvalue of a Gram matrix: Lanczos (ARPACK, to machine precision) when it is big."""
    if not g.any():
        return 0.0
    if g.shape[0] <= LANCZOS_MIN:
        return float(np.linalg.eigvalsh(g)[-1])
    from scipy.sparse.linalg import eigsh

    return float(eigsh(g, k=1, which="LA", v0=np.ones(g.shape[0]), tol=0, return_eigenvectors=False)[0])


def top_eigenvalues(a: np.ndarray, k: int, sign: bool = False, iters: int = 4, seed: int = 0) -> np.ndarray:
    """The top ``k`` eigenvalues of a^T a (ascending) by randomized subspace iteration in float32."""
    if a.shape[0] < a.shape[1]:
        a = a.T
    width = min(a.shape[1], k + 16)
    q = np.random.default_rng(seed).standard_normal((a.shape[1], width)).astype(np.float32)
    blocks = row_blocks(a)

    def rows(s):
        b = np.ascontiguousarray(a[s], dtype=np.float32)
        return np.sign(b) if sign else b

    for _ in range(iters):
        y = np.concatenate([rows(s) @ q for s in blocks])
        y, _ = np.linalg.qr(y)
        z = sum(rows(s).T @ y[s] for s in blocks)
        q, _ = np.linalg.qr(z)
    y = np.concatenate([rows(s) @ q for s in blocks]).astype(np.float64)
    sv = np.linalg.svd(y, compute_uv=False)[:k]
    return np.sort(sv ** 2)


def frobenius_sq(mats: list[np.ndarray]) -> float:
    total = 0.0
    for a in mats:
        for s in row_blocks(a):
            b = np.asarray(a[s], dtype=np.float64)
            total += float(np.einsum("ij,ij->", b, b))
    return total


def eigen_spectrum(mats: list[np.ndarray], exact: bool) -> np.ndarray:
    """Pooled eigenvalues of the matrices (sorted): all of them, or the top TOP_K of each."""
    parts = [gram_eigenvalues(a) if exact else top_eigenvalues(a, TOP_K) for a in mats]
    return np.sort(np.concatenate(parts))


def sign_columns(mats: list[np.ndarray], exact: bool) -> tuple[dict, np.ndarray]:
    """The top singular value of sign(W) and its ratio to the bulk edge of a random sign matrix of the
    same shape and density, sqrt(p) (sqrt(n) + sqrt(m)); the maximum over the matrices. Also, for the
    plot, the first matrix's sign eigenvalues over p * max(n, m) (MP with sigma 1 for a random pattern)."""
    best_sv, best_ratio, first = 0.0, -math.inf, np.zeros(0)
    for i, a in enumerate(mats):
        n, m = max(a.shape), min(a.shape)
        p = float(np.count_nonzero(a)) / a.size
        if not exact:
            top = float(top_eigenvalues(a, 1, sign=True)[-1])
        elif i == 0 and p > 0:
            ev = gram_eigenvalues(a, sign=True)
            top, first = float(ev[-1]), ev / (p * n)
        else:
            top = top_gram_eigenvalue(gram(a, sign=True))
        sv = math.sqrt(max(top, 0.0))
        best_sv = max(best_sv, sv)
        if p > 0:
            best_ratio = max(best_ratio, sv / (math.sqrt(p) * (math.sqrt(n) + math.sqrt(m))))
    ratio = best_ratio if best_ratio > -math.inf else math.nan
    return {"sign_sigma_max": best_sv, "sign_spectral_ratio": ratio}, first


def log10_or_nan(x: float) -> float:
    return math.log10(x) if x > 0 else math.nan


def ww_columns(evals: np.ndarray, norm: float, n: int, m: int, exact: bool) -> dict:
    """The columns bearing WeightWatcher's names, from the (scaled, pooled) eigenvalues."""
    top = float(evals[-1]) if evals.size else 0.0
    alpha, xmin, _ = powerlaw_fit(evals)
    spikes, softrank = mp_fit(evals, n, m) if exact and top > 0 else (math.nan, math.nan)
    log_spectral = log10_or_nan(top)
    return {
        "spectral_norm": top, "log_spectral_norm": log_spectral, "log_norm": log10_or_nan(norm),
        "stable_rank": norm / top if top > 0 else math.nan,
        "alpha": alpha, "alpha_weighted": alpha * log_spectral, "xmin": xmin,
        "num_pl_spikes": int(np.count_nonzero(evals >= xmin)) if math.isfinite(xmin) else math.nan,
        "mp_softrank": softrank, "num_spikes": spikes,
    }


def effective_rank(evals: np.ndarray, n: int) -> float:
    """exp of the entropy of the normalised singular values (Roy and Vetterli). Eigenvalues below the
    Gram matrix's round-off, max * n * 10 eps (n: the larger side), count as zero."""
    tol = evals.max() * n * 10 * np.finfo(np.float64).eps if evals.size else 0.0
    sv = np.sqrt(evals[evals > tol])
    if sv.size == 0:
        return math.nan
    p = sv / sv.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def spectral_row(mats: list[np.ndarray], scale: float) -> tuple[dict, dict]:
    """(columns, spectrum for the plots) of one weight's matrices; ``scale`` multiplies the eigenvalues."""
    n, m = max(mats[0].shape), min(mats[0].shape)
    exact = m <= EXACT_MAX_DIM
    raw = eigen_spectrum(mats, exact)
    fro_sq = frobenius_sq(mats) if not exact else float(raw.sum())
    evals = raw * scale
    cols = {"spectral_method": "exact" if exact else f"randomized top {TOP_K}", "num_evals": len(mats) * m}
    cols.update(ww_columns(evals, fro_sq * scale, n, m, exact))
    sign, sign_evals = sign_columns(mats, exact)
    cols.update({
        "sigma_max": math.sqrt(raw[-1]) if raw.size else 0.0, "frobenius_norm": math.sqrt(fro_sq),
        "effective_rank": effective_rank(raw, n) if exact else math.nan, **sign,
    })
    spectrum = {"evals": evals, "alpha": cols["alpha"], "xmin": cols["xmin"], "exact": exact,
                "sign_evals": sign_evals, "q": n / m}
    return cols, spectrum


def empty_columns(method: str) -> dict:
    return {c: (method if c == "spectral_method" else math.nan) for c in SPECTRAL_COLUMNS}


class SpectralReducer:
    """Collects one weight tensor's values from the stream, then computes its spectral columns."""

    def __init__(self, shape: tuple[int, ...], layout: str, gates: int, out_axis: int | None):
        self.shape, self.layout, self.gates, self.out_axis = shape, layout, gates, out_axis
        self.buf = None  # allocated at the first chunk (the reducer may be pickled before)
        self.offset = 0
        self.finite = True

    def update(self, chunk: np.ndarray) -> None:
        if self.buf is None:
            numel = math.prod(self.shape)
            self.buf = np.empty(numel, dtype=np.float64 if numel <= BUFFER_F64_MAX else np.float32)
        part = self.buf[self.offset : self.offset + chunk.size]
        part[...] = chunk.reshape(-1)
        self.finite = self.finite and bool(np.isfinite(part).all())
        self.offset += chunk.size

    def result(self) -> dict:
        buf, self.buf = self.buf, None
        if buf is None or not self.finite:
            return empty_columns("skipped: non-finite values" if buf is not None else "skipped: no values")
        arr = buf.reshape(self.shape)
        mats = matrices(arr, self.layout, self.gates, self.out_axis)
        scale = CONV2D_SCALE if arr.ndim == 4 else 1.0
        cols, spectrum = spectral_row(mats, scale)
        return {**cols, SPECTRUM_KEY: spectrum}


def matrix_shape(shape: tuple[int, ...], layout: str, gates: int, out_axis: int | None) -> tuple[int, int, int]:
    """(count, rows, columns) of the matrices :func:`matrices` makes of a tensor of this shape."""
    if len(shape) == 2 and gates > 1:
        return gates, shape[out_axis] // gates, shape[1 - out_axis]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if layout == "keras":
        return math.prod(shape[:-2]), shape[-2], shape[-1]
    return math.prod(shape[2:]), shape[0], shape[1]


def applies(shape: tuple[int, ...], layout: str, gates: int, out_axis: int | None) -> bool:
    """Whether a weight of this shape gets spectral columns (see the module's docstring)."""
    if len(shape) < 2:
        return False
    count, rows, cols = matrix_shape(shape, layout, gates, out_axis)
    return min(rows, cols) >= MIN_DIM and count * min(rows, cols) >= MIN_EVALS


def spectral_reducer(record):
    """Reducer factory: a SpectralReducer for weight tensors the analysis applies to."""
    if record.kind != "weight" or record.tied_to:
        return None
    gates = gate_count(record.name, record.shape, record.module_type, record.out_axis)
    if not applies(record.shape, record.layout, gates, record.out_axis):
        return None
    return SpectralReducer(record.shape, record.layout, gates, record.out_axis)


@contextlib.contextmanager
def blas_threads(active: bool = True):
    """Within: one BLAS/LAPACK thread per call. The parallelism is the analysis's worker threads
    (``WINSPECT_THREADS``, default one per CPU), one tensor each; BLAS threads of their own on top
    oversubscribe the CPUs and, on a loaded machine, run many times slower (threadpoolctl)."""
    if not active:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=1):
        yield
