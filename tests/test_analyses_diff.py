"""diff, track and compare on constructed checkpoints whose answers are known exactly."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import inspector
from inspector.analysis.diff import align_names
from inspector.analysis.track import ordered_sources
from inspector.cli import main


def base_weights(seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {
        "conv.weight": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(6).astype(np.float32),
        "fc.weight": rng.standard_normal((10, 54)).astype(np.float32),
        "fc.bias": rng.standard_normal(10).astype(np.float32),
    }
    for v in w.values():
        v[v == 0] = 0.5  # no zeros unless a test puts them there
    return w


def save_torch(path, tensors: dict[str, np.ndarray], prefix="", nest=None):
    import torch

    sd = {prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    torch.save({nest: sd, "epoch": 3} if nest else sd, path)
    return path


def change_oracle(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    x, y = a[ok], b[ok]
    return {
        "rel_change": np.linalg.norm(y - x) / np.linalg.norm(x),
        "cosine": x @ y / (np.linalg.norm(x) * np.linalg.norm(y)),
        "sign_flips": int(((x < 0) & (y > 0)).sum() + ((x > 0) & (y < 0)).sum()),
        "became_neg": int(((x >= 0) & (y < 0)).sum()),
        "became_pos": int(((x <= 0) & (y > 0)).sum()),
        "max_abs_change": np.abs(y - x).max(),
        "excluded_count": int((~ok).sum()),
    }


def flipped(a: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A copy of ``a`` with exactly k signs flipped (a has no zeros), scaled slightly elsewhere."""
    b = a * 1.1
    idx = np.random.default_rng(seed).choice(a.size, size=k, replace=False)
    b.reshape(-1)[idx] *= -1
    return b


# --- diff -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_known_number_of_flipped_signs(tmp_path, chunk):
    a = base_weights()
    b = {k: flipped(v, k=i + 3, seed=i) for i, (k, v) in enumerate(a.items())}
    # zeros: 0 -> negative is "became negative" but not a flip; negative -> 0 is neither
    a["fc.weight"][0, :2] = 0.0
    b["fc.weight"][0, :2] = [-1.0, 1.0]
    b["fc.weight"][1, 0] = 0.0
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    d = inspector.diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors", chunk_elems=chunk)
    t = d.tensors.set_index("name")
    for name in a:
        o = change_oracle(a[name], b[name])
        row = t.loc[name]
        for col in ("sign_flips", "became_neg", "became_pos", "excluded_count"):
            assert row[col] == o[col], (name, col)
        for col in ("rel_change", "cosine", "max_abs_change"):
            assert row[col] == pytest.approx(o[col], rel=1e-12), (name, col)
        assert row["sign_flip_frac"] == o["sign_flips"] / a[name].size
    assert t.loc["conv.weight", "sign_flips"] == 3
    assert t.loc["conv.bias", "sign_flips"] == 4
    assert t.loc["fc.weight", "became_neg"] >= 1 and t.loc["fc.weight", "became_pos"] >= 2
    assert d.summary["weight"]["sign_flips"] == t.loc[["conv.weight", "fc.weight"], "sign_flips"].sum()


def test_scaled_copy_changes_by_exactly_one_without_flips(tmp_path):
    a = base_weights()
    save_file(a, str(tmp_path / "a.safetensors"))
    save_torch(tmp_path / "b.pt", {k: 2 * v for k, v in a.items()}, prefix="module.", nest="state_dict")
    d = inspector.diff(str(tmp_path / "a.safetensors"), str(tmp_path / "b.pt"), chunk_elems=13)
    assert len(d.tensors) == 4
    assert (d.tensors["rel_change"] == 1.0).all()
    assert np.allclose(d.tensors["cosine"], 1.0, rtol=0, atol=1e-15)
    assert (d.tensors[["sign_flips", "became_neg", "became_pos"]] == 0).all().all()
    assert d.summary["weight"]["rel_change"] == pytest.approx(1.0, rel=1e-15)
    assert d.summary["only_in_a"] == d.summary["only_in_b"] == d.summary["shape_mismatches"] == []


def test_unmatched_names_and_shape_mismatches_are_listed(tmp_path):
    a = base_weights()
    b = {("model." + k): v.copy() for k, v in a.items()}
    b["model.fc.weight"] = np.ones((10, 5), np.float32)
    b["model.head.weight"] = np.ones((2, 2), np.float32)
    a["old.weight"] = np.ones(3, np.float32)
    save_file(a, str(tmp_path / "a.safetensors"))
    save_torch(tmp_path / "b.pth", b)
    d = inspector.diff(tmp_path / "a.safetensors", tmp_path / "b.pth")
    assert sorted(d.tensors["name"]) == ["conv.bias", "conv.weight", "fc.bias"]
    assert (d.tensors["rel_change"] == 0).all() and np.allclose(d.tensors["cosine"], 1.0)
    assert d.summary["only_in_a"] == ["old.weight"]
    assert d.summary["only_in_b"] == ["model.head.weight"]
    assert d.summary["shape_mismatches"] == [{"name": "fc.weight", "shape_a": "10x54", "shape_b": "10x5"}]
    assert any("'model.'" in n for n in d.summary["notes"])


def test_align_names_strips_a_prefix_only_when_it_helps():
    a, b, notes = align_names(["fc.weight", "fc.bias"], ["model.fc.weight", "model.fc.bias"])
    assert a == {"fc.weight": "fc.weight", "fc.bias": "fc.bias"}
    assert b == {"fc.weight": "model.fc.weight", "fc.bias": "model.fc.bias"}
    a, b, notes = align_names(["model.x.weight"], ["model.x.weight"])
    assert set(a) == set(b) == {"model.x.weight"} and notes == []
    a, b, _ = align_names(["_orig_mod.module.l.weight"], ["l.weight"])
    assert set(a) == set(b) == {"l.weight"}


def test_nan_and_inf_are_excluded_consistently(tmp_path):
    a = base_weights()
    b = {k: v * 3 for k, v in a.items()}
    a["fc.weight"][0, 0] = np.nan
    b["fc.weight"][1, 1] = np.inf
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    row = inspector.diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors", chunk_elems=5).tensors
    row = row.set_index("name").loc["fc.weight"]
    o = change_oracle(a["fc.weight"], b["fc.weight"])
    assert row["excluded_count"] == 2
    assert row["rel_change"] == pytest.approx(o["rel_change"], rel=1e-12)
    assert row["rel_change"] == pytest.approx(2.0, rel=1e-6)  # float32 rounding of 3 * a
    assert row["max_abs_change"] == pytest.approx(o["max_abs_change"], rel=1e-12)


def test_diff_exports(tmp_path):
    a = base_weights()
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file({k: -v for k, v in a.items()}, str(tmp_path / "b.safetensors"))
    d = inspector.diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert np.allclose(d.tensors["cosine"], -1.0)
    assert (d.tensors["sign_flip_frac"] == 1.0).all()
    d.to_csv(tmp_path / "d.csv")
    d.to_json(tmp_path / "d.json")
    assert list(pd.read_csv(tmp_path / "d.csv")["sign_flips"]) == list(d.tensors["sign_flips"])
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["summary"]["weight"]["sign_flips"] == a["conv.weight"].size + a["fc.weight"].size
    paths = d.save(tmp_path / "out")
    assert [p.name for p in paths] == ["diff.csv", "diff_change.png"] and all(p.stat().st_size for p in paths)


# --- track ----------------------------------------------------------------------------


def epoch_files(tmp_path, epochs=(1, 2, 10, 11)):
    """Checkpoint k: base weights with the first k values of fc.weight negated (k - previous flips)."""
    a = base_weights()
    paths = {}
    for e in epochs:
        w = {k: v.copy() for k, v in a.items()}
        w["fc.weight"].reshape(-1)[:e] *= -1
        w["conv.weight"] *= e
        paths[e] = save_torch(tmp_path / f"run_epoch{e}.pt", w)
    return a, paths


def test_natural_order_whatever_the_given_order(tmp_path):
    _, paths = epoch_files(tmp_path)
    given = [str(paths[e]) for e in (10, 2, 11, 1)]
    random.Random(0).shuffle(given)
    assert ordered_sources(given) == [str(paths[e]) for e in (1, 2, 10, 11)]
    assert ordered_sources([str(tmp_path / "run_epoch*.pt")]) == [str(paths[e]) for e in (1, 2, 10, 11)]
    assert ordered_sources(tmp_path / "run_epoch1*.pt") == [str(paths[e]) for e in (1, 10, 11)]  # one glob
    assert ordered_sources(["b/ep10.pt", "a/ep9.pt", "b/ep9.pt"]) == ["a/ep9.pt", "b/ep9.pt", "b/ep10.pt"]


def test_track_table_and_flips_between_consecutive_checkpoints(tmp_path):
    a, paths = epoch_files(tmp_path)
    given = [str(paths[e]) for e in (11, 1, 10, 2)]
    t = inspector.track(given, chunk_elems=16)
    assert t.checkpoints == [str(paths[e]) for e in (1, 2, 10, 11)]
    assert list(t.tensors.columns[:4]) == ["checkpoint", "step", "name", "layer"]
    assert len(t.tensors) == 16
    fc = t.tensors[t.tensors["name"] == "fc.weight"]
    assert list(fc["step"]) == [1, 2, 10, 11]  # the numbers in the names
    assert list(fc["checkpoint"]) == t.checkpoints
    assert pd.isna(fc["sign_flips"].iloc[0])
    assert list(fc["sign_flips"].iloc[1:]) == [1, 8, 1]  # 1->2, 2->10, 10->11 values negated
    base_neg = int((a["fc.weight"] < 0).sum())
    for e, (_, r) in zip((1, 2, 10, 11), fc.iterrows()):
        neg = np.sign(a["fc.weight"]).reshape(-1)
        neg[:e] *= -1
        assert r["neg_count"] == int((neg < 0).sum()), e
    conv = t.tensors[t.tensors["name"] == "conv.weight"]
    assert list(conv["rel_change"].iloc[1:]) == pytest.approx([1.0, 4.0, 0.1], rel=1e-6)
    assert (conv["sign_flips"].iloc[1:] == 0).all()
    assert list(t.steps["weight_sign_flips"].iloc[1:]) == [1, 8, 1]
    assert t.steps["weight_neg_frac"].iloc[0] == pytest.approx(
        ((a["conv.weight"] < 0).sum() + base_neg + (1 if a["fc.weight"].flat[0] > 0 else -1))
        / (a["conv.weight"].size + a["fc.weight"].size))
    paths_out = t.save(tmp_path / "out")
    assert {p.name for p in paths_out} == {
        "track.csv", "track_steps.csv", "track_trends_01.png", "track_sign_flips.png"}


# --- compare --------------------------------------------------------------------------


def test_compare_files_and_a_torchvision_name(tmp_path):
    a = base_weights()
    save_file(a, str(tmp_path / "a.safetensors"))
    save_torch(tmp_path / "b.pt", {k: np.abs(v) for k, v in a.items()})
    c = inspector.compare([str(tmp_path / "a.safetensors"), str(tmp_path / "b.pt"), "squeezenet1_1"], weights="none")
    t = c.table.set_index(["model", "kind"])
    w = np.concatenate([a["conv.weight"].ravel(), a["fc.weight"].ravel()]).astype(np.float64)
    row = t.loc[(str(tmp_path / "a.safetensors"), "weight")]
    assert row["numel"] == w.size and row["tensors"] == 2
    assert row["neg_frac"] == (w < 0).mean()
    assert row["abs_mean"] == pytest.approx(np.abs(w).mean(), rel=1e-12)
    assert row["std"] == pytest.approx(w.std(), rel=1e-9)
    assert t.loc[(str(tmp_path / "b.pt"), "weight"), "neg_frac"] == 0.0
    assert t.loc[("squeezenet1_1", "weight"), "numel"] > 700_000
    assert c.summary["models"]["squeezenet1_1"]["trained"] is False
    assert [p.name for p in c.save(tmp_path / "out")] == ["compare.csv", "compare.png"]


# --- CLI ------------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_diff(tmp_path):
    a = base_weights()
    save_file(a, str(tmp_path / "a.safetensors"))
    b = {k: flipped(v, 2, i) for i, (k, v) in enumerate(a.items()) if k != "fc.bias"}
    b["new.weight"] = np.ones((2, 2), np.float32)
    save_file(b, str(tmp_path / "b.safetensors"))
    r = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--csv", tmp_path / "d.csv",
            "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "only in A (1): fc.bias" in r.output and "only in B (1): new.weight" in r.output
    assert "weight sign flips: 4" in r.output
    assert list(pd.read_csv(tmp_path / "d.csv")["sign_flips"]) == [2, 2, 2]
    assert (tmp_path / "out" / "diff_change.png").is_file()
    r = run("diff", tmp_path / "a.safetensors", tmp_path / "missing.safetensors")
    assert r.exit_code == 1 and r.output.startswith("error: ") and "missing.safetensors" in r.output
    r = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--csv", tmp_path / "b.safetensors")
    assert r.exit_code == 1 and "refusing to overwrite" in r.output
    assert run("diff", tmp_path / "a.safetensors").exit_code == 2


def test_cli_track_and_compare(tmp_path):
    _, paths = epoch_files(tmp_path, (3, 20))
    r = run("track", tmp_path / "run_epoch*.pt", "--csv", tmp_path / "t.csv", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "2 checkpoints" in r.output
    steps = pd.read_csv(tmp_path / "t.csv").drop_duplicates("step")
    assert list(steps["checkpoint"]) == [str(paths[3]), str(paths[20])] and list(steps["step"]) == [3, 20]
    assert (tmp_path / "out" / "track_sign_flips.png").is_file()
    r = run("track", paths[20], paths[3], "--json", tmp_path / "t.json", "-q")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["checkpoints"] == [str(paths[3]), str(paths[20])]
    assert [s["weight_sign_flips"] for s in data["steps"]] == [None, 17]  # fc.weight values 3..19 negated
    (tmp_path / "afile").write_text("x")
    r = run("track", paths[3], "--out", tmp_path / "afile")
    assert r.exit_code == 2 and "afile" in r.output  # click refuses a file for --out
    with pytest.raises(inspector.OutputError, match="cannot create the output directory"):
        inspector.track([paths[3]]).save(tmp_path / "afile")
    r = run("track", tmp_path / "nothing*.pt")
    assert r.exit_code == 1 and "matches no file" in r.output
    r = run("compare", paths[3], "squeezenet1_1", "--weights", "none", "--csv", tmp_path / "c.csv", "-q")
    assert r.exit_code == 0 and r.output == ""
    assert set(pd.read_csv(tmp_path / "c.csv")["model"]) == {str(paths[3]), "squeezenet1_1"}
    r = run("compare", "resnet181")
    assert r.exit_code == 1 and "resnet18" in r.output
    assert run("compare").exit_code == 2


# --- torchvision names ------------------------------------------------------------------


def squeezenet_twice(tmp_path):
    """The state dict `--weights none` gives for squeezenet1_1 (seed 0), doubled, in a file."""
    import torch
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.squeezenet1_1().state_dict()
    return save_torch(tmp_path / "twice.pt", {k: 2 * v.numpy() for k, v in sd.items()})


def test_diff_and_track_with_a_torchvision_name(tmp_path):
    path = squeezenet_twice(tmp_path)
    d = inspector.diff("squeezenet1_1", path, weights="none")
    w = d.tensors[d.tensors["kind"] == "weight"]
    assert len(w) == 26 and (w["rel_change"] == 1.0).all() and (w["sign_flips"] == 0).all()
    assert d.summary["only_in_a"] == d.summary["only_in_b"] == []
    r = run("track", "squeezenet1_1", path, "--weights", "none", "--csv", tmp_path / "t.csv", "-q")
    assert r.exit_code == 0, r.output
    t = pd.read_csv(tmp_path / "t.csv")
    assert list(t.drop_duplicates("step")["checkpoint"]) == [str(path), "squeezenet1_1"]
    w1 = t[(t["step"] == 1) & (t["kind"] == "weight")]
    assert np.allclose(w1["rel_change"], 0.5, rtol=1e-12) and (w1["sign_flips"] == 0).all()


def test_diff_of_safetensors_imports_neither_torch_nor_matplotlib(tmp_path):
    a = base_weights()
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file({k: -v for k, v in a.items()}, str(tmp_path / "b.safetensors"))
    code = (
        "import sys, inspector\n"
        f"d = inspector.diff({str(tmp_path / 'a.safetensors')!r}, {str(tmp_path / 'b.safetensors')!r})\n"
        "assert d.summary['weight']['sign_flip_frac'] == 1.0\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_change_plots_leave_pyplot_and_the_backend_alone(tmp_path):
    a = {"fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4) - 5}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file({"fc.weight": -a["fc.weight"]}, str(tmp_path / "b.safetensors"))
    code = (
        "import sys, inspector; "
        f"inspector.diff({str(tmp_path / 'a.safetensors')!r}, {str(tmp_path / 'b.safetensors')!r})"
        f".save({str(tmp_path / 'out')!r}); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert (tmp_path / "out" / "diff_change.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
