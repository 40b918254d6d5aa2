"""``scan``: a generated zoo of every format, broken files and hostile pickles, scanned on a local
process pool and on a real Dask cluster on 127.0.0.1; a worker killed mid-scan; an interrupted scan
resumed; models whose inspection really hangs (their weights are a named pipe) stopped by the timeout;
a second scan into the same directory refused; the client keeping no row per model. Figures are
checked against ``inspect`` of the same files and against numpy."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from .helpers import ROOT, assert_clean_error, run_cli
from .zoo import hanging_model, make_zoo, release

from inspector import inspect
from inspector.scan import MODEL_COLUMNS, TENSOR_TABLE_COLUMNS, Model, discover, scan
from inspector.table.schema import TENSOR_COLUMNS


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    path, expect = make_zoo(root, tiny=250)  # a few hundred models, every format among them
    return root, path, expect


@pytest.fixture(scope="module")
def local(zoo):
    root, path, _ = zoo
    return scan([path], root / "local", workers=2)


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The rows without what differs between runs (time taken)."""
    return df.drop(columns=["seconds"]).reset_index(drop=True)


def test_every_model_once_with_its_status(zoo, local):
    _, _, expect = zoo
    rows = local.models
    assert list(rows.columns) == MODEL_COLUMNS
    assert rows["path"].is_unique
    assert dict(zip(rows["path"], rows["status"])) == expect
    errors = rows[rows["status"] == "error"]
    assert errors["message"].str.len().gt(0).all() and not errors["message"].str.contains("unexpected").any()


def test_a_tensor_name_that_is_not_unicode_is_an_ok_row_with_its_name_escaped(zoo, local):
    """A header's lone surrogate escape is a str Python accepts and UTF-8 refuses: the model is an ok row
    and its tensor table holds the name escaped, the scan going on."""
    path = next(p for p in local.models["path"] if p.endswith("unicode_trap.safetensors"))
    row = local.models.set_index("path").loc[path]
    assert row["status"] == "ok" and row["tensors"] == 1
    table = local.tensors().to_table(filter=ds.field("model") == path).to_pandas()
    assert table["name"].tolist() == ["enc\\ud800oder.weight"] and table["neg_count"].tolist() == [2]


def test_hostile_pickles_are_unsafe_findings_and_never_run(zoo, local):
    root, path, _ = zoo
    hostile = local.models[local.models["path"].str.contains("/downloads/")]
    assert len(hostile) == 6 and (hostile["findings_unsafe"] > 0).all() and (hostile["status"] == "ok").all()
    assert not (root / "marker").exists()
    assert local.failed_on(("unsafe", "nan")) == ["nan", "unsafe"]


def test_rows_match_inspect_and_numpy(zoo, local):
    from safetensors.numpy import load_file

    _, path, _ = zoo
    rows = local.models.set_index("path")
    for f in sorted((path / "runs" / "epochs").glob("*.safetensors"))[:8]:
        w = load_file(f)["fc.weight"]
        row = rows.loc[str(f)]
        finite = w[np.isfinite(w)]
        assert row["weight_neg_frac"] == pytest.approx(np.sum(finite < 0) / w.size)
        assert row["nan_count"] == np.isnan(w).sum() and row["findings_nan"] == (np.isnan(w).sum() > 0)
        assert (row["tensors"], row["numel"], row["size"]) == (2, w.size + 4, f.stat().st_size)
    for p in (path / "formats" / "onnx-int8" / "digits_cnn_int8.onnx", path / "hf" / "bert-tiny"):
        s = inspect(p).summary
        row = rows.loc[str(p)]
        assert (row["format"], row["tensors"], row["numel"]) == (s["format"], s["tensors"], s["numel"])
        assert row["weight_neg_frac"] == pytest.approx(s["weight_neg_frac"])
        assert row["findings"] == len(s["findings"])


def test_tensor_dataset_is_every_ok_models_table(zoo, local):
    _, path, _ = zoo
    table = ds.dataset(local.out / "tensors.parquet", format="parquet").to_table().to_pandas()
    assert list(table.columns) == TENSOR_TABLE_COLUMNS and TENSOR_TABLE_COLUMNS[1:len(TENSOR_COLUMNS) + 1] == TENSOR_COLUMNS
    ok = local.models[(local.models["status"] == "ok") & local.models["tensors"].notna()]
    assert table.groupby("model").size().to_dict() == dict(zip(ok["path"], ok["tensors"]))
    one = str(path / "formats" / "pytorch-zip" / "model.pth")
    got = table[table["model"] == one].reset_index(drop=True)
    want = inspect(one).tensors
    assert list(got["name"]) == list(want["name"])
    assert np.array_equal(got["neg_count"].to_numpy(), want["neg_count"].to_numpy())
    assert np.allclose(got["std"].to_numpy(float), want["std"].to_numpy(float), equal_nan=True)


def test_outputs_are_self_contained_and_agree(local):
    csv = pd.read_csv(local.out / "models.csv")
    parquet = pd.read_parquet(local.out / "models.parquet")
    assert list(csv["path"]) == list(parquet["path"]) == list(local.models["path"])
    html = (local.out / "report.html").read_text()
    md = (local.out / "report.md").read_text()
    assert "http" not in html and "<script src" not in html
    for text in (html, md):
        assert f"{len(local.models)} models" in text and "unsafe" in text and "could not be read" in text
    lines = (local.out / "models.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == sorted(local.models["path"])


@pytest.fixture(scope="module")
def cluster():
    """A Dask cluster on 127.0.0.1: a scheduler and 2 worker processes (each under a nanny that restarts it)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


@pytest.mark.parametrize("per_task", [None, 1])
def test_dask_cluster_gives_the_same_rows(zoo, local, cluster, per_task):
    """Several small models a task (the default on Dask) or one task per model: the local pool's rows
    and tensor tables."""
    root, path, _ = zoo
    result = scan([path], root / f"dask{per_task}", scheduler=cluster.scheduler_address, models_per_task=per_task)
    pd.testing.assert_frame_equal(comparable(result.models), comparable(local.models))
    # tensor tables written by the pool's tasks, by Dask's (which see the directory) and by the client
    by_model = [("model", "ascending"), ("name", "ascending")]
    tables = [ds.dataset(out / "tensors.parquet", format="parquet").to_table().sort_by(by_model)
              for out in (local.out, result.out)]
    assert tables[0].num_rows > 0 and tables[0].equals(tables[1])


def small_zoo(root: Path) -> Path:
    from .zoo import tiny_safetensors

    d = root / "small"
    d.mkdir()
    for i in range(16):
        tiny_safetensors(d, i, nan=(i == 3))
    (d / "broken.pth").write_bytes(b"\x80\x02garbage")
    return d


class Trigger:
    """A progress callback that runs ``action`` once, after ``after`` models are done."""

    def __init__(self, after: int, action):
        self.after, self.action, self.seen = after, action, 0

    def begin(self, models, nbytes):
        pass

    def done(self, row):
        self.seen += 1
        if self.seen == self.after:
            self.action()


def recorded_tasks(monkeypatch, distributed) -> list[list[int]]:
    """The sizes of the tasks each ``Client.map`` of the scan hands out, one list per call, as they are made."""
    calls: list[list[int]] = []
    real_map = distributed.Client.map
    monkeypatch.setattr(distributed.Client, "map", lambda self, fn, batches, **kw: calls.append(
        [len(b) for b in batches]) or real_map(self, fn, batches, **kw))
    return calls


def _fails_on_m002(models, timeout, place):
    from inspector.scan.task import timed_batch

    if any(m.path.endswith("m002.safetensors") for m in models):
        raise RuntimeError("the task was lost")
    return timed_batch(models, timeout, place)


@pytest.mark.parametrize("per_task", [1, 4, None])
def test_dask_task_error_is_a_row_that_says_so(tmp_path, monkeypatch, per_task):
    """A task that ends in an error other than its worker dying is an error row naming that error. A task
    of several models that fails has each run again in a task of its own: only the model that fails its
    task is an error row. Without ``models_per_task``, small models share tasks (DASK_BATCH_MODELS at most)."""
    distributed = pytest.importorskip("distributed")
    import inspector.scan.executors as executors

    monkeypatch.setattr(executors, "timed_batch", _fails_on_m002)
    calls = recorded_tasks(monkeypatch, distributed)
    d = small_zoo(tmp_path)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as c:
        result = scan([d], tmp_path / "out", scheduler=c.scheduler_address, models_per_task=per_task)
    rows = result.models.set_index("path")
    assert rows.loc[str(d / "m002.safetensors"), "message"] == \
        "the Dask task failed: RuntimeError: the task was lost"
    assert (rows.drop(index=str(d / "m002.safetensors"))["message"].fillna("") == "").sum() == 15
    assert rows.loc[str(d / "m001.safetensors"), "status"] == "ok" and len(rows) == 17
    sizes = [n for group in calls for n in group]
    most = per_task or executors.DASK_BATCH_MODELS
    assert (max(sizes) > 1) == (most > 1) and max(sizes) <= most


def _kills_on_m002(models, timeout, place):
    from inspector.scan.task import timed_batch

    if any(m.path.endswith("m002.safetensors") for m in models):
        os._exit(1)  # its worker process dies, as with a crash or the kernel's out-of-memory killer
    return timed_batch(models, timeout, place)


def test_dask_model_that_kills_its_workers_costs_only_its_own_row(tmp_path, monkeypatch):
    """A model whose inspection kills every worker that runs it, in a task shared with other small models
    (the default): Dask gives up on that task after its allowed failures; each of its models is then
    run alone, and only that model is an error row, saying how many workers died under it."""
    distributed = pytest.importorskip("distributed")
    import dask
    import inspector.scan.executors as executors

    monkeypatch.setattr(executors, "timed_batch", _kills_on_m002)
    calls = recorded_tasks(monkeypatch, distributed)
    d = small_zoo(tmp_path)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None) as c:
        result = scan([d], tmp_path / "out", scheduler=c.scheduler_address)
    rows = result.models.set_index("path")
    assert len(rows) == 17 and max(n for group in calls for n in group) > 1
    assert rows.loc[str(d / "m002.safetensors"), "message"] == \
        "the worker inspecting it died 2 times (out of memory or a crash)"
    assert set(rows.index[rows["status"] == "error"]) == {str(d / "m002.safetensors"), str(d / "broken.pth")}


def test_dask_worker_killed_mid_scan(zoo, tmp_path, cluster):
    """The zoo on Dask, one worker killed after 60 models are done: every model is a row, with its status."""
    import distributed

    _, path, expect = zoo
    with distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        result = scan([path], tmp_path / "out", scheduler=cluster.scheduler_address,
                      progress=Trigger(60, lambda: os.kill(pids[0], signal.SIGKILL)))
    rows = result.models
    assert rows["path"].is_unique and dict(zip(rows["path"], rows["status"])) == expect


def test_local_pool_process_killed_mid_scan(tmp_path):
    import psutil

    d = small_zoo(tmp_path)

    killed = []

    def kill_one():  # a pool process: a child of the fork server, which is a child of this process
        server = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
        pool = [c for p in server for c in p.children()]
        killed.append(pool[0].pid)
        os.kill(pool[0].pid, signal.SIGKILL)

    result = scan([d], tmp_path / "out", workers=2, progress=Trigger(3, kill_one))
    assert killed
    rows = result.models
    assert sorted(rows["path"]) == sorted(str(p) for p in d.iterdir())
    assert set(rows.loc[rows["status"] == "error", "path"]) == {str(d / "broken.pth")}


def test_interrupted_scan_resumes_with_every_model_once(tmp_path):
    d = small_zoo(tmp_path)
    out = tmp_path / "out"

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan([d], out, workers=2, progress=Trigger(5, interrupt))
    partial = pd.read_parquet(out / "models.parquet")  # readable, with the finished rows
    assert 5 <= len(partial) < 17 and partial["path"].is_unique
    first = {json.loads(line)["path"]: json.loads(line)["seconds"] for line in (out / "models.jsonl").open()}
    result = scan([d], out, workers=2, resume=True)
    rows = result.models
    assert sorted(rows["path"]) == sorted(str(p) for p in d.iterdir()) and rows["path"].is_unique
    assert result.resumed == len(first)
    kept = rows.set_index("path").loc[list(first), "seconds"]
    assert kept.to_dict() == pytest.approx(first)  # finished models were not inspected again
    lines = [json.loads(line)["path"] for line in (out / "models.jsonl").open()]
    assert sorted(lines) == sorted(rows["path"])  # each model journalled exactly once
    table = ds.dataset(out / "tensors.parquet", format="parquet").to_table(columns=["model"]).to_pandas()
    assert table.groupby("model").size().to_dict() == {p: 2 for p in rows.loc[rows["status"] == "ok", "path"]}


def test_the_zoo_interrupted_and_resumed_has_every_model_once(zoo, tmp_path):
    """The zoo's scan stopped by Ctrl-C after 40 models, then resumed: every model exactly once (rows,
    journal lines, tensor files), with its status; the finished ones not inspected again."""
    _, path, expect = zoo
    out = tmp_path / "out"

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan([path], out, workers=2, progress=Trigger(40, interrupt))
    first = [json.loads(line)["path"] for line in (out / "models.jsonl").open()]
    assert 40 <= len(first) < len(expect)
    result = scan([path], out, workers=2, resume=True)
    rows = result.models
    assert rows["path"].is_unique and dict(zip(rows["path"], rows["status"])) == expect
    assert result.resumed == len(first)
    assert sorted(json.loads(line)["path"] for line in (out / "models.jsonl").open()) == sorted(expect)
    table = ds.dataset(out / "tensors.parquet", format="parquet").to_table(columns=["model"]).to_pandas()
    with_tables = rows[(rows["status"] == "ok") & rows["tensors"].fillna(0).gt(0)]
    assert table.groupby("model").size().to_dict() == dict(zip(with_tables["path"], with_tables["tensors"]))


def test_resume_redoes_a_changed_model(tmp_path):
    d = small_zoo(tmp_path)
    out = tmp_path / "out"
    scan([d], out, workers=1)
    target = d / "m000.safetensors"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    result = scan([d], out, workers=1, resume=True)
    assert result.resumed == 16 and len(result.models) == 17


def test_discovery(tmp_path, zoo):
    _, path, expect = zoo
    models = discover([path])
    assert [m.path for m in models] == sorted(expect)
    index = next(m for m in models if m.path.endswith("safetensors-sharded"))
    assert len(index.files) == 3  # the index and its two shards: one model
    dup = next(m for m in models if m.duplicate_of)
    assert dup.path.endswith("latest.safetensors") and dup.duplicate_of.endswith("m000.safetensors")
    listed = tmp_path / "list.txt"
    listed.write_text(f"# two models\n{path / 'runs' / 'epochs' / 'm001.safetensors'}\n{path / 'hf'}\n")
    got = [m.path for m in discover([f"@{listed}", str(path / "broken" / "*.onnx")])]
    assert got == sorted([str(path / "broken" / "bad.onnx"), str(path / "hf" / "bert-tiny"),
                          str(path / "runs" / "epochs" / "m001.safetensors")])


def test_cli_scan(tmp_path):
    d = small_zoo(tmp_path)
    proc = run_cli("scan", str(d), "--out", str(tmp_path / "out"), "--workers", "1")
    assert proc.returncode == 3, proc.stderr  # the NaN model fails the default --fail-on
    assert "17 models (16 ok, 1 error, 0 skipped)" in proc.stdout and "Traceback" not in proc.stderr
    one = run_cli("scan", str(d), "--out", str(tmp_path / "one"), "--models-per-task", "1", "--fail-on", "none")
    assert one.returncode == 0 and "17 models (16 ok, 1 error, 0 skipped)" in one.stdout, one.stderr
    assert comparable(pd.read_parquet(tmp_path / "one" / "models.parquet")).equals(
        comparable(pd.read_parquet(tmp_path / "out" / "models.parquet")))
    bad = run_cli("scan", str(d), "--out", str(tmp_path / "o3"), "--models-per-task", "0")
    assert bad.returncode == 2 and "--models-per-task" in bad.stderr and "Traceback" not in bad.stderr
    proc = run_cli("scan", str(d), "--out", str(tmp_path / "out"), "--fail-on", "none", "--resume", "-q")
    assert proc.returncode == 0 and proc.stdout == ""
    proc = run_cli("scan", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"))
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "nope" in proc.stderr


def test_resume_journal_holds_each_model_once(tmp_path):
    d = small_zoo(tmp_path)
    out = tmp_path / "out"
    scan([d], out, workers=1)
    (d / "m001.safetensors").unlink()
    target = d / "m000.safetensors"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    result = scan([d], out, workers=1, resume=True)
    lines = [json.loads(line)["path"] for line in (out / "models.jsonl").open()]
    assert sorted(lines) == sorted(result.models["path"]) == sorted(str(p) for p in d.iterdir())
    assert result.resumed == 15 and result.total == 16
    parts = {p.name for p in (out / "tensors.parquet").rglob("part-*.parquet")}
    assert len(parts) == 15  # the deleted model's tensor file went with its row


@pytest.mark.parametrize("batch", [1, 7, 10_000])
def test_report_figures_gathered_in_batches(local, batch):
    from inspector.finding import FINDING_TYPES
    from inspector.report.zoo import BINS, ERRORS_SHOWN, WORST, ZooTally, zoo_markdown

    df = local.models
    tally = ZooTally()
    for i in range(0, len(df), batch):
        tally.add(df.iloc[i:i + batch])
    assert zoo_markdown(tally) == (local.out / "report.md").read_text()
    assert tally.status == {s: int((df["status"] == s).sum()) for s in ("ok", "error", "skipped")}
    fr = df["weight_neg_frac"].dropna().to_numpy(float)
    assert tally.neg_frac.tolist() == np.histogram(fr, bins=BINS, range=(0.0, 1.0))[0].tolist()
    for t in FINDING_TYPES:
        counts = df[f"findings_{t}"].fillna(0).astype(int)
        worst = sorted(((-n, p) for p, n in zip(df["path"], counts) if n > 0))[:WORST]
        assert [(r[0], r[1]) for r in tally.worst[t]] == [(p, -n) for n, p in worst]
        assert (tally.with_finding[t], tally.findings[t]) == (int((counts > 0).sum()), int(counts.sum()))
    errors = df[df["status"] == "error"]
    assert tally.errors == [[p, m] for p, m in zip(errors["path"], errors["message"])][:ERRORS_SHOWN]


def test_the_client_keeps_nothing_per_model(local, monkeypatch, tmp_path):
    """What a finished model leaves in the client's memory: nothing (its row is in the journal only)."""
    import tracemalloc

    from inspector.scan import store

    monkeypatch.setattr(store, "FLUSH_SECONDS", 1e9)
    line = (local.out / "models.jsonl").read_text().splitlines()[0]
    models = [Model(f"/zoo/m{i:06d}.safetensors", (f"/zoo/m{i:06d}.safetensors",), 100 + i, 10**18 + i)
              for i in range(3000)]
    s = store.ScanStore(tmp_path / "out")
    s.add(models[0], {**json.loads(line), "path": models[0].path, "size": models[0].size}, None)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for m in models[1:]:  # a row arrives as a new object each time (unpickled from a worker)
        s.add(m, {**json.loads(line), "path": m.path, "size": m.size}, b"PAR1")
    ours = [tracemalloc.Filter(True, store.__file__.replace("store.py", "*")), tracemalloc.Filter(True, "*pathlib*")]
    grew = tracemalloc.take_snapshot().filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    tracemalloc.stop()  # (allocations of this package only: not those of a Dask cluster's threads)
    kept = sum(d.size_diff for d in grew) / len(models)
    assert kept < 4, f"{kept:.0f} bytes kept per model"  # a journal offset in a dict would be 60-70
    s.flush()
    s.close()
    table = pd.read_parquet(tmp_path / "out" / "models.parquet")
    assert list(table["path"]) == [m.path for m in models] and list(table["size"]) == [m.size for m in models]


CLIENT = r"""
import json, sys
if __name__ == "__main__":
    from inspector.scan import scan
    r = scan([sys.argv[1]], sys.argv[2], workers=1)
    print(json.dumps({"total": r.total, "parquet": "pyarrow.parquet" in sys.modules, "pandas": "pandas" in sys.modules}))
"""


def test_the_tables_are_written_by_a_process_of_their_own(tmp_path):
    """The client never imports pyarrow.parquet: the Parquet writer's memory is not the client's. Nor
    pandas: only ``ScanResult.models`` needs it (the table writer does without: see test_scan_tables)."""
    d = small_zoo(tmp_path)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    proc = subprocess.run([sys.executable, str(script), str(d), str(tmp_path / "out")], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"total": 17, "parquet": False, "pandas": False}
    assert len(pd.read_parquet(tmp_path / "out" / "models.parquet")) == 17


def journal_store(local, out: Path, forked: bool = False):
    """A ScanStore in ``out`` with every row of the ``local`` scan added, and those rows in path order;
    ``forked``: its table writer forked by the local pool's fork server."""
    from inspector.scan import store

    rows = [json.loads(line) for line in (local.out / "models.jsonl").open()]
    s = store.ScanStore(out, forked=forked)
    for row in rows:
        s.add(Model(row["path"], (row["path"],), row["size"], row["mtime_ns"]), row, None)
    return s, sorted(rows, key=lambda r: r["path"])


def _no_fork():
    raise OSError("cannot fork")


@pytest.mark.parametrize("forked", [False, True])
@pytest.mark.parametrize("how", ["killed", "interrupted", "cannot start"])
def test_the_client_writes_the_tables_when_the_writer_process_is_lost(local, monkeypatch, tmp_path, how, forked):
    """Whether the writer is a new Python process or forked by the pool's fork server."""
    from inspector.scan import writer
    from .helpers import model_frame

    if how == "cannot start":
        monkeypatch.setattr(writer.sys, "executable", str(tmp_path / "no-python"))
        monkeypatch.setattr(writer, "ForkedWriter", _no_fork)
    s, rows = journal_store(local, tmp_path / "out", forked)
    assert s._writer.proc is None or isinstance(s._writer.proc, writer.ForkedWriter) == forked
    proc = s._writer.proc
    assert (proc is None) == (how == "cannot start")
    if how == "killed":
        proc.kill()
        proc.wait()
    elif how == "interrupted":  # Ctrl-C while the client waits for the writer's reply
        monkeypatch.setattr(writer, "receive", lambda f: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            s.flush()
        assert proc.poll() is not None  # stopped: no rename of its can come after the client's
        monkeypatch.undo()
    tally = s.flush(count=True)  # written by the client, from the journal
    s.close()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "models.parquet"), model_frame(rows))
    assert tally.models == len(rows)
    assert not [f for f in (tmp_path / "out").iterdir() if f.name.endswith(".tmp")]


def test_a_local_scan_forks_its_table_writer(tmp_path, monkeypatch):
    """On the local pool, the table writer is forked by the pool's fork server (which has imported what it
    needs), not started as a new Python; it writes the tables."""
    from inspector.scan import writer

    started = []
    monkeypatch.setattr(writer.subprocess, "Popen", lambda *a, **k: started.append(a) or _no_fork())
    forked = []
    real = writer.ForkedWriter.__init__
    monkeypatch.setattr(writer.ForkedWriter, "__init__", lambda self: forked.append(real(self)))
    d = small_zoo(tmp_path)
    result = scan([d], tmp_path / "out", workers=1)
    assert forked == [None] and not started
    assert len(pd.read_parquet(tmp_path / "out" / "models.parquet")) == result.total == 17


def test_rewrites_while_the_scan_runs_are_not_waited_for(local, monkeypatch, tmp_path):
    """While models are added the tables are rewritten in the background: ``add`` hands a rewrite to the
    writer and returns; the next one waits until that one is done. The last ``flush`` waits, and the
    tables hold every row."""
    from inspector.scan import store, writer
    from .helpers import model_frame

    monkeypatch.setattr(store, "FLUSH_SECONDS", 0.0)
    began: list[bool] = []
    begin = writer.TableWriter.begin
    monkeypatch.setattr(writer.TableWriter, "begin", lambda self, job: began.append(begin(self, job)) or began[-1])
    s, rows = journal_store(local, tmp_path / "out")
    assert s._writer.proc is not None and True in began and False in began  # one in progress: not waited for
    s.flush()
    s.close()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "models.parquet"), model_frame(rows))


def test_a_table_that_cannot_be_written_is_one_line_error(local, tmp_path):
    from inspector.errors import OutputError

    s, rows = journal_store(local, tmp_path / "out")
    (tmp_path / "out" / "models.csv").mkdir()
    with pytest.raises(OutputError) as e:
        s.flush()
    assert "models.csv" in str(e.value) and "\n" not in str(e.value)
    assert s._writer.proc.poll() is None  # the writer goes on: the next flush may succeed
    (tmp_path / "out" / "models.csv").rmdir()
    s.flush()
    s.close()
    assert len(pd.read_parquet(tmp_path / "out" / "models.parquet")) == len(rows)


def test_tables_streamed_in_row_groups_equal_the_rows(local, monkeypatch, tmp_path):
    import pyarrow.parquet as pq

    from inspector.scan import store
    from .helpers import model_frame

    monkeypatch.setattr(store, "BATCH", 3)
    monkeypatch.setattr(store, "ROW_GROUP", 8)
    rows = [json.loads(line) for line in (local.out / "models.jsonl").open()]
    s = store.ScanStore(tmp_path / "out")
    for row in rows[::-1]:
        s.add(Model(row["path"], (row["path"],), row["size"], row["mtime_ns"]), row, None)
    s.flush()
    s.close()
    want = model_frame(sorted(rows, key=lambda r: r["path"]))
    got = pd.read_parquet(tmp_path / "out" / "models.parquet")
    pd.testing.assert_frame_equal(got, want)
    assert pq.ParquetFile(tmp_path / "out" / "models.parquet").num_row_groups == -(-len(rows) // 9)
    buf = want.to_csv(index=False)
    assert (tmp_path / "out" / "models.csv").read_text() == buf


def bounded(fn, seconds: float = 180):
    """``fn()``, failing the test if it has not returned after ``seconds`` (a scan that hangs)."""
    box: list = []

    def run():
        try:
            box.append((True, fn()))
        except BaseException as e:  # handed to the test's thread
            box.append((False, e))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert box, f"still running after {seconds} s"
    ok, value = box[0]
    if not ok:
        raise value
    return value


@pytest.fixture
def hanging(tmp_path):
    """The small zoo and three models that hang, sorted first (so they are the first tasks)."""
    d = small_zoo(tmp_path)
    folders = [hanging_model(d, f"a{i}-streaming") for i in range(3)]
    yield d, folders
    for folder in folders:  # an inspection abandoned on a Dask worker reads end of file and ends
        release(folder)


def assert_timed_out(rows: pd.DataFrame, d: Path, folders: list[Path]) -> None:
    rows = rows.set_index("path")
    assert sorted(rows.index) == sorted(str(p) for p in d.iterdir())
    hung = rows.loc[[str(f) for f in folders]]
    assert (hung["status"] == "error").all() and (hung["message"] == "timed out after 2 s").all()
    assert (hung["seconds"] >= 2).all()
    assert set(rows.index[rows["status"] == "error"]) == {str(f) for f in folders} | {str(d / "broken.pth")}
    assert not rows["message"].str.contains("died").any()  # a kill for a timeout is no other model's try


def test_hanging_models_time_out_on_the_local_pool(hanging):
    d, folders = hanging
    out = d.parent / "out"
    # one process: the hanging models come first and the others wait behind them, in flight when
    # each hanging one's process is killed; they are run again, without counting it as a try
    proc = run_cli("scan", str(d), "--out", str(out), "--workers", "1", "--timeout", "2", "--fail-on", "none",
                   timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_timed_out(pd.read_parquet(out / "models.parquet"), d, folders)
    assert not any(release(f) for f in folders)  # their processes were killed: nobody waits on a pipe


def test_hanging_models_time_out_on_dask(hanging, cluster):
    d, folders = hanging
    result = bounded(lambda: scan([d], d.parent / "out", scheduler=cluster.scheduler_address, timeout=2))
    assert_timed_out(result.models, d, folders)
    assert all(release(f) for f in folders)  # each abandoned inspection still waits on its pipe


def test_scan_refuses_a_directory_another_run_holds(tmp_path):
    from inspector.errors import OutputError
    from inspector.report.outdir import locked

    d = small_zoo(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "theirs.txt").write_text("being written")
    with locked(out):
        with pytest.raises(OutputError, match="another winspect run is writing this directory"):
            bounded(lambda: scan([d], out, workers=1), 60)
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]


def wait_until_locked(out: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if out.is_dir():
            fd = os.open(out, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            finally:
                os.close(fd)  # releases the lock if it was taken here
        time.sleep(0.05)
    raise AssertionError(f"{out} was never locked")


def test_second_scan_into_the_same_out_fails_at_once(tmp_path):
    d = small_zoo(tmp_path)
    folder = hanging_model(d, "a-streaming")  # holds the first scan open until released
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WINSPECT_OFFLINE": "1"}
    first = subprocess.Popen([sys.executable, "-c", "from inspector.cli import main; main()", "scan", str(d),
                              "--out", str(out), "--workers", "1", "--fail-on", "none", "-q"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_locked(out)
        second = run_cli("scan", str(d), "--out", str(out), "--workers", "1", timeout=60)  # waiting = timeout
        assert_clean_error(second, str(out))
        assert "another winspect run is writing this directory" in second.stderr
        assert release(folder, wait=60)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err[-2000:]
    finally:
        release(folder)
        if first.poll() is None:
            first.kill()
    rows = pd.read_parquet(out / "models.parquet")  # the first scan's outputs, whole
    assert sorted(rows["path"]) == sorted(str(p) for p in d.iterdir())
    assert rows.loc[rows["path"] == str(folder), "status"].tolist() == ["error"]  # it read end of file
    lines = [json.loads(line)["path"] for line in (out / "models.jsonl").open()]
    assert sorted(lines) == sorted(rows["path"])


def test_a_pool_broken_between_looks_gives_its_models_back(tmp_path):
    """A pool process that dies after one look and before the next hand-out: the next ``submit`` finds the
    pool broken; the model goes back to the models to do (a new pool runs it), nothing is raised."""
    from inspector.scan.executors import LocalPool, local_results

    d = small_zoo(tmp_path)
    models = discover([d])
    pool = LocalPool(1, None)
    try:
        assert [m.path for m, _ in pool.drain([models[0]], 4)] == [models[0].path]
        for proc in list(pool.pool._processes.values()):
            os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not pool.pool._broken and time.monotonic() < deadline:  # the pool notices in its own thread
            time.sleep(0.05)
        todo = list(models[1:3])
        assert list(pool.drain(todo, 4)) == [] and todo == models[1:3] and pool.lost == []
    finally:
        pool.shutdown()
    done = dict(local_results(models[1:3], 1))
    assert sorted(m.path for m in done) == sorted(m.path for m in models[1:3])
    assert all(row["status"] == "ok" for row, _ in done.values())


def test_a_batch_lost_with_its_pool_charges_only_the_model_that_was_running(tmp_path):
    """A task runs a batch of models. Its process dies while on the second (here: killed while that one
    hangs): the first, finished but not yet handed back, is lost with the batch and not charged a try
    (it is not among the models running); the second is (it is); a new pool runs both again."""
    import errno

    from inspector.scan.executors import LocalPool, local_results

    first, *others = [m for m in discover([small_zoo(tmp_path)]) if m.path.endswith(".safetensors")][:8]
    hang = discover([hanging_model(tmp_path)])[0]
    todo = [*others[::-1], hang, first]  # (taken from the end: a first batch of two, see next_batch)
    pool = LocalPool(1, None)
    done: list = []
    runner = threading.Thread(target=lambda: done.extend(pool.drain(todo, 4)), daemon=True)
    runner.start()
    pipe, deadline = None, time.monotonic() + 60
    while pipe is None and time.monotonic() < deadline:  # the second model is reading its pipe: it runs
        try:
            pipe = os.open(Path(hang.path) / "model.safetensors", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            assert e.errno == errno.ENXIO
            time.sleep(0.05)
    try:
        assert pipe is not None
        for proc in list(pool.pool._processes.values()):
            os.kill(proc.pid, signal.SIGKILL)
        runner.join(60)
    finally:
        pool.shutdown()
        if pipe is not None:
            os.close(pipe)
    assert done == [] and {first.path, hang.path} <= {m.path for m in pool.lost}
    assert sorted(m.path for m in pool.lost + todo) == sorted(m.path for m in [first, hang, *others])
    assert list(pool.started) == [hang.path] and not pool.killed
    again = dict(local_results([first], 1))
    assert [row["status"] for row, _ in again.values()] == ["ok"]


def test_batches_are_small_models_together_and_fewer_near_the_end():
    """Batches of BATCH_MODELS small models, a model of more than BATCH_BYTES alone, every model once in
    order, and single models at the end (so that the last tasks spread over the workers)."""
    from inspector.scan import executors

    sizes = [10] * 100 + [executors.BATCH_BYTES] + [10] * 100
    models = [Model(f"/m/{i}", (), size, 1) for i, size in enumerate(sizes)]
    todo, batches = models[::-1], []
    while todo:
        batches.append(executors.next_batch(todo, 2))
    assert [m for b in batches for m in b] == models
    assert [len(b) for b in batches[:12]] == [executors.BATCH_MODELS] * 12
    assert [models[100]] in batches and all(len(b) == 1 for b in batches[-7:])


def test_a_pool_whose_processes_cannot_start_is_an_error_not_a_loop(tmp_path):
    """A script that calls scan without a ``__main__`` guard: every pool process re-runs the script and dies
    in its bootstrap. The scan stops after a few pools with an error that says why, instead of retrying."""
    d = small_zoo(tmp_path)
    script = tmp_path / "unguarded.py"
    script.write_text("import sys\nfrom inspector.scan import scan\n"
                      f"scan([{str(d)!r}], {str(tmp_path / 'out')!r}, workers=1)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert "PoolUnavailable: the scan's worker processes exit before running a model (3 pools in a row)" in proc.stderr
    assert '`if __name__ == "__main__":`' in proc.stderr


def _refuse(parts, path, data):
    raise AssertionError(f"the client wrote the tensor table of {path}")


def refuse_tables(monkeypatch) -> None:
    """Make the client's writing of a tensor table fail the test (pool and Dask processes import their own;
    a task's write is ``task.write_part``, the client's ``store.write_part``)."""
    from inspector.scan import store

    monkeypatch.setattr(store, "write_part", _refuse)


def test_dask_workers_that_see_the_directory_write_the_tables(tmp_path, cluster, monkeypatch):
    refuse_tables(monkeypatch)
    d = small_zoo(tmp_path)
    result = scan([d], tmp_path / "out", scheduler=cluster.scheduler_address)
    ok = result.models[result.models["status"] == "ok"]
    table = result.tensors().to_table().to_pandas()
    assert len(ok) == 16 and table.groupby("model").size().to_dict() == dict(zip(ok["path"], ok["tensors"]))
    assert [p.name for p in (tmp_path / "out" / "tensors.parquet").rglob(".*")] == []  # no token, no temporary file


def test_a_task_writes_its_table_only_where_it_reads_the_scans_token(tmp_path):
    """``delivered`` writes the table when the directory holds the scan's token; anywhere else (another
    token, no such directory, a write that fails) it gives the bytes back for the client to write."""
    from inspector.scan.task import PLACE_MARK, delivered, part_name

    parts = tmp_path / "tensors.parquet"
    parts.mkdir()
    (parts / PLACE_MARK).write_text("abc")
    model = Model(path="/models/a.safetensors", files=(), size=1, mtime_ns=1)
    result = ({"path": model.path}, b"PAR1 table")
    assert delivered(model, result, (str(parts), "abc")) == ({"path": model.path}, True)
    assert (parts / part_name(model.path)).read_bytes() == b"PAR1 table"
    for place in ((str(parts), "another"), (str(tmp_path / "elsewhere"), "abc"), None):
        assert delivered(model, result, place) is result
    assert delivered(model, ({"path": model.path}, None), (str(parts), "abc")) == ({"path": model.path}, None)
    other = Model(path="/models/b.safetensors", files=(), size=1, mtime_ns=1)
    (parts / part_name(other.path)).mkdir(parents=True)  # the write fails: "is a directory"
    assert delivered(other, result, (str(parts), "abc")) is result


def test_tensor_files_directly_in_the_directory_are_replaced_or_kept_as_their_models_are(tmp_path):
    """Scans wrote each tensor file directly in tensors.parquet/ before the folders. Into such a directory,
    a resumed scan keeps the files of the models it keeps and removes that of a model it does again; a
    scan that is not resumed removes them all: no model ever has two tables in the dataset."""
    from .zoo import tiny_safetensors

    d = small_zoo(tmp_path)
    out = tmp_path / "out"
    parts = out / "tensors.parquet"

    def flatten():  # the layout before the folders
        for f in list(parts.rglob("part-*.parquet")):
            f.rename(parts / f.name)

    def tables(result):
        ok = result.models[result.models["status"] == "ok"]
        table = result.tensors().to_table(columns=["model"]).to_pandas()
        assert table.groupby("model").size().to_dict() == dict(zip(ok["path"], ok["tensors"]))

    scan([d], out, workers=1)
    flatten()
    (d / "m005.safetensors").unlink()
    tiny_safetensors(d, 5, nan=True)  # changed: done again
    resumed = scan([d], out, workers=1, resume=True)
    assert resumed.resumed == 16
    tables(resumed)
    assert len(list(parts.glob("part-*.parquet"))) == 15 and len(list(parts.glob("*/part-*.parquet"))) == 1
    flatten()
    again = scan([d], out, workers=1)
    tables(again)
    assert not list(parts.glob("part-*.parquet")) and len(list(parts.glob("*/part-*.parquet"))) == 16


def test_pool_tasks_write_their_tables_and_use_a_share_of_the_cpus(tmp_path, monkeypatch):
    """On the local pool the client writes no tensor table (the tasks do, atomically, beside the others),
    and each task's inspection takes the CPUs divided among the pool's processes."""
    from inspector.scan import executors, store

    refuse_tables(monkeypatch)
    d = small_zoo(tmp_path)
    result = scan([d], tmp_path / "out", workers=2)
    ok = result.models[result.models["status"] == "ok"]
    root = tmp_path / "out" / "tensors.parquet"
    parts = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert parts == sorted(store.part_name(p) for p in ok["path"]) and len(parts) == 16
    table = result.tensors().to_table().to_pandas()
    assert table.groupby("model").size().to_dict() == dict(zip(ok["path"], ok["tensors"]))
    monkeypatch.setattr(executors, "default_workers", lambda: 8)
    assert [executors.pool_threads(w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_tensor_tables_small_plain_large_compressed(tmp_path):
    """A tensor table of at most PLAIN_ROWS rows is written without compression or dictionaries (they
    cost more than they save there), a larger one with both; either reads back as the Arrow table."""
    import pyarrow.parquet as pq

    from inspector.scan.task import PLAIN_ROWS, tensor_arrow, tensor_parquet
    from inspector.table.frame import Frame

    for rows in (3, PLAIN_ROWS, PLAIN_ROWS + 1):
        frame = Frame.from_columns({"name": [f"t{i}" for i in range(rows)], "numel": np.arange(rows),
                                    "std": np.linspace(0, 1, rows)})
        path = tmp_path / f"{rows}.parquet"
        path.write_bytes(tensor_parquet("m", frame))
        column = pq.ParquetFile(path).metadata.row_group(0).column(1)
        assert column.compression == ("UNCOMPRESSED" if rows <= PLAIN_ROWS else "ZSTD")
        assert ("RLE_DICTIONARY" in column.encodings) == (rows > PLAIN_ROWS)
        assert pq.read_table(path).equals(tensor_arrow("m", frame))


def test_tensor_arrow_equals_the_pandas_conversion():
    """tensor_arrow reads the Frame's arrays: the same table as converting its DataFrame with pandas'
    rules (NaN and None are nulls), for every column type a tensor table can have, missing values in each."""
    import pyarrow as pa

    from inspector.scan.task import tensor_arrow, tensor_schema
    from inspector.table.frame import Frame

    def by_pandas(model, df):
        arrays = []
        for field in tensor_schema():
            if field.name == "model":
                arrays.append(pa.array([model] * len(df), pa.string()))
            elif field.name not in df:
                arrays.append(pa.nulls(len(df), field.type))
            elif field.type == pa.string():
                arrays.append(pa.array([None if v is None or v != v else str(v) for v in df[field.name]], pa.string()))
            else:
                arrays.append(pa.array(df[field.name], type=field.type, from_pandas=True))
        return pa.Table.from_arrays(arrays, schema=tensor_schema())

    frame = Frame.from_rows([
        {"name": "a", "layer": None, "numel": 3, "mean": float("nan"), "units": 4, "ndim": 2, "tied_to": None,
         "dead_relu_candidates": None, "fan_in": 7, "unit_neg_frac_min": None},
        {"name": "b", "layer": "l", "numel": 0, "mean": -0.0, "units": None, "ndim": 0, "tied_to": "a",
         "dead_relu_candidates": None, "fan_in": None, "unit_neg_frac_min": 0.5},
        {"name": "c", "layer": "l", "numel": 5, "mean": float("inf"), "ndim": 1, "dead_relu_candidates": None},
    ], ["name", "layer", "numel", "mean", "units", "ndim", "tied_to", "dead_relu_candidates", "fan_in",
        "unit_neg_frac_min"])
    for fixture in (frame, inspect(ROOT / "fixtures" / "digits_cnn.pth").tables.tensors,
                    inspect(ROOT / "fixtures" / "tiny_llama.gguf", spectral=True).tables.tensors):
        for rows in (fixture, fixture[np.arange(len(fixture))[::-2]]):
            assert tensor_arrow("m", rows).equals(by_pandas("m", rows.to_pandas()))


def test_a_pool_killed_for_a_timeout_charges_no_try_to_the_other_models_it_held(monkeypatch):
    """Three pools in a row are broken by killing a model over its time; another model was running in
    each. It is run again without being charged a try (three tries would make it a 'died 3 times' row),
    and its own result comes back; each model over its time is a timeout row."""
    from inspector.scan import executors

    slow = [Model(f"/m/slow{i}.safetensors", (), 1, 1) for i in range(3)]
    fine = Model("/m/fine.safetensors", (), 1, 1)

    class KilledPool:
        """Each pool takes one slow model and the fine one, and is broken by the slow one's kill."""

        def __init__(self, workers, timeout, place, per_task):
            self.ran, self.lost, self.killed, self.started = False, [], {}, {}

        def drain(self, todo, window):
            held = [todo.pop() for _ in range(min(2, len(todo)))]
            self.ran = True
            over = [m for m in held if m in slow]
            if not over:  # the fine model alone: it finishes
                yield from ((m, ({"path": m.path, "status": "ok"}, None)) for m in held)
                return
            self.started = {m.path: (1, 0.0) for m in held}
            self.killed = {over[0].path: 5.0}
            self.lost = held
            return
            yield

        def shutdown(self):
            pass

    monkeypatch.setattr(executors, "LocalPool", KilledPool)
    order = [slow[0], fine, slow[1], slow[2]]  # popped from the end of the reversed list: in this order
    rows = {m.path: row for m, (row, _) in executors.local_results(order, 2, timeout=1.0)}
    assert rows[fine.path]["status"] == "ok"
    assert all(rows[m.path]["message"].startswith("timed out after 1 s") for m in slow)
