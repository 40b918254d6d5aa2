"""winspect's own PyTorch reader against torch.load: every fixture, every storage type, views, quantized
tensors, big-endian files, parameters, legacy tar archives, and no torch import for file sources."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import inspector
from inspector.analysis.stats import CHUNK_ELEMS
from inspector.api import table_rows
from inspector.loaders.strided import flat_chunks
from tests.helpers import ROOT, legacy_tar

from tests.helpers import assert_stats_match

FIXTURES = ROOT / "fixtures"
STAT_COLUMNS = ["numel", "neg_count", "zero_count", "pos_count", "nan_count", "inf_count", "mean", "std", "min",
                "max", "abs_mean", "l2_norm", "p01", "p05", "p25", "p50", "p75", "p95", "p99"]


def reference_table(tensors: dict, tmp_path: Path):
    """The tensor table of torch-loaded tensors, analysed from plain NumPy copies written as safetensors."""
    from safetensors.numpy import save_file

    arrays = {k: v.detach().contiguous().numpy() for k, v in tensors.items()}
    save_file(arrays, tmp_path / "ref.safetensors")
    return inspector.inspect(tmp_path / "ref.safetensors").tensors.set_index("name")


def fixture_reference(name: str) -> dict:
    path = FIXTURES / name
    if name == "digits_cnn_script.pt":
        return torch.jit.load(str(path)).state_dict()
    if name == "digits_cnn_full.pt":
        sys.path.insert(0, str(FIXTURES))
        from make_torch_fixtures import digits_module

        digits_module()
        return torch.load(path, weights_only=False).state_dict()
    obj = torch.load(path, weights_only=True)
    return obj.get("model_state_dict", obj)


@pytest.mark.parametrize("name", ["digits_cnn.pth", "digits_cnn_legacy.pth", "digits_cnn_ckpt.pt",
                                  "digits_cnn_script.pt", "digits_cnn_full.pt"])
def test_every_fixture_matches_torch_load_to_the_bit(name, tmp_path):
    ours = inspector.inspect(FIXTURES / name).tensors.set_index("name")
    tensors = fixture_reference(name)
    assert list(ours.index) == list(tensors)
    ours, ref = ours.sort_index(), reference_table(tensors, tmp_path).sort_index()
    assert list(ours.index) == list(ref.index) and list(ours["dtype"]) == list(ref["dtype"])
    assert ours[STAT_COLUMNS].equals(ref[STAT_COLUMNS]), name


def test_fixture_kinds_and_formats():
    script = inspector.inspect(FIXTURES / "digits_cnn_script.pt")
    full = inspector.inspect(FIXTURES / "digits_cnn_full.pt")
    assert script.summary["format"] == "torchscript"
    assert any("winspect_fixture_digits.DigitsNet" in n for n in full.summary["notes"])
    assert "winspect_fixture_digits" not in sys.modules or "make_torch_fixtures" in sys.modules
    for result in (script, full):
        kinds = result.tensors.set_index("name")["kind"]
        assert kinds["conv1.weight"] == "weight" and kinds["bn1.running_var"] == "buffer"
        assert result.summary["findings"] == [] or all(f.type != "unsafe" for f in result.summary["findings"])


def special_tensors() -> dict:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 5, generator=g)
    x = torch.randn(4, 6, generator=g)
    return {
        "transposed.weight": base.t(),
        "sliced.weight": base[1:5, 1:4],
        "f8.weight": torch.randn(3, 4, generator=g).to(torch.float8_e4m3fn),
        "f8e5.weight": torch.randn(7, generator=g).to(torch.float8_e5m2),
        "bf16.weight": torch.randn(3, 3, generator=g).to(torch.bfloat16),
        "f16.weight": torch.randn(5, generator=g).half(),
        "f64.weight": torch.randn(2, 3, dtype=torch.float64, generator=g),
        "q.weight": torch.quantize_per_tensor(x, 0.05, 3, torch.quint8),
        "qs.weight": torch.quantize_per_tensor(x, 0.02, -4, torch.qint8),
        "qc.weight": torch.quantize_per_channel(x, torch.tensor([0.1, 0.02, 0.3, 0.05], dtype=torch.float64),
                                                torch.tensor([0, 1, -2, 3]), 0, torch.qint8),
        "i8": torch.randint(-100, 100, (9,), dtype=torch.int8, generator=g),
        "i16": torch.randint(-1000, 1000, (4,), dtype=torch.int16, generator=g),
        "i32": torch.randint(-(2**30), 2**30, (4,), dtype=torch.int32, generator=g),
        "u8": torch.randint(0, 255, (4,), dtype=torch.uint8, generator=g),
        "u16": torch.tensor([0, 7, 65535], dtype=torch.int32).to(torch.uint16),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
        "p.weight": torch.nn.Parameter(torch.randn(3, 2, generator=g)),
    }


def expected_values(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.is_quantized:
        return t.dequantize().numpy()
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16):
        return t.float().numpy()
    return t.contiguous().numpy()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_storage_type_view_and_quantized_tensor(tmp_path, legacy):
    sd = special_tensors()
    torch.save(sd, tmp_path / "s.pt", _use_new_zipfile_serialization=not legacy)
    result = inspector.inspect(tmp_path / "s.pt", chunk_elems=4)
    table = result.tensors.set_index("name")
    assert list(table.index) == list(sd)
    for name, t in sd.items():
        row = table.loc[name]
        want = expected_values(t)
        dtype = str(t.dtype).replace("torch.", "")
        assert row["dtype"] == dtype, name
        assert_stats_match(row, want)
        assert row["numel"] == t.numel()


def test_quantized_values_are_torch_dequantize_exactly(tmp_path):
    sd = {k: v for k, v in special_tensors().items() if k.startswith("q")}
    torch.save(sd, tmp_path / "q.pt")
    with inspector.loaders.open_source(str(tmp_path / "q.pt")) as src:
        for rec in src.records():
            got = np.concatenate(list(rec.chunks(5)))
            assert np.array_equal(got, sd[rec.name].dequantize().numpy().reshape(-1)), rec.name
            assert rec.dtype == str(sd[rec.name].dtype).replace("torch.", "")


def test_numpy_arrays_inside_the_pickle_are_tensors(tmp_path):
    arrays = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "b.bias": np.array([1, -2], dtype=">i4"),
              "c.weight": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    torch.save(arrays, tmp_path / "np.pt")
    table = inspector.inspect(tmp_path / "np.pt").tensors.set_index("name")
    for name, a in arrays.items():
        assert_stats_match(table.loc[name], a)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_protocols(tmp_path, protocol):
    sd = {"w.weight": torch.randn(3, 4), "n": np.arange(3.0)}
    torch.save(sd, tmp_path / "p.pt", pickle_protocol=protocol, _use_new_zipfile_serialization=protocol % 2 == 0)
    table = inspector.inspect(tmp_path / "p.pt").tensors.set_index("name")
    assert_stats_match(table.loc["w.weight"], sd["w.weight"].numpy())


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_pickles_of_numpy_arrays_in_every_protocol(tmp_path, protocol):
    """torch cannot save protocols 0-1 (its persistent ids are tuples); plain pickles of arrays use them all."""
    sd = {"w.weight": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "b.bias": np.arange(3, dtype=np.int64),
          "epoch": 3, "lr": np.float64(0.1)}
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(sd, protocol=protocol))
    table = inspector.inspect(tmp_path / "p.pkl").tensors.set_index("name")
    assert list(table.index) == ["w.weight", "b.bias"]
    assert_stats_match(table.loc["w.weight"], sd["w.weight"])


def test_parameters_and_requires_grad_checkpoints(tmp_path):
    """``state_dict(keep_vars=True)`` and ``dict(named_parameters())`` hold nn.Parameters."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    torch.save(model.state_dict(keep_vars=True), tmp_path / "kv.pt")
    torch.save(dict(model.named_parameters()), tmp_path / "np.pt")
    for name in ("kv.pt", "np.pt"):
        result = inspector.inspect(tmp_path / name)
        table = result.tensors.set_index("name")
        assert_stats_match(table.loc["0.weight"], model[0].weight.detach().numpy())
    from click.testing import CliRunner

    from inspector.cli import main

    assert CliRunner().invoke(main, ["audit", str(tmp_path / "kv.pt"), "-q"]).exit_code == 0
    model[0].weight.data[0, 0] = float("nan")
    torch.save(model.state_dict(keep_vars=True), tmp_path / "nan.pt")
    assert CliRunner().invoke(main, ["audit", str(tmp_path / "nan.pt"), "-q"]).exit_code == 3


# --- views: bounded chunks, stride 0, big-endian storages ---------------------------------------

def test_flat_chunks_match_numpy_on_awkward_views():
    rng = np.random.default_rng(0)
    base = rng.standard_normal(4 * 5 * 6)
    views = [base.reshape(4, 5, 6).transpose(2, 0, 1), base.reshape(4, 30)[:, ::7], base[:1][np.zeros(9, int)],
             np.lib.stride_tricks.as_strided(base, (3, 1000, 2), (8, 0, 16)), base.reshape(20, 6).T[2:5]]
    for v in views:
        flat = np.ascontiguousarray(v).reshape(-1)
        for max_elems in (1, 3, 7, 64, 10_000):
            for start, stop in ((0, flat.size), (5, flat.size - 3), (flat.size // 2, min(flat.size, flat.size // 2 + 11))):
                parts = list(flat_chunks(v, start, stop, max_elems))
                assert all(p.size <= max_elems for p in parts)
                got = np.concatenate(parts) if parts else np.empty(0)
                assert np.array_equal(got, flat[start:stop])


def test_stride_zero_view_is_read_in_bounded_chunks(tmp_path):
    """``torch.ones(1).expand(n)`` is 4 bytes on disk: it is read through the view, one chunk at a time."""
    import tracemalloc

    n = 1 << 24
    torch.save({"e.weight": torch.full((1,), 0.5).expand(n), "m.weight": torch.arange(3.0).view(3, 1).expand(3, n // 8)},
               tmp_path / "e.pt")
    assert (tmp_path / "e.pt").stat().st_size < 4096
    with inspector.loaders.open_source(str(tmp_path / "e.pt")) as src:
        rec = next(src.records())
        tracemalloc.start()
        total = count = 0
        for chunk in rec.chunks(1 << 16):
            total += float(chunk.sum())
            count += chunk.size
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert count == n and total == 0.5 * n
    assert peak < 8 * (1 << 16) * 4  # a few chunks, never the 64 MB the view stands for
    table = inspector.inspect(tmp_path / "e.pt").tensors.set_index("name")
    assert table.loc["e.weight", "numel"] == n and table.loc["e.weight", "mean"] == 0.5
    assert_stats_match(table.loc["m.weight"], np.repeat(np.arange(3.0), n // 8))


def rewrite_zip(src: Path, dst: Path, change) -> None:
    """Copy a zip checkpoint member by member, ``change(name, bytes) -> bytes | None`` (None drops it)."""
    with zipfile.ZipFile(src) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(dst, "w") as out:
        for name, data in members:
            new = change(name, data)
            if new is not None:
                out.writestr(name, new)


def big_endian_copy(src: Path, dst: Path, sd: dict) -> None:
    """The file torch would write on a big-endian machine: every storage byte-swapped, byteorder 'big'."""
    sizes = {}
    for t in sd.values():
        sizes[t.untyped_storage().data_ptr()] = t.element_size()
    itemsize = next(iter(sizes.values()))

    def change(name, data):
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:
            return np.frombuffer(data, dtype=f"<u{itemsize}").byteswap().tobytes()
        return data

    rewrite_zip(src, dst, change)


def test_big_endian_storage_with_several_views(tmp_path):
    """Two views and a whole tensor over one big-endian storage all see the same, correctly ordered values."""
    base = torch.linspace(0.0, 1.0, 24)
    sd = {"whole.weight": base, "a.weight": base[0:12].view(3, 4), "b.weight": base[6:24].view(6, 3).t()}
    torch.save(sd, tmp_path / "le.pt")
    big_endian_copy(tmp_path / "le.pt", tmp_path / "be.pt", sd)
    assert zipfile.ZipFile(tmp_path / "be.pt").read("le/byteorder") == b"big"
    ref = torch.load(tmp_path / "be.pt", weights_only=True)
    result = inspector.inspect(tmp_path / "be.pt", chunk_elems=5)
    table = result.tensors.set_index("name")
    for name, t in sd.items():
        assert torch.equal(ref[name], t)
        assert_stats_match(table.loc[name], t.contiguous().numpy())
    assert table.loc["a.weight", "max"] == float(base[11]) and table.loc["whole.weight", "mean"] == pytest.approx(0.5)


def test_the_same_view_twice_is_tied_another_view_is_not(tmp_path):
    w = torch.randn(4, 4)
    torch.save({"a.weight": w, "b.weight": w, "c.weight": w.t()}, tmp_path / "t.pt")
    table = inspector.inspect(tmp_path / "t.pt").tensors.set_index("name")
    assert table.loc["b.weight", "tied_to"] == "a.weight"
    assert not isinstance(table.loc["c.weight", "tied_to"], str)
    assert_stats_match(table.loc["c.weight"], w.t().contiguous().numpy())


# --- compressed and crowded zips ------------------------------------------------------------

def deflated_copy(src: Path, dst: Path, pad: int = 0) -> None:
    """The same checkpoint with every storage member deflate-compressed (and padded with ``pad`` zero bytes)."""
    with zipfile.ZipFile(src) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(dst, "w") as out:
        for name, data in members:
            if "/data/" in name:
                out.writestr(name, data + bytes(pad), compress_type=zipfile.ZIP_DEFLATED)
            else:
                out.writestr(name, data)


def test_compressed_storage_members_decompress_only_what_tensors_need(tmp_path):
    sd = {"w.weight": torch.randn(64, 32), "z.weight": torch.zeros(1 << 18)}
    torch.save(sd, tmp_path / "s.pt")
    deflated_copy(tmp_path / "s.pt", tmp_path / "d.pt", pad=64 << 20)  # each member claims 64 MB more
    with inspector.loaders.open_source(str(tmp_path / "d.pt")) as src:
        spooled = Path(src.checkpoint.tempdir.name)
        sizes = sorted(f.stat().st_size for f in spooled.iterdir())
        assert sizes == sorted(t.numel() * 4 for t in sd.values())
        rows, _ = table_rows(src.records())
    assert not spooled.exists()
    for row in rows:
        assert_stats_match(row, sd[row["name"]].numpy())


def test_zip_with_thousands_of_members_before_data_pkl_is_still_a_checkpoint(tmp_path):
    sd = {"w.weight": torch.randn(3, 3)}
    torch.save(sd, tmp_path / "s.pt")
    with zipfile.ZipFile(tmp_path / "s.pt") as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(tmp_path / "many.pt", "w") as out:
        for i in range(4100):
            out.writestr(f"s/filler/{i}", b"")
        for name, data in members:
            out.writestr(name, data)
    table = inspector.inspect(tmp_path / "many.pt").tensors.set_index("name")
    assert_stats_match(table.loc["w.weight"], sd["w.weight"].numpy())


# --- legacy tar ------------------------------------------------------------------------------

def test_legacy_tar_checkpoint_matches_torch(tmp_path):
    values = np.arange(10, dtype=np.float32) - 4.5
    legacy_tar(tmp_path / "old.tar", values)
    ref = torch.load(tmp_path / "old.tar", weights_only=False)["w.weight"]  # our own benign file
    table = inspector.inspect(tmp_path / "old.tar").tensors.set_index("name")
    assert table.loc["w.weight", "dtype"] == "float32" and tuple(ref.shape) == (5, 2)
    assert_stats_match(table.loc["w.weight"], ref.numpy())
    assert inspector.inspect(tmp_path / "old.tar").summary["format"] == "pytorch-tar"


# --- no torch ---------------------------------------------------------------------------------

NO_TORCH = """
import sys, json
from click.testing import CliRunner
from inspector.cli import main
codes = [CliRunner().invoke(main, [f, "-q", "--json", f + ".json"]).exit_code for f in sys.argv[1:]]
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules, "matplotlib": "matplotlib" in sys.modules}))
"""


def test_file_sources_never_import_torch(tmp_path):
    files = []
    for name in ("digits_cnn.pth", "digits_cnn_legacy.pth", "digits_cnn_ckpt.pt", "digits_cnn_script.pt",
                 "digits_cnn_full.pt"):
        (tmp_path / name).write_bytes((FIXTURES / name).read_bytes())
        files.append(str(tmp_path / name))
    legacy_tar(tmp_path / "old.tar", np.arange(4, dtype=np.float32))
    files.append(str(tmp_path / "old.tar"))
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, *files], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "WINSPECT_OFFLINE": "1"},
                          timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"codes": [0] * len(files), "torch": False, "matplotlib": False}, proc.stderr[-2000:]


def test_model_name_without_torch_says_how_to_install_it(tmp_path):
    """With torch hidden, a torchvision name exits 1 naming the extra to install."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            "from inspector.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "resnet18"], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "WINSPECT_OFFLINE": "1"},
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ('error: resnet18: not a file or directory; torchvision model names need the '
                                   'optional torch extra (torch and torchvision are not installed); install it '
                                   'with: pip install "winspect[torch]"')


def test_every_reconstructor_is_classified_safe():
    from inspector.loaders.torch_objects import TORCH_RECONSTRUCTORS
    from inspector.safety.pickle_scan import classify

    assert [g for g in TORCH_RECONSTRUCTORS if classify(g) != "safe"] == []


def test_chunk_elems_default_is_large_enough_for_whole_small_tensors():
    assert CHUNK_ELEMS >= 1 << 16


def test_big_endian_complex_tensor_is_read_through_its_magnitudes(tmp_path):
    z = torch.tensor([3 + 4j, 0 + 1j, complex(float("nan"), 0.0), -5 + 0j], dtype=torch.complex64)
    sd = {"freqs_cis": z, "w.weight": torch.ones(2)}
    torch.save(sd, tmp_path / "le.pt")
    rewrite_zip(tmp_path / "le.pt", tmp_path / "be.pt", lambda name, data: b"big" if name.endswith("/byteorder") else
                np.frombuffer(data, "<f4").byteswap().tobytes() if "/data/" in name else data)
    row = inspector.inspect(tmp_path / "be.pt").tensors.set_index("name").loc["freqs_cis"]
    assert row["dtype"] == "complex64" and row["nan_count"] == 1
    assert row["max"] == 5.0 and row["min"] == 1.0
