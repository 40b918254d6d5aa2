"""GGUF files: header and metadata, shapes, kinds and axes, values equal to gguf-py's, bad input."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

from inspector import CorruptCheckpoint, InspectorError, UnsupportedSource, inspect
from inspector.analysis.diff import NoCommonNames
from inspector.cli import main
from inspector.loaders import open_source
from inspector.loaders.dequant import DECODED, TYPES
from inspector.loaders.gguf import kind_of, out_axis_of
from inspector.records import exact_chunks
from tests.helpers import assert_stats_match
from tests.gguf_files import blocks_tensor, gguf_file, gstr, kv_string, kv_u32, plain
from tests.test_gguf_dequant import random_blocks

gguf = pytest.importorskip("gguf")

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "fixtures" / "tiny_llama.gguf"


def reference_tensors(path: Path) -> dict[str, np.ndarray]:
    """name -> values in numpy order, read and dequantized by gguf-py."""
    reader = gguf.GGUFReader(str(path))
    out = {}
    plain_types = {gguf.GGMLQuantizationType[n] for n in ("F64", "I8", "I16", "I32", "I64")}
    for t in reader.tensors:
        values = t.data if t.tensor_type in plain_types else gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(values).reshape(tuple(int(d) for d in reversed(t.shape.tolist())))
    return out


def read_all(path: Path, chunk: int = 1 << 20) -> dict[str, tuple[object, np.ndarray]]:
    with open_source(str(path)) as src:
        return {r.name: (r, np.concatenate([c.copy() for c in r.chunks(chunk)]) if r.numel else np.empty(0)) for r in src.records()}


# --- the fixture: a tiny LLaMA written by gguf-py ----------------------------------------


def test_fixture_values_equal_gguf_py():
    ref = reference_tensors(FIXTURE)
    got = read_all(FIXTURE, chunk=1000)
    assert list(got) == list(ref)
    for name, (rec, values) in got.items():
        assert rec.shape == ref[name].shape, name
        want = ref[name].reshape(-1)
        assert values.dtype == rec.np_dtype == (np.float16 if rec.dtype == "float16" else np.float32), name
        assert np.array_equal(values.astype(np.float32).view(np.uint32), want.astype(np.float32).view(np.uint32))


def test_fixture_table_equals_the_reference():
    ins = inspect(FIXTURE, chunk_elems=1000)
    ref = reference_tensors(FIXTURE)
    rows = {r["name"]: r for r in ins.tensors.to_dict("records")}
    for name, values in ref.items():
        assert_stats_match(rows[name], values.astype(np.float32))
    t = ins.tensors.set_index("name")
    assert t.loc["blk.0.attn_q.weight", "dtype"] == "Q4_0"
    assert t.loc["blk.0.attn_v.weight", "dtype"] == "Q8_0"
    assert t.loc["blk.0.attn_output.weight", "dtype"] == "float16"
    assert t.loc["output_norm.weight", "dtype"] == "float32"
    assert t.loc["blk.0.ffn_down.weight", "shape"] == "64x128"  # numpy order: (out, in)
    assert t.loc["blk.0.attn_k.weight", "shape"] == "32x64"


def test_header_metadata_in_the_summary():
    ins = inspect(FIXTURE)
    s = ins.summary
    assert s["format"] == "gguf"
    assert s["metadata"]["general.architecture"] == "llama"
    assert s["metadata"]["llama.attention.head_count_kv"] == 2
    assert any("GGUF v3, architecture llama, alignment 32, quantization version 2" in n for n in s["notes"])
    assert s["gguf"] == {"version": 3, "architecture": "llama", "alignment": 32, "quantization_version": 2,
                         "file_type": 2}


def test_kinds_layers_and_axes():
    t = inspect(FIXTURE).tensors.set_index("name")
    assert t.loc["token_embd.weight", "kind"] == "weight" and pd_na(t.loc["token_embd.weight", "out_axis"])
    assert t.loc["blk.1.attn_q.weight", "layer"] == "blk.1.attn_q"
    assert t.loc["blk.1.attn_q.weight", "out_axis"] == 0
    assert t.loc["blk.0.attn_norm.weight", "kind"] == "norm"
    assert t.loc["output_norm.weight", "kind"] == "norm"
    assert t.loc["output.weight", "kind"] == "weight"
    assert kind_of("rope_freqs.weight", (32,)) == "buffer"
    assert kind_of("blk.0.attn_q.bias", (64,)) == "bias"
    assert kind_of("blk.0.ssm_a", (16, 64)) == "other"
    assert out_axis_of("blk.0.ffn_down_exps.weight", "weight", (8, 64, 128)) == 1
    assert out_axis_of("blk.0.ffn_gate_inp.weight", "weight", (8, 64)) == 0


def pd_na(x) -> bool:
    import pandas as pd

    return x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x))


def test_quantization_summary():
    ins = inspect(FIXTURE)
    q = ins.summary["quantization"]
    t = ins.tensors
    for name in ("Q4_0", "Q8_0", "float16", "float32"):
        assert ins.summary["dtypes"][name] == int(t.loc[t["dtype"] == name, "numel"].sum())
    assert q["quantized_dtypes"] == ["Q4_0", "Q8_0"]
    quant = t[t["dtype"].isin(["Q4_0", "Q8_0"])]
    assert q["quantized_numel"] == int(quant["numel"].sum())
    assert q["quantized_zero_frac"] == pytest.approx(quant["zero_count"].sum() / quant["numel"].sum())
    res = CliRunner().invoke(main, [str(FIXTURE)])
    assert res.exit_code == 0
    assert "quantization: " in res.stdout and "Q4_0" in res.stdout and "exactly zero" in res.stdout


# --- synthetic files: every kernel type, gguf-py's types, skipped types ----------------------


def write(tmp_path: Path, blob: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def test_every_decoded_type_through_the_loader(tmp_path):
    tensors = []
    for i, type_id in enumerate(sorted(DECODED)):
        t = TYPES[type_id]
        shape = (3, 2 * t.block)
        tensors.append(blocks_tensor(f"blk.{i}.ffn_up.weight", shape, type_id, random_blocks(type_id, 6, seed=i)))
    x = np.random.default_rng(0).standard_normal((4, 8))
    tensors += [plain("a.f64", x, 28), plain("a.bf16", x.astype(ml_dtypes.bfloat16), 30),
                plain("a.i8", (x * 10).astype(np.int8), 24), plain("a.i16", (x * 99).astype(np.int16), 25),
                plain("a.i32", (x * 99).astype(np.int32), 26), plain("a.i64", (x * 99).astype(np.int64), 27),
                plain("a.scalar", np.float32(-0.0).reshape(()), 0), plain("a.empty", np.zeros((0, 4), np.float32), 0)]
    path = write(tmp_path, gguf_file(tensors))
    ref = reference_tensors(path)
    for chunk in (7, 100, 1 << 20):
        got = read_all(path, chunk)
        for name, (rec, values) in got.items():
            assert rec.shape == ref[name].shape
            assert np.array_equal(values, ref[name].reshape(-1).astype(values.dtype)), (name, chunk)
    ins = inspect(path, chunk_elems=100)
    dtypes = dict(zip(ins.tensors["name"], ins.tensors["dtype"]))
    assert dtypes["blk.9.ffn_up.weight"] == TYPES[sorted(DECODED)[9]].name
    assert (dtypes["a.bf16"], dtypes["a.i8"], dtypes["a.f64"]) == ("bfloat16", "int8", "float64")
    for r in ins.tensors.to_dict("records"):
        assert_stats_match(r, ref[r["name"]])


def test_other_types_go_through_gguf_py_and_the_rest_are_skipped(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    iq2 = int(gguf.GGMLQuantizationType.IQ2_XXS)
    blocks = rng.integers(0, 256, size=(2, TYPES[iq2].size), dtype=np.uint8)
    blocks[:, :2] = np.array([0.01], np.float16).view(np.uint8)
    tensors = [blocks_tensor("blk.0.attn_q.weight", (2, 256), iq2, blocks),
               ("blk.0.attn_k.weight", (1, 32), 9, bytes(40)),  # Q8_1: nobody dequantizes it
               plain("output_norm.weight", np.ones(4, np.float32), 0)]
    path = write(tmp_path, gguf_file(tensors))
    ins = inspect(path, chunk_elems=100)
    assert list(ins.tensors["name"]) == ["blk.0.attn_q.weight", "output_norm.weight"]
    assert ins.tensors["dtype"][0] == "IQ2_XXS"
    want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.IQ2_XXS).reshape(-1)
    assert_stats_match(ins.tensors.to_dict("records")[0], want)
    assert any("1 tensor(s) of type Q8_1 skipped: neither winspect nor gguf-py" in n for n in ins.summary["notes"])
    monkeypatch.setitem(sys.modules, "gguf", None)  # gguf-py not installed
    from inspector.loaders import dequant

    dequant.gguf_decoder.cache_clear()
    dequant.lookup.cache_clear()
    try:
        ins = inspect(path)
    finally:
        dequant.gguf_decoder.cache_clear()
        dequant.lookup.cache_clear()
    assert list(ins.tensors["name"]) == ["output_norm.weight"]
    assert any("type IQ2_XXS skipped: winspect does not dequantize that type and gguf-py, which may, is not "
               "installed (pip install gguf)" in n for n in ins.summary["notes"])


@pytest.mark.parametrize("max_elems", [1, 5, 32, 33, 256, 1000])
def test_ranges_and_exact_chunks(tmp_path, max_elems):
    blocks = random_blocks(12, 4)
    path = write(tmp_path, gguf_file([blocks_tensor("w.weight", (2, 512), 12, blocks)]))
    want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K).reshape(-1)
    with open_source(str(path)) as src:
        rec = next(src.records())
        for start, stop in [(0, 1024), (1, 1023), (255, 257), (300, 300), (513, 1000)]:
            chunks = [c.copy() for c in rec.range_chunks(start, stop, max_elems)]
            assert all(c.size == max_elems for c in chunks[:-1])
            got = np.concatenate(chunks) if chunks else np.empty(0, np.float32)
            assert np.array_equal(got, want[start:stop])


def test_exact_chunks_recuts_segments():
    segs = [np.arange(0, 5), np.arange(5, 6), np.arange(6, 20)]
    out = [c.copy() for c in exact_chunks(iter(segs), 4, np.int64)]
    assert [len(c) for c in out] == [4, 4, 4, 4, 4]
    assert np.array_equal(np.concatenate(out), np.arange(20))


# --- bad input --------------------------------------------------------------------------


def good_tensors():
    return [plain("a.weight", np.ones((2, 32), np.float32), 0),
            blocks_tensor("b.weight", (2, 32), 8, random_blocks(8, 2))]


BAD = {
    "truncated data": (lambda: gguf_file(good_tensors())[:-40], "past the end of the file"),
    "offset past the end": (lambda: gguf_file(good_tensors(), offsets=[None, 1 << 40]), "past the end of the file"),
    "misaligned offset": (lambda: gguf_file(good_tensors(), offsets=[None, 4]), "not a multiple of the alignment"),
    "overflowing dims": (lambda: gguf_file(good_tensors(), dims=[[2**32, 2**32, 2**2, 1], None]), "overflows"),
    "too many dims": (lambda: gguf_file(good_tensors(), dims=[[32, 1, 1, 1, 2], None]), "dimensions"),
    "unknown type": (lambda: gguf_file(good_tensors(), types=[None, 999]), "not a ggml tensor type"),
    "partial block rows": (lambda: gguf_file(good_tensors(), dims=[None, [16, 4]]), "not whole 32-value blocks"),
    "absurd string": (lambda: gguf_file(good_tensors(), [("general.name", 8, struct.pack("<Q", 2**62))]),
                      "more than the file holds"),
    "absurd array": (lambda: gguf_file(good_tensors(), [("a.b", 9, struct.pack("<IQ", 8, 2**60))]),
                     "more than the file holds"),
    "absurd number array": (lambda: gguf_file(good_tensors(), [("a.b", 9, struct.pack("<IQ", 12, 2**61))]),
                            "more than the file holds"),
    "bad value type": (lambda: gguf_file(good_tensors(), [("a.b", 77, b"")]), "not a GGUF value type"),
    "absurd tensor count": (lambda: gguf_file(good_tensors(), tensor_count=2**62), "more than the file holds"),
    "absurd kv count": (lambda: gguf_file(good_tensors(), kv_count=2**50), "more than the file holds"),
    "bad alignment": (lambda: gguf_file(good_tensors(), [kv_u32("general.alignment", 24)]), "power of two"),
    "duplicate tensor": (lambda: gguf_file([*good_tensors(), good_tensors()[0]]), "appears twice"),
    "duplicate key": (lambda: gguf_file(good_tensors(), [kv_string("general.architecture", "x")]), "appears twice"),
    "unknown version": (lambda: gguf_file(good_tensors(), version=7), "unknown GGUF version 7"),
    "overlap": (lambda: gguf_file(good_tensors(), offsets=[0, 0]), "overlap"),
    "non-UTF-8 string": (lambda: gguf_file(good_tensors(), [("general.name", 8, gstr(b"\xff\xfe"))]), "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_error(tmp_path, case):
    make, message = BAD[case]
    path = write(tmp_path, make())
    with pytest.raises(CorruptCheckpoint) as info:
        inspect(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value), str(info.value)
    res = CliRunner().invoke(main, [str(path), "-q"])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ")


@pytest.mark.parametrize("version,message", [(1, "GGUF version 1"), (0x03000000, "big-endian GGUF")])
def test_versions_not_read(tmp_path, version, message):
    path = write(tmp_path, gguf_file(good_tensors(), version=version))
    with pytest.raises(UnsupportedSource, match=message):
        inspect(path)


def test_misnamed_and_unnamed_gguf_is_sniffed(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "weights.bin")
    assert inspect(tmp_path / "weights.bin").meta["format"] == "gguf"


def test_retired_type_is_skipped_with_a_note(tmp_path):
    tensors = [*good_tensors(), ("c.weight", (1, 32), 4, b"")]  # Q4_2, retired from ggml
    ins = inspect(write(tmp_path, gguf_file(tensors)))
    assert "c.weight" not in set(ins.tensors["name"])
    assert any("type Q4_2 skipped" in n for n in ins.summary["notes"])


def test_long_metadata_is_shortened_and_arrays_summarised(tmp_path):
    tokens = b"".join(gstr(f"tok{i}") for i in range(1000))
    meta = [kv_string("tokenizer.chat_template", "x" * 5000), kv_string("tokenizer.json", "é" * 70000),
            ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 1000) + tokens),
            ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 1000) + bytes(4000)),
            ("small", 9, struct.pack("<IQ", 4, 3) + struct.pack("<3I", 1, 2, 3))]
    ins = inspect(write(tmp_path, gguf_file(good_tensors(), meta)))
    m = ins.summary["metadata"]
    assert m["tokenizer.chat_template"].endswith("… (5000 characters)")
    assert m["tokenizer.json"] == "é" * 200 + "… (140000 bytes)"
    assert m["tokenizer.ggml.tokens"] == "[1000 × string]"
    assert m["tokenizer.ggml.scores"] == "[1000 × float32]"
    assert m["small"] == [1, 2, 3]


def test_errors_are_inspector_errors_for_every_cut(tmp_path):
    data = FIXTURE.read_bytes()
    for cut in range(0, 2000, 37):
        path = write(tmp_path, data[:cut] if cut else b"GGUF")
        with pytest.raises(InspectorError):
            inspect(path)


# --- diff across formats, and the other commands -------------------------------------------

SAFETENSORS = ROOT / "fixtures" / "tiny_llama.safetensors"


def test_diff_safetensors_to_gguf_matches_names_and_undoes_the_row_order():
    from safetensors.numpy import load_file

    from fixtures.make_gguf_fixture import HEADS, KV_HEADS, permute

    d = __import__("inspector").diff(SAFETENSORS, FIXTURE, chunk_elems=1000)
    assert d.summary["compared"] == 21 and not d.summary["only_in_a"] and not d.summary["only_in_b"]
    assert any("21 tensor names mapped to GGUF names" in n for n in d.summary["notes"])
    hf, ref = load_file(str(SAFETENSORS)), reference_tensors(FIXTURE)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    rows = d.tensors.set_index("name")
    for hf_name, a in hf.items():
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if "q_proj" in hf_name or "k_proj" in hf_name:
            a = permute(a, HEADS if "q_proj" in hf_name else KV_HEADS)
        a, b = a.astype(np.float64).reshape(-1), ref[name].astype(np.float64).reshape(-1)
        r = rows.loc[name]
        assert r["rel_change"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-9)
        assert r["sign_flips"] == int(((a < 0) & (b > 0)).sum() + ((a > 0) & (b < 0)).sum())
        assert r["became_zero"] == int(((a != 0) & (b == 0)).sum())
        assert r["became_neg"] == int(((a >= 0) & (b < 0)).sum())
    assert rows.loc["blk.0.attn_q.weight", "rel_change"] < 0.2  # the quantization error, not a row mix-up
    assert rows.loc["blk.0.attn_q.weight", "became_zero"] > 0
    assert d.summary["weight"]["became_zero"] == int(rows["became_zero"].sum())


def tiny_pair(tmp_path, metadata):
    from safetensors.numpy import save_file

    w = np.random.default_rng(5).standard_normal((8, 32)).astype(np.float32)
    save_file({"model.layers.0.self_attn.q_proj.weight": w, "model.norm.weight": np.ones(32, np.float32)},
              str(tmp_path / "a.safetensors"))
    tensors = [plain("blk.0.attn_q.weight", w, 0), plain("output_norm.weight", np.ones(32, np.float32), 0)]
    path = write(tmp_path, gguf_file(tensors, [kv_u32("llama.block_count", 1), *metadata]))
    return tmp_path / "a.safetensors", path


def test_diff_says_when_it_cannot_undo_the_row_order(tmp_path):
    a, b = tiny_pair(tmp_path, [])  # no head count
    d = __import__("inspector").diff(a, b)
    assert list(d.tensors["name"]) == ["output_norm.weight"]
    assert d.summary["only_in_a"] == ["model.layers.0.self_attn.q_proj.weight"]
    assert any("q_proj.weight: not compared: llama.cpp reorders its rows" in n for n in d.summary["notes"])
    a, b = tiny_pair(tmp_path, [kv_u32("llama.attention.head_count", 2)])
    d = __import__("inspector").diff(a, b)
    assert set(d.tensors["name"]) == {"output_norm.weight", "blk.0.attn_q.weight"}
    q = d.tensors.set_index("name").loc["blk.0.attn_q.weight"]
    assert q["rel_change"] > 0.1  # the same rows, read in the converter's order, differ from the original order


def test_diff_without_gguf_py_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    a, b = tiny_pair(tmp_path, [])
    with pytest.raises(NoCommonNames, match="gguf-py is not installed"):  # no name in common, and why
        __import__("inspector").diff(a, b)
    res = CliRunner().invoke(main, ["diff", str(a), str(b)])
    assert res.exit_code == 1 and "no tensor names in common" in res.output and "gguf-py is not installed" in res.output
    d = __import__("inspector").diff(a, b, match="position")
    assert any("gguf-py is not installed" in n for n in d.summary["notes"])


def test_gguf_to_gguf_diff_is_by_name(tmp_path):
    d = __import__("inspector").diff(FIXTURE, FIXTURE)
    assert d.summary["compared"] == 21 and d.summary["weight"]["rel_change"] == 0.0


def test_commands_on_gguf(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["audit", str(FIXTURE), "--fail-on", "nan,inf,unsafe"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, [str(FIXTURE), "-q", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert {"tensors.csv", "layers.csv", "summary.json", "report.html", "report.md"} <= {
        p.name for p in (tmp_path / "rep").iterdir()}
    assert "Q4_0" in (tmp_path / "rep" / "tensors.csv").read_text()
    for report in ("report.md", "report.html"):
        assert "of the quantized values are exactly zero" in (tmp_path / "rep" / report).read_text()
    shutil.copy(FIXTURE, tmp_path / "epoch1.gguf")
    shutil.copy(FIXTURE, tmp_path / "epoch2.gguf")
    res = runner.invoke(main, ["track", str(tmp_path / "epoch1.gguf"), str(tmp_path / "epoch2.gguf")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["compare", str(FIXTURE), str(SAFETENSORS)])
    assert res.exit_code == 0 and "tiny_llama.gguf" in res.stdout, res.output
    res = runner.invoke(main, ["diff", str(SAFETENSORS), str(FIXTURE)])
    assert res.exit_code == 0 and "became exactly zero" in res.stdout, res.output


def test_numpy_path_reads_the_same_values(tmp_path, monkeypatch):
    from inspector.loaders import dequant

    tensors = [blocks_tensor(f"blk.{i}.attn_v.weight", (2, 256), t, random_blocks(t, 2 * 256 // TYPES[t].block))
               for i, t in enumerate(sorted(DECODED))]
    path = write(tmp_path, gguf_file(tensors))
    compiled = read_all(path, 100)
    monkeypatch.setattr(dequant, "native", None)
    numpy_path = read_all(path, 100)
    for name, (_, values) in compiled.items():
        assert np.array_equal(values.view(np.uint32), numpy_path[name][1].view(np.uint32)), name


def test_version_2_is_read(tmp_path):
    path = write(tmp_path, gguf_file(good_tensors(), version=2))
    ins = inspect(path)
    assert list(ins.tensors["name"]) == ["a.weight", "b.weight"]
    assert any(n.startswith("GGUF v2,") for n in ins.summary["notes"])
