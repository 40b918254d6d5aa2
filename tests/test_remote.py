"""Remote sources against a loopback HTTP server (tests/http_server.py): byte ranges, shard indexes,
hf:// through HF_ENDPOINT, and a network that ignores Range, cuts streams, answers 429 or redirects."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import inspector
from inspector.cli import main
from inspector.remote import http as remote_http

from .http_server import Behaviour, serve

ROOT = Path(__file__).resolve().parents[1]
STATS = ["name", "kind", "dtype", "shape", "numel", "neg_frac", "zero_frac", "mean", "std", "min", "max"]


def model_tensors() -> dict:
    rng = np.random.default_rng(0)
    t = {}
    for i in range(3):
        t[f"model.layers.{i}.mlp.up_proj.weight"] = rng.standard_normal((96, 64)).astype(np.float32)
        t[f"model.layers.{i}.mlp.up_proj.bias"] = rng.standard_normal(96).astype(np.float16)
        t[f"model.layers.{i}.input_layernorm.weight"] = np.ones(64, np.float32)
    t["model.embed_tokens.weight"] = rng.standard_normal((300, 64)).astype(np.float32)
    t["model.embed_tokens.weight"][0, :3] = [np.nan, np.inf, -0.0]
    return t


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """A directory with one safetensors file (~120 KB, more than one head read) and the same tensors in
    three shards with an index, plus a PyTorch fixture."""
    root = tmp_path_factory.mktemp("served")
    t = model_tensors()
    save_file(t, root / "model.safetensors")
    names = sorted(t)
    shards = [names[0:4], names[4:7], names[7:]]
    weight_map = {}
    for i, part in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-00003.safetensors"
        save_file({n: t[n] for n in part}, root / "sharded" / fname) if (root / "sharded").mkdir(exist_ok=True) \
            is None else None
        weight_map.update({n: fname for n in part})
    (root / "sharded" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (root / "digits_cnn.pth").write_bytes((ROOT / "fixtures" / "digits_cnn.pth").read_bytes())
    return root


def table(result) -> pd.DataFrame:
    return result.tensors[STATS].sort_values("name").reset_index(drop=True)


def same(a, b) -> None:
    pd.testing.assert_frame_equal(table(a), table(b))


@pytest.fixture
def no_temp_files(monkeypatch):
    """Fail a test that would write a temporary file or directory."""
    def refuse(*a, **k):
        raise AssertionError("a temporary file was made")
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)


@pytest.fixture
def sleeps(monkeypatch) -> list:
    waits: list = []
    monkeypatch.setattr(remote_http.time, "sleep", waits.append)
    return waits


def test_single_file_same_table_only_its_bytes(served, no_temp_files):
    local = inspector.inspect(served / "model.safetensors")
    with serve(served) as (base, b):
        remote = inspector.inspect(f"{base}/files/model.safetensors")
    same(local, remote)
    size = (served / "model.safetensors").stat().st_size
    assert b.sent <= size * 1.01
    assert all(rng for _, rng, _ in b.log)  # every request asked for a range
    assert b.connections < b.requests  # connections are kept alive between requests


def test_shard_index_resolves_shards_next_to_it(served, no_temp_files):
    local = inspector.inspect(served / "sharded")
    with serve(served) as (base, b):
        remote = inspector.inspect(f"{base}/files/sharded/model.safetensors.index.json")
    same(local, remote)
    assert remote.meta["format"] == "safetensors-sharded"
    total = sum(p.stat().st_size for p in (served / "sharded").iterdir())
    assert b.sent <= total * 1.01


@pytest.mark.parametrize("behaviour", [
    Behaviour(ignore_range=True), Behaviour(cut_every=20_000), Behaviour(busy=2), Behaviour(redirect=True),
    Behaviour(redirect=True, expire_after=2),
], ids=["ignores-range", "cuts-every-20KB", "429-twice", "redirects", "signed-url-expires"])
def test_unreliable_servers_give_the_same_table(served, behaviour, sleeps, no_temp_files):
    local = inspector.inspect(served / "sharded")
    with serve(served, behaviour) as (base, b):
        remote = inspector.inspect(f"{base}/files/sharded/model.safetensors.index.json")
    same(local, remote)
    total = sum(p.stat().st_size for p in (served / "sharded").iterdir())
    if behaviour.ignore_range:  # each file streamed whole, once
        assert b.sent == total
    if behaviour.cut_every:
        assert b.cuts > 3 and b.requests > 6  # resumed
        assert b.sent <= total * 1.01
    if behaviour.expire_after:
        assert sum(1 for path, _, _ in b.log if path.startswith("/files/")) > 4  # re-resolved


def test_429_honours_retry_after(served, sleeps):
    with serve(served, Behaviour(busy=2)) as (base, _):
        inspector.inspect(f"{base}/files/model.safetensors")
    assert sleeps == [0.0, 0.0]  # Retry-After: 0, not the backoff


def test_server_errors_name_url_and_status(served, sleeps):
    runner = CliRunner()
    with serve(served) as (base, _):
        r = runner.invoke(main, [f"{base}/files/missing.safetensors"])
    assert r.exit_code == 1
    assert r.output.strip() == f"error: {base}/files/missing.safetensors: HTTP 404 Not Found"
    with serve(served, Behaviour(busy=100)) as (base, _):
        r = runner.invoke(main, [f"{base}/files/model.safetensors"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "HTTP 429" in r.output and "after 6 retries" in r.output
    assert len(sleeps) == 6 and sleeps[:3] == [0.0, 0.0, 0.0]


def test_backoff_grows_on_connection_errors(sleeps):
    client = remote_http.HttpClient(retries=3)
    with pytest.raises(remote_http.RemoteError, match=r"^http://127\.0\.0\.1:9/x: network error"):
        client.get("http://127.0.0.1:9/x?sig=secret")
    assert sleeps == [0.5, 1.0, 2.0]


def test_header_only_reads_headers_alone(served):
    with serve(served) as (base, b):
        result = inspector.inspect_headers(f"{base}/files/sharded/model.safetensors.index.json")
    local = inspector.inspect(served / "sharded")
    assert result.summary["numel"] == int(local.tensors["numel"].sum())
    assert dict(zip(result.kinds["kind"], result.kinds["numel"])) == \
        local.tensors.groupby("kind")["numel"].sum().to_dict()
    assert b.requests == 4  # the index and one range per shard
    assert result.received == b.sent < 4 * 16 * 1024


def test_cli_header_only_and_csv_beside_a_url(served, tmp_path):
    out = tmp_path / "t.csv"
    with serve(served) as (base, _):
        r = CliRunner().invoke(main, [f"{base}/files/model.safetensors", "--header-only", "--csv", str(out)])
    assert r.exit_code == 0, r.output
    assert "headers only" in r.output and "10 tensors" in r.output
    assert len(pd.read_csv(out)) == 10
    r = CliRunner().invoke(main, ["model.safetensors", "--header-only", "--cache", str(tmp_path)])
    assert r.exit_code == 2 and "--header-only reads no values" in r.output


def test_hf_repository_through_the_endpoint(served, monkeypatch, no_temp_files):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    local = inspector.inspect(served / "sharded")
    b = Behaviour(repos={"org/sharded": served / "sharded", "org/single": served}, token="hf_secret_token")
    with serve(served, b) as (base, _):
        monkeypatch.setenv("HF_ENDPOINT", base)
        same(local, inspector.inspect("hf://org/sharded"))
        same(local, inspector.inspect("hf://org/single@main/model.safetensors"))
        r = CliRunner().invoke(main, ["hf://org/nothing"])
    assert r.exit_code == 1 and "HTTP 404" in r.output and "hf_secret" not in r.output
    assert all(auth == "Bearer hf_secret_token" for _, _, auth in b.log)


def test_hf_token_goes_only_to_the_hub(served, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    b = Behaviour(repos={"org/single": served}, token="wrong")
    with serve(served, b) as (base, _):
        monkeypatch.setenv("HF_ENDPOINT", base)
        r = CliRunner().invoke(main, ["hf://org/single"])
    assert r.exit_code == 1 and "HTTP 401" in r.output and "secret" not in r.output


def test_other_formats_are_downloaded_first_or_refused(served, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    local = inspector.inspect(served / "digits_cnn.pth")
    with serve(served) as (base, _):
        url = f"{base}/files/digits_cnn.pth"
        same(local, inspector.inspect(url))
        r = CliRunner().invoke(main, [url, "--no-download"])
    assert list(tmp_path.iterdir()) == []  # the copy is gone
    assert r.exit_code == 1 and r.output.startswith(f"error: {url}: ") and "--no-download" in r.output


def test_cache_keeps_files_for_the_next_run(served, tmp_path):
    cache = tmp_path / "cache"
    with serve(served) as (base, b):
        url = f"{base}/files/sharded/model.safetensors.index.json"
        first = inspector.inspect(url, cache=cache)
        sent = b.sent
        second = inspector.inspect(url, cache=cache)
    same(first, second)
    assert b.sent == sent  # the second run read the cache
    assert len(list(cache.rglob("*.safetensors"))) == 3


def test_a_url_is_never_an_input_to_protect(served, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with serve(served) as (base, _):
        r = CliRunner().invoke(main, [f"{base}/files/model.safetensors", "--json", "out.json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out.json").read_text())["summary"]["tensors"] == 10


@pytest.mark.parametrize("name", ["tiny_llama.gguf", "digits_cnn_fc1.npy"])
def test_gguf_and_npy_by_range(served, name, monkeypatch, no_temp_files):
    import inspector.loaders.gguf as gguf
    import inspector.remote.path as rpath

    monkeypatch.setattr(rpath, "HEAD_BYTES", 512)  # the GGUF header then takes several growing reads
    monkeypatch.setattr(gguf, "HEAD_BYTES", 512)
    (served / name).write_bytes((ROOT / "fixtures" / name).read_bytes())
    local = inspector.inspect(served / name)
    with serve(served, Behaviour(cut_every=3000)) as (base, b):
        remote = inspector.inspect(f"{base}/files/{name}")
    same(local, remote)
    assert remote.meta["format"] == local.meta["format"]
    assert b.sent <= (served / name).stat().st_size * 1.05


def test_fsspec_urls_read_by_range(served, monkeypatch, no_temp_files):
    fsspec = pytest.importorskip("fsspec")
    import inspector.remote as remote

    monkeypatch.setattr(remote, "FSSPEC_SCHEMES", remote.FSSPEC_SCHEMES + ("memory://",))
    fs = fsspec.filesystem("memory")
    for p in (served / "sharded").iterdir():
        fs.pipe(f"/bucket/sharded/{p.name}", p.read_bytes())
    try:
        remote_result = inspector.inspect("memory://bucket/sharded/model.safetensors.index.json")
    finally:
        fs.rm("/bucket", recursive=True)
    same(inspector.inspect(served / "sharded"), remote_result)


def test_fsspec_scheme_without_backend_is_one_clear_error():
    r = CliRunner().invoke(main, ["az://nobody/none/model.safetensors"])
    assert r.exit_code == 1 and r.output.startswith("error: az://nobody/none/model.safetensors: ")
    assert len(r.output.strip().splitlines()) == 1


def test_progress_bar_shows_network_bytes(served):
    from inspector.report.progress import ProgressBar

    bar = ProgressBar()
    with serve(served) as (base, _):
        inspector.inspect(f"{base}/files/model.safetensors", progress=bar)
    text = bar.progress.tasks[0].description
    size_mb = (served / "model.safetensors").stat().st_size / 1e6
    assert text.startswith(f"inspecting (network {size_mb:,.1f} MB, ") and text.endswith(" MB/s)")


def test_cut_without_range_support_is_one_clear_error(served):
    with serve(served, Behaviour(ignore_range=True, cut_every=50_000)) as (base, _):
        r = CliRunner().invoke(main, [f"{base}/files/model.safetensors"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert r.output.startswith(f"error: {base}/files/model.safetensors: the connection dropped at byte ")
    assert "does not answer range requests" in r.output


def test_hostile_remote_header_is_refused_before_any_data(served, tmp_path):
    import struct

    blob = b'{"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}'
    (served / "hostile.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 64)
    with serve(served) as (base, b):
        r = CliRunner().invoke(main, [f"{base}/files/hostile.safetensors"])
    assert r.exit_code == 1 and "past the end of the file" in r.output
    assert b.requests == 1
