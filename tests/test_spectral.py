"""Spectral columns (--spectral): every column against a plain numpy reference on the same matrix,
the fits against WeightWatcher's own arithmetic, the stream plumbing, CLI and audit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from inspector import inspect
from inspector.analysis import spectral
from inspector.analysis.esd_fit import linear_kde, powerlaw_fit
from inspector.cli import main
from inspector.records import TensorRecord, array_reader


# --- plain references ------------------------------------------------------------------

def ref_powerlaw(evals):
    """WeightWatcher 0.7.7's WWFit.fit_power_law_standard, loop for loop (N >= 20; fewer: small rule)."""
    data = np.sort(evals[evals > 1e-5]).astype(np.float64)
    big = len(data)
    if big < 20:
        return ref_small(data)
    log_data = np.log(data)
    alphas, ds = np.zeros(big - 1), np.ones(big - 1)
    for i, xmin in enumerate(data[:-1]):
        n = float(big - i)
        alpha = 1 + n / (np.sum(log_data[i:]) - n * log_data[i])
        alphas[i] = alpha
        if alpha > 1:
            ds[i] = np.max(np.abs(1 - (data[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    i = int(np.argmin(ds))
    return alphas[i], data[i]


def ref_columns(w: np.ndarray) -> dict:
    """The columns of one 2-d matrix from numpy's SVD."""
    sv = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    ev = sv ** 2
    s = np.linalg.svd(np.sign(w).astype(np.float64), compute_uv=False)
    n, m = max(w.shape), min(w.shape)
    p = np.count_nonzero(w) / w.size
    q = sv[sv > 0] / sv[sv > 0].sum()
    alpha, xmin = ref_powerlaw(ev)
    return {
        "spectral_norm": ev.max(), "log_spectral_norm": np.log10(ev.max()), "log_norm": np.log10(ev.sum()),
        "stable_rank": ev.sum() / ev.max(), "sigma_max": sv.max(), "frobenius_norm": np.linalg.norm(w),
        "effective_rank": np.exp(-np.sum(q * np.log(q))), "sign_sigma_max": s.max(),
        "sign_spectral_ratio": s.max() / (np.sqrt(p) * (np.sqrt(n) + np.sqrt(m))),
        "alpha": alpha, "xmin": xmin, "alpha_weighted": alpha * np.log10(ev.max()),
        "num_pl_spikes": int(np.count_nonzero(ev >= xmin)), "num_evals": m,
    }


def matrix(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "tall":
        return rng.standard_normal((90, 40))
    if kind == "wide":
        return rng.standard_normal((30, 70)).astype(np.float32)
    if kind == "rank_deficient":
        return rng.standard_normal((60, 4)) @ rng.standard_normal((4, 45))
    if kind == "heavy":
        return rng.standard_t(2.5, size=(120, 80)) + 5 * np.outer(rng.standard_normal(120), rng.standard_normal(80))
    if kind == "with_zeros":
        w = rng.standard_normal((50, 30))
        w[rng.random(w.shape) < 0.3] = 0
        return w
    raise ValueError(kind)


def assert_columns(cols: dict, ref: dict, rtol: float = 1e-9) -> None:
    for k, v in ref.items():
        assert cols[k] == pytest.approx(v, rel=rtol, abs=1e-12), k


@pytest.mark.parametrize("kind", ["tall", "wide", "rank_deficient", "heavy", "with_zeros"])
def test_columns_match_numpy_svd(kind):
    w = matrix(kind)
    cols, spectrum = spectral.spectral_row([w], 1.0)
    assert cols["spectral_method"] == "exact"
    assert_columns(cols, ref_columns(w), rtol=1e-7 if w.dtype == np.float32 else 1e-9)
    assert spectrum["evals"].size == min(w.shape)


def test_rank_deficient_spectrum_has_zeros_not_negatives():
    w = matrix("rank_deficient")
    ev = spectral.gram_eigenvalues(w)
    assert ev.min() >= 0 and np.count_nonzero(ev > 1e-8 * ev.max()) == 4


def test_conv_pytorch_and_keras_layouts_pool_kernel_positions_at_half_scale():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((12, 10, 3, 3))  # (out, in, kh, kw)
    mats = spectral.matrices(w, "pytorch", 1, 0)
    cols, _ = spectral.spectral_row(mats, spectral.CONV2D_SCALE)
    ev = np.concatenate([np.linalg.svd(w[:, :, i, j], compute_uv=False) ** 2 for i in range(3) for j in range(3)])
    ev = np.sort(ev) * 0.5
    assert cols["num_evals"] == 90
    assert cols["spectral_norm"] == pytest.approx(ev.max(), rel=1e-10)
    assert cols["log_norm"] == pytest.approx(np.log10(ev.sum()), rel=1e-10)
    assert cols["alpha"] == pytest.approx(ref_powerlaw(ev)[0], rel=1e-9)
    assert cols["sigma_max"] == pytest.approx(np.sqrt(ev.max() / 0.5), rel=1e-10)  # textbook: unscaled
    assert cols["frobenius_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-12)
    keras = spectral.matrices(w.transpose(2, 3, 1, 0), "keras", 1, 3)  # (kh, kw, in, out)
    cols_k, _ = spectral.spectral_row(keras, spectral.CONV2D_SCALE)
    for k in ("spectral_norm", "log_norm", "alpha", "stable_rank", "sign_spectral_ratio"):
        assert cols_k[k] == pytest.approx(cols[k], rel=1e-9), k


def test_zero_matrix_states_its_columns():
    cols, _ = spectral.spectral_row([np.zeros((20, 10))], 1.0)
    assert cols["spectral_norm"] == 0 and cols["sigma_max"] == 0 and cols["frobenius_norm"] == 0
    for k in ("log_norm", "log_spectral_norm", "stable_rank", "alpha", "alpha_weighted", "effective_rank",
              "mp_softrank", "sign_spectral_ratio"):
        assert math.isnan(cols[k]), k
    assert cols["num_spikes"] != cols["num_spikes"]  # NaN: no bulk to fit


def ref_small(ev):
    """WWFit.fit_powerlaw_smallN (k_min 8, no prior), loop for loop."""
    best = None
    for i in range(len(ev) - 1):
        n = len(ev) - i
        if n < 8:
            continue
        a = 1 + (n - 1) / (np.sum(np.log(ev[i:])) - n * np.log(ev[i]))
        d = np.max(np.abs(np.arange(n) / n - (1 - (ev[i:] / ev[i]) ** (1 - a))))
        j = d - 0.868 / np.sqrt(n)
        if best is None or j < best[0]:
            best = (j, a, ev[i])
    if best is None:
        s = np.sum(np.log(ev)) - len(ev) * np.log(ev[0])
        return (1.0, ev[0]) if s <= 1e-12 else (1 + (len(ev) - 1) / s, ev[0])
    return best[1:]


@pytest.mark.parametrize("seed", range(12))
def test_pruned_fit_equals_the_full_loop(seed):
    """The KS-distance search skips candidates by a lower bound: same xmin and alpha as the full loop."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(20, 400))
    kind = seed % 3
    if kind == 0:
        ev = rng.pareto(rng.uniform(0.5, 4), size) + 0.01
    elif kind == 1:
        ev = np.linalg.svd(rng.standard_normal((size + int(rng.integers(0, 200)), size)), compute_uv=False) ** 2
    else:
        ev = np.concatenate([rng.chisquare(3, size), [50.0, 80.0]])
    alpha, xmin, _ = powerlaw_fit(ev)
    ref_alpha, ref_xmin = ref_powerlaw(ev)
    assert xmin == ref_xmin
    assert alpha == pytest.approx(ref_alpha, rel=1e-12)


def test_tiny_matrix_uses_the_small_sample_rule():
    rng = np.random.default_rng(3)
    ev = np.sort(rng.pareto(2.0, 12) + 1)
    alpha, xmin, _ = powerlaw_fit(ev)
    assert (alpha, xmin) == pytest.approx(ref_small(ev), rel=1e-12)
    assert powerlaw_fit(ev[:5])[:2] == pytest.approx(ref_small(ev[:5]), rel=1e-12)  # tails < 8: whole set
    assert math.isnan(powerlaw_fit(np.array([0.0, 1.0]))[0])


def record(name, arr, module_type=None, layout="pytorch", out_axis=0):
    return TensorRecord(name=name, kind="weight", np_dtype=arr.dtype, shape=arr.shape, reader=array_reader(arr),
                        module_type=module_type, layout=layout, out_axis=out_axis)


def reduce(rec, chunk=7):
    r = spectral.spectral_reducer(rec)
    for c in rec.chunks(chunk):
        r.update(c)
    return r.result()


def test_reducer_over_chunks_equals_the_whole_matrix():
    w = matrix("tall").astype(np.float32)
    out = reduce(record("fc.weight", w), chunk=13)
    cols, _ = spectral.spectral_row([w.astype(np.float64)], 1.0)
    for k in spectral.SPECTRAL_COLUMNS[1:]:
        assert out[k] == pytest.approx(cols[k], rel=1e-12, nan_ok=True), k


def test_nan_in_a_weight_skips_its_spectrum():
    w = matrix("tall")
    w[3, 4] = np.nan
    out = reduce(record("fc.weight", w))
    assert out["spectral_method"] == "skipped: non-finite values"
    assert all(math.isnan(out[k]) for k in spectral.SPECTRAL_COLUMNS[1:])


def test_which_tensors_apply():
    assert spectral.spectral_reducer(record("fc.weight", np.zeros((5, 4)))) is None  # 4 evals: too few
    assert spectral.spectral_reducer(record("v", np.zeros(10))) is None
    assert spectral.spectral_reducer(record("fc.weight", np.zeros((100, 1)))) is None  # one column
    assert spectral.spectral_reducer(record("c.weight", np.zeros((8, 2, 3, 3)))) is not None  # 18 evals


@pytest.mark.parametrize("shape,layout,gates,out_axis", [
    ((12, 10, 3, 3), "pytorch", 1, 0), ((3, 3, 10, 12), "keras", 1, 3), ((8, 4, 5), "pytorch", 1, 0),
    ((96, 24), "pytorch", 4, 0), ((24, 72), "keras", 3, 1), ((7, 9), "pytorch", 1, 0),
])
def test_matrix_shape_is_what_matrices_makes(shape, layout, gates, out_axis):
    mats = spectral.matrices(np.zeros(shape), layout, gates, out_axis)
    assert spectral.matrix_shape(shape, layout, gates, out_axis) == (len(mats), *mats[0].shape)
    assert {m.shape for m in mats} == {mats[0].shape}


def test_degenerate_spectra_give_numbers_not_warnings():
    import warnings

    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cols, _ = spectral.spectral_row([q], 1.0)  # every eigenvalue 1
        ones, _ = spectral.spectral_row([np.ones((30, 20))], 1.0)  # rank one
    assert cols["stable_rank"] == pytest.approx(64) and cols["effective_rank"] == pytest.approx(64)
    assert ones["effective_rank"] == pytest.approx(1) and ones["sign_spectral_ratio"] > 2
    assert math.isnan(ones["alpha"])  # one eigenvalue above 1e-5: nothing to fit


@pytest.mark.parametrize("module_type,name,rows,gates", [
    ("LSTM", "rnn.weight_ih_l0", 96, 4), ("GRU", "rnn.weight_ih_l0", 72, 3), (None, "lstm.weight_hh_l0", 96, 4),
    (None, "gru.weight_hh_l0", 72, 3), (None, "gru.weight_ih_l0", 72, 3), (None, "lstm.weight_ih_l0", 96, 4),
    (None, "fc.weight", 96, 1),
])
def test_recurrent_gates(module_type, name, rows, gates):
    assert spectral.gate_count(name, (rows, 24), module_type, 0) == gates


def test_lstm_gates_are_split_and_pooled():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4 * 24, 32))
    out = reduce(record("lstm.weight_ih_l0", w))
    ev = np.sort(np.concatenate([np.linalg.svd(g, compute_uv=False) ** 2 for g in np.split(w, 4)]))
    assert out["num_evals"] == 96
    assert out["spectral_norm"] == pytest.approx(ev.max(), rel=1e-10)
    assert out["alpha"] == pytest.approx(ref_powerlaw(ev)[0], rel=1e-9)
    keras = reduce(record("lstm/lstm_cell/kernel", np.ascontiguousarray(w.T), "LSTMCell", "keras", 1))
    assert keras["spectral_norm"] == pytest.approx(out["spectral_norm"], rel=1e-10)


def test_randomized_path_for_large_matrices(monkeypatch):
    monkeypatch.setattr(spectral, "EXACT_MAX_DIM", 16)
    rng = np.random.default_rng(2)
    u, _ = np.linalg.qr(rng.standard_normal((300, 120)))
    v, _ = np.linalg.qr(rng.standard_normal((120, 120)))
    w = (u * (0.93 ** np.arange(120))) @ v.T
    cols, spectrum = spectral.spectral_row([w.astype(np.float32)], 1.0)
    ev = np.linalg.svd(w, compute_uv=False) ** 2
    assert cols["spectral_method"] == f"randomized top {spectral.TOP_K}"
    assert spectrum["evals"].size == spectral.TOP_K
    assert np.sort(spectrum["evals"]) == pytest.approx(np.sort(ev)[-spectral.TOP_K:], rel=1e-4)
    assert cols["log_norm"] == pytest.approx(np.log10(ev.sum()), rel=1e-6)  # exact: the Frobenius norm
    assert cols["stable_rank"] == pytest.approx(ev.sum() / ev.max(), rel=1e-5)
    assert math.isnan(cols["mp_softrank"]) and math.isnan(cols["effective_rank"])
    s = np.linalg.svd(np.sign(w), compute_uv=False).max()
    assert cols["sign_sigma_max"] == pytest.approx(s, rel=1e-3)


def test_linear_kde_matches_scikit_learn():
    from sklearn.neighbors import KernelDensity

    x = np.random.default_rng(4).gamma(2.0, 0.5, 300)
    grid = np.linspace(0, x.max() + 0.5, 200)
    ref = np.exp(KernelDensity(kernel="linear", bandwidth=0.1).fit(x[:, None]).score_samples(grid[:, None]))
    assert linear_kde(x, grid) == pytest.approx(ref, rel=1e-9, abs=1e-12)


# --- through the pipeline, the CLI and audit ---------------------------------------------

FIXTURE = "fixtures/digits_cnn.safetensors"


def test_inspect_spectral_columns_and_threads(monkeypatch):
    plain = inspect(FIXTURE)
    assert "alpha" not in plain.tensors and not plain.spectra
    monkeypatch.setenv("WINSPECT_THREADS", "1")
    one = inspect(FIXTURE, spectral=True)
    monkeypatch.setenv("WINSPECT_THREADS", "2")
    two = inspect(FIXTURE, spectral=True, chunk_elems=100)
    t = one.tensors
    done = t[t["spectral_method"].notna()]
    assert list(done["name"]) == ["conv2.weight", "fc1.weight", "fc2.weight"]  # conv1: 8x1 slices
    assert set(one.spectra) == set(done["name"])
    for c in spectral.SPECTRAL_COLUMNS[1:]:
        assert np.allclose(done[c].astype(float), two.tensors.loc[done.index, c].astype(float), rtol=1e-12,
                           equal_nan=True), c
    assert one.summary["spectral"]["weights"] == 3
    assert {f.type for f in one.summary["findings"]} >= {"alpha"}


def test_cli_spectral_csv_and_report(tmp_path):
    out = tmp_path / "rep"
    res = CliRunner().invoke(main, [FIXTURE, "--spectral", "-q", "--csv", str(tmp_path / "t.csv"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    import pandas as pd

    t = pd.read_csv(tmp_path / "t.csv")
    assert set(spectral.SPECTRAL_COLUMNS) <= set(t.columns)
    for stem in ("esd", "alpha", "sign-spectrum-1"):
        assert (out / f"{stem}.png").stat().st_size > 1000


def test_audit_fails_on_alpha():
    res = CliRunner().invoke(main, ["audit", FIXTURE, "--fail-on", "alpha"])
    assert res.exit_code == 3, res.output
    assert "alpha" in res.output
    assert CliRunner().invoke(main, ["audit", FIXTURE, "--fail-on", "nan"]).exit_code == 0


@pytest.mark.parametrize("source", ["fixtures/digits_cnn.pth", "fixtures/digits_cnn.onnx", "fixtures/digits_cnn.npz"])
def test_every_format_gives_the_same_spectrum(source):
    ref = inspect(FIXTURE, spectral=True).tensors.set_index("name")
    other = inspect(source, spectral=True).tensors.set_index("name")
    for c in spectral.SPECTRAL_COLUMNS[1:]:
        assert float(other.loc["fc1.weight", c]) == pytest.approx(float(ref.loc["fc1.weight", c]), rel=1e-12), c


def test_keras_kernels_get_spectral_columns():
    t = inspect("fixtures/digits_keras.weights.h5", spectral=True).tensors
    done = t[t["spectral_method"].notna()]
    assert {"conv2d/kernel", "head/dense/kernel"} <= set(done["name"])
    assert (done["spectral_method"] == "exact").all() and done["alpha"].notna().all()
