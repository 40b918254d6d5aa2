"""Threads, parts, page release, progress bar and start-up of the fast pipeline."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from inspector.analysis.stats import PART_CHUNKS
from inspector.api import analyze_records, inspect
from inspector.cli import main, progress_shown
from inspector.loaders import open_source
from inspector.records import TensorRecord, array_range_reader, array_reader
from inspector.report.progress import ProgressBar, progress_for

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 100  # parts of PART_CHUNKS * CHUNK values


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "big.weight": rng.standard_normal((70, 103)).astype(np.float32),  # several parts
        "half.weight": rng.standard_normal((90, 50)).astype(ml_dtypes.bfloat16),
        "wide.weight": rng.standard_normal(PART_CHUNKS * CHUNK * 2).astype(np.float64),  # exactly two parts
        "small.bias": rng.standard_normal(5).astype(np.float32),
        "steps": np.array(12, dtype=np.int64),
    }


def records(arrs):
    return [TensorRecord(n, "other", a.dtype, a.shape, array_reader(a), range_reader=array_range_reader(a))
            for n, a in arrs.items()]


def same_rows(a, b) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for k, v in ra.items():
            assert v == rb[k] or (v != v and rb[k] != rb[k]), (ra["name"], k, v, rb[k])


@pytest.mark.parametrize("workers", [2, 3])
def test_threads_give_the_same_bits(workers):
    arrs = tensors()
    rows1, hists1 = analyze_records(records(arrs), CHUNK, workers=1)
    rows2, hists2 = analyze_records(records(arrs), CHUNK, workers=workers)
    same_rows(rows1, rows2)
    for name, (edges, counts) in hists1.items():
        assert np.array_equal(edges, hists2[name][0]) and np.array_equal(counts, hists2[name][1])
    big = next(r for r in rows1 if r["name"] == "big.weight")
    x = arrs["big.weight"].astype(np.float64)
    assert big["mean"] == pytest.approx(x.mean(), rel=1e-12) and big["std"] == pytest.approx(x.std(), rel=1e-10)
    for name in ("big.weight", "wide.weight"):  # read in parts on the workers, then looked at again in parts
        row, (edges, counts) = next(r for r in rows2 if r["name"] == name), hists2[name]
        x = arrs[name].astype(np.float64).reshape(-1)
        pct = (1, 5, 25, 50, 75, 95, 99)
        assert [row[f"p{q:02d}"] for q in pct] == np.percentile(x, pct).tolist()
        assert np.array_equal(counts, np.histogram(x, bins=edges)[0])  # no outliers: exact too


def test_safetensors_ranges_match_arrays(tmp_path):
    arrs = tensors()
    path = tmp_path / "m.safetensors"
    save_file({k: v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v for k, v in arrs.items()}, str(path))
    with open_source(str(path)) as src:
        recs = {r.name: r for r in src.records()}
    recs["half.weight"].np_dtype = np.dtype(ml_dtypes.bfloat16)  # saved as uint16 bits above
    file_rows, _ = analyze_records([recs[n] for n in arrs], CHUNK, workers=2)
    mem_rows, _ = analyze_records(records(arrs), CHUNK, workers=1)
    meta = ("kind", "dtype", "out_axis")
    same_rows([{k: v for k, v in r.items() if k not in meta} for r in file_rows],
              [{k: v for k, v in r.items() if k not in meta} for r in mem_rows])


def test_reducers_see_every_chunk_in_order_with_threads():
    arrs = tensors()
    seen = {}

    class Collect:
        def __init__(self, name):
            self.name, self.parts = name, []

        def update(self, chunk):
            self.parts.append(np.array(chunk, copy=True))

        def result(self):
            seen[self.name] = np.concatenate(self.parts) if self.parts else np.zeros(0)
            return {"collected": len(self.parts)}

    rows, _ = analyze_records(records(arrs), CHUNK, reducer_factories=(lambda r: Collect(r.name),), workers=3)
    for name, arr in arrs.items():
        assert np.array_equal(seen[name].view(np.uint8), arr.reshape(-1).view(np.uint8)), name
    assert [r["name"] for r in rows] == list(arrs)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("out_axis", [0, 1])
def test_weights_with_unit_reducers_are_split_into_parts(workers, out_axis):
    """Per-unit sign counts split with the tensor (each part from its offset) and merge in order."""
    from inspector.analysis.parallel import analyze_stream
    from inspector.table.rows import TABLE_REDUCERS

    rng = np.random.default_rng(3)
    w = rng.standard_normal((61, 53)).astype(np.float32)  # 3233 values: parts of 1600 split units
    w[7] = -np.abs(w[7])  # a unit with no positive weight
    w[:, 5] = -np.abs(w[:, 5])
    rec = TensorRecord("m.weight", "weight", w.dtype, w.shape, array_reader(w), out_axis=out_axis,
                       range_reader=array_range_reader(w))
    parts = []
    out = list(analyze_stream([rec], CHUNK, TABLE_REDUCERS, workers=workers, on_part=lambda r, n: parts.append(n)))
    assert len(parts) == 3 and sum(parts) == w.size  # it was reduced in parts
    row = out[0][1]
    per_unit = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)
    frac = (per_unit < 0).mean(axis=1)
    assert row["units"] == w.shape[out_axis]
    assert row["all_nonpos_units"] == int((~(per_unit > 0).any(axis=1)).sum()) == 1
    assert row["unit_neg_frac_min"] == frac.min() and row["unit_neg_frac_max"] == frac.max()


def test_torch_zip_pages_released_and_tied_values_intact(tmp_path):
    torch = pytest.importorskip("torch")
    w = torch.randn(300, 400)
    path = tmp_path / "m.pt"
    torch.save({"a.weight": w, "b.weight": w, "c.bias": torch.randn(7).to(torch.bfloat16)}, path)
    with open_source(str(path)) as src:
        rows, _ = analyze_records(src.records(), 1000, workers=2)
        # read again after release: the values come back from the file
        again = np.concatenate([c.copy() for c in next(iter(src.records())).chunks(1000)])
    x = w.numpy().astype(np.float64).reshape(-1)
    assert np.array_equal(again, w.numpy().reshape(-1))
    for r in rows[:2]:
        assert r["mean"] == pytest.approx(x.mean(), rel=1e-12) and r["max"] == x.max()
    assert rows[1]["tied_to"] == "a.weight"


def _mapped_rss_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps", encoding="utf-8", errors="replace"):
        if "-" in line.split(" ", 1)[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release is Linux only")
def test_torch_zip_pages_are_given_back_while_reading(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w.weight": torch.randn(4096, 2048)}, tmp_path / "m.pt")  # 32 MB
    with open_source(str(tmp_path / "m.pt")) as src:
        rec = next(iter(src.records()))
        peak = 0
        for i, chunk in enumerate(rec.chunks(1 << 18)):
            chunk.sum()
            if i:
                peak = max(peak, _mapped_rss_kb(tmp_path / "m.pt"))
    assert 0 < peak <= 8192  # a chunk or two (huge-page granular) of the 32 MB, never the whole


def test_progress_hidden_when_not_a_terminal_or_quiet():
    assert progress_for(io.StringIO()) is None

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert progress_for(Tty(), quiet=True) is None
    assert isinstance(progress_for(Tty()), ProgressBar)


def test_progress_bar_draws_tensors_and_bytes(tmp_path):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    arrs = tensors()
    path = tmp_path / "m.safetensors"
    save_file({k: v for k, v in arrs.items() if v.dtype != ml_dtypes.bfloat16}, str(path))
    bar = ProgressBar()
    with progress_shown(bar, out, delay=0.0):
        inspect(path, progress=bar)
        assert bar.tensors == 4 and bar.total_tensors == 4
        task = bar.progress.tasks[0]
        assert task.completed == task.total == sum(v.nbytes for k, v in arrs.items() if v.dtype != ml_dtypes.bfloat16)
        time.sleep(0.6)  # a refresh or two (four a second)
    assert "inspecting" in out.getvalue() and "4/4 tensors" in out.getvalue()


def test_scan_progress_bar_draws_models_bytes_and_errors():
    from inspector.report.progress import ScanProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    bar = ScanProgressBar()
    with progress_shown(bar, out, delay=0.0):
        bar.begin(3, 3_000_000)
        for status in ("ok", "error", "ok"):
            bar.done({"status": status, "size": 1_000_000})
        time.sleep(0.6)
    text = out.getvalue()
    assert "scanning" in text and "3/3" in text and "3.0 MB/3.0 MB" in text and "1 errors" in text


def test_progress_is_drawn_by_the_command_line_only(tmp_path):
    """The bars are renderables: making and advancing one writes nothing anywhere."""
    import contextlib

    from inspector.report.progress import ScanProgressBar

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        bar = ProgressBar()
        path = tmp_path / "m.safetensors"
        save_file({"w.weight": np.ones((4, 4), np.float32)}, str(path))
        inspect(path, progress=bar)
        scan_bar = ScanProgressBar()
        scan_bar.begin(1, 10)
        scan_bar.done({"status": "ok", "size": 10})
        time.sleep(0.6)
    assert err.getvalue() == out.getvalue() == ""
    assert bar.tensors == 1


def test_cli_prints_no_progress_when_stderr_is_not_a_terminal(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w.weight": np.ones((4, 4), np.float32)}, str(path))
    res = CliRunner().invoke(main, [str(path), "--csv", str(tmp_path / "o.csv")])
    assert res.exit_code == 0, res.output
    assert "inspecting" not in res.output and (tmp_path / "o.csv").exists()


def test_safetensors_csv_imports_neither_torch_nor_matplotlib(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w.weight": np.ones((40, 40), np.float32), "b.bias": np.zeros(40, np.float32)}, str(path))
    code = (
        "import sys\nfrom inspector.cli import main\n"
        f"main([{str(path)!r}, '--csv', {str(tmp_path / 'o.csv')!r}], standalone_mode=False)\n"
        "print('heavy:', sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout


@pytest.mark.parametrize("with_reducers", [False, True])
def test_numpy_kernels_on_threads_give_the_same_bits(tmp_path, with_reducers):
    """The numpy implementation of the kernels, on threads, gives what one worker gives."""
    from inspector.analysis import kernels, numpy_kernels
    from inspector.table.rows import TABLE_REDUCERS

    arrs = {k: v for k, v in tensors().items() if v.dtype != ml_dtypes.bfloat16}
    path = tmp_path / "m.safetensors"
    save_file(arrs, str(path))
    with open_source(str(path)) as src:
        recs = list(src.records())
    factories = TABLE_REDUCERS if with_reducers else ()
    previous = kernels.use(numpy_kernels)
    try:
        rows1, hists1 = analyze_records(recs, CHUNK, reducer_factories=factories, workers=1)
        rows2, hists2 = analyze_records(recs, CHUNK, reducer_factories=factories, workers=2)
    finally:
        kernels.use(previous)
    if with_reducers:
        big = next(r for r in rows2 if r["name"] == "big.weight")
        assert big["units"] == 70 and big["unit_neg_frac_max"] > 0
    for a, b in zip(rows1, rows2):
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=isinstance(a[k], float)) or a[k] == b[k], (a["name"], k)
    for name, (edges, counts) in hists1.items():
        assert np.array_equal(counts, hists2[name][1])


@pytest.mark.parametrize("workers", [1, 2])
def test_read_errors_reach_the_caller(tmp_path, workers):
    path = tmp_path / "m.safetensors"
    save_file({"w.weight": np.ones((300, 40), np.float32), "b.bias": np.ones(3, np.float32)}, str(path))
    with open_source(str(path)) as src:
        recs = list(src.records())
    path.unlink()  # each reader opens the file itself
    with pytest.raises(OSError):
        analyze_records(recs, CHUNK, workers=workers)


def mixed_model(seed: int = 11) -> dict[str, np.ndarray]:
    """Small tensors (batched) between large ones (in parts), of several dtypes, awkward values included."""
    rng = np.random.default_rng(seed)
    arrs = {}
    for i in range(40):
        arrs[f"l{i}.norm.weight"] = rng.standard_normal(rng.integers(0, 90)).astype(np.float32)
        arrs[f"l{i}.norm.bias"] = rng.integers(-5, 5, 30).astype([np.int64, np.int8, np.float64][i % 3])
        if i % 7 == 0:
            big = rng.standard_normal(PART_CHUNKS * CHUNK + 333 * i + 1).astype(np.float32)
            big[::50] = 0.0
            big[1::77] = np.nan
            arrs[f"l{i}.fc.weight"] = big
        if i % 5 == 0:
            odd = rng.standard_normal(7).astype(ml_dtypes.bfloat16)
            odd[3] = np.inf
            arrs[f"l{i}.scale"] = odd
    arrs["tail"] = np.array(-0.0, dtype=np.float32)
    return arrs


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_small_tensors_are_batched_with_the_same_rows_in_order(workers):
    """Batches of small tensors give, in stream order, what each tensor gives alone."""
    from inspector.analysis.stats import analyze

    arrs = mixed_model()
    rows, hists = analyze_records(records(arrs), CHUNK, workers=workers)
    assert [r["name"] for r in rows] == list(arrs)
    for row, (name, arr) in zip(rows, arrs.items()):
        alone = analyze(records({name: arr})[0], CHUNK)
        for k, v in alone.items():
            got = hists[name][k == "hist_counts"] if k.startswith("hist") else row[k]
            if isinstance(v, np.ndarray):
                assert np.array_equal(v, got), (name, k)
            elif isinstance(v, float) and not k.startswith("p") and v == v:
                assert got == pytest.approx(v, rel=1e-12, abs=1e-300), (name, k)
            else:
                assert v == got or (v != v and got != got), (name, k, v, got)


def _thread_pools(monkeypatch) -> list[int]:
    """Record the size of every thread pool the analyzer starts."""
    from inspector.analysis import parallel

    sizes: list[int] = []

    class Counted(parallel.ThreadPoolExecutor):
        def __init__(self, workers, **kwargs):
            sizes.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(parallel, "ThreadPoolExecutor", Counted)
    return sizes


def test_small_models_run_on_the_calling_thread_and_threads_can_be_set(tmp_path, monkeypatch):
    """A model of at most SMALL_MODEL_BYTES starts no thread (that would cost more than its work);
    a larger one takes ``threads`` (or WINSPECT_THREADS), with the same rows whatever the number."""
    from inspector.api import SMALL_MODEL_BYTES

    monkeypatch.setenv("WINSPECT_THREADS", "2")
    sizes = _thread_pools(monkeypatch)
    rng = np.random.default_rng(5)
    small, large = tmp_path / "small.safetensors", tmp_path / "large.safetensors"
    save_file({"a": rng.standard_normal(SMALL_MODEL_BYTES // 8, dtype=np.float32),
               "b": rng.standard_normal(SMALL_MODEL_BYTES // 8, dtype=np.float32)}, str(small))
    save_file({"a": rng.standard_normal(SMALL_MODEL_BYTES // 4, dtype=np.float32),
               "b": rng.standard_normal(8, dtype=np.float32)}, str(large))
    inspect(small)
    assert sizes == []
    runs = {n: inspect(large, threads=n).tables.tensors.records() for n in (None, 1, 3)}
    assert sizes == [2, 3]  # None: WINSPECT_THREADS; 1: no pool
    same_rows(runs[None], runs[1])
    same_rows(runs[3], runs[1])
