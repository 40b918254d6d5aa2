"""Reports: plots, the self-contained HTML report, Markdown, the notebook view and ``--out DIR``."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import inspector
from inspector.table.findings import layer_outliers, robust_z
from inspector.api import Inspection, analyze_records
from inspector.cli import main
from inspector.kinds import infer_kinds
from inspector.records import TensorRecord, array_reader
from inspector.report import bundle
from inspector.report.outdir import MANIFEST, signature
from inspector.report import plots as P
from inspector.report.bundle import REPORT_FILES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"
CHROMIUM = Path("/usr/bin/chromium")


# --- models -------------------------------------------------------------------------

def small_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Three blocks (linear + bias + norm) and a head whose weights lean negative."""
    rng = np.random.default_rng(seed)
    t = {}
    for i in range(3):
        t[f"blocks.{i}.fc.weight"] = rng.normal(0, 0.1, (48, 32)).astype(np.float32)
        t[f"blocks.{i}.fc.bias"] = rng.normal(-0.02, 0.05, (48,)).astype(np.float32)
        t[f"blocks.{i}.ln.weight"] = rng.normal(1, 0.1, (48,)).astype(np.float32)
        t[f"blocks.{i}.ln.bias"] = rng.normal(0, 0.1, (48,)).astype(np.float32)
    t["head.weight"] = (rng.normal(0, 0.1, (10, 48)) - 0.05).astype(np.float32)
    return t


def big_arrays(blocks: int = 500) -> dict[str, np.ndarray]:
    """2000 small tensors: blocks.{i}.fc{1,2}.{weight,bias}."""
    rng = np.random.default_rng(1)
    t = {}
    for i in range(blocks):
        for j in (1, 2):
            t[f"blocks.{i}.fc{j}.weight"] = rng.normal(0, 0.1, (8, 8)).astype(np.float32)
            t[f"blocks.{i}.fc{j}.bias"] = rng.normal(0, 0.1, (8,)).astype(np.float32)
    return t


def save(tmp: Path, arrays: dict, name: str = "model.safetensors") -> Path:
    path = tmp / name
    save_file(arrays, str(path))
    return path


def inspection_of(arrays: dict, meta: dict | None = None, source: str = "test") -> Inspection:
    """An Inspection of in-memory arrays, through the real analyzer and tables."""
    kinds = infer_kinds([(n, a.shape) for n, a in arrays.items()])
    recs = [TensorRecord(n, kinds[n], a.dtype, a.shape, array_reader(a)) for n, a in arrays.items()]
    rows, hists = analyze_records(recs)
    return Inspection.from_rows(source, rows, {"format": "test", **(meta or {})}, hists)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(arrays, model path, report dir) of the small model, reported once for the module."""
    tmp = tmp_path_factory.mktemp("small")
    arrays = small_arrays()
    path = save(tmp, arrays)
    out = tmp / "report"
    inspector.inspect(path).to_report(out)
    return arrays, path, out


# --- parsing the reports back ---------------------------------------------------------

class _Cells(HTMLParser):
    """(data-v, text) of every cell, row by row, per table (keyed by its id or class); all <img> srcs."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self.imgs, self.table, self.cell = {}, [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = self.tables.setdefault(a.get("id") or a.get("class"), [])
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th") and self.table is not None:
            self.cell = [a.get("data-v"), ""]
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.table[-1].append(tuple(self.cell))
            self.cell = None
        elif tag == "table":
            self.table = None

    @property
    def rows(self):
        return self.tables.get("layers", [])


def parse_html(text: str) -> _Cells:
    p = _Cells()
    p.feed(text)
    return p


def read_layers(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "layers.csv", keep_default_na=False,
                       na_values=[""]).assign(layer=lambda d: d["layer"].fillna(""))


def shown_equals(text: str, value) -> bool:
    """Does a displayed string ("48.7%", "0.08015", "2,112", "—") show this value?"""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return text == "—"
    if text.endswith("%"):
        return abs(float(text[:-1]) / 100 - value) <= 0.0005 + 1e-12
    if "," in text or re.fullmatch(r"-?\d+", text):
        return int(text.replace(",", "")) == value
    return math.isclose(float(text), value, rel_tol=5e-4, abs_tol=1e-300)


NUMERIC = ["tensors", "numel", "weight_numel", "weight_neg_frac", "neg_frac", "zero_frac",
           "weight_abs_mean", "weight_std", "weight_l2_norm", "nan_count", "inf_count"]


def md_cells(line: str) -> list[str]:
    """Cells of a Markdown table row, split on unescaped pipes and unescaped."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [re.sub(r"\\(.)", r"\1", p.strip()).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            for p in parts]


def md_table(md: str, start: str, end: str) -> list[list[str]]:
    """Body rows of the Markdown table between two headings."""
    lines = md.split(start, 1)[1].split(end, 1)[0].splitlines()
    rows = [md_cells(x) for x in lines if x.startswith("|")]
    return rows[2:]  # header and alignment rows


def md_layer_rows(md: str) -> list[list[str]]:
    return md_table(md, "## Layers", "## Findings")


# --- the report set -------------------------------------------------------------------

def test_files_exist_and_are_not_empty(small):
    _, _, out = small
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    pngs = sorted(out.glob("*.png"))
    assert {p.stem.rsplit("-", 1)[0] if p.stem[-1].isdigit() else p.stem for p in pngs} == {
        "weight-distribution", "negative-fraction", "magnitudes", "histograms"}
    for p in pngs:
        assert p.read_bytes().startswith(PNG_MAGIC), p


def test_headline_matches_numpy(small):
    arrays, _, out = small
    w = np.concatenate([a.ravel() for n, a in arrays.items() if n.endswith("fc.weight") or n == "head.weight"])
    expect = f"{100 * np.count_nonzero(w < 0) / w.size:.1f}%"
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert f'<span class="neg">{expect}</span> of the {w.size:,} weight parameters are negative' in html
    assert f"**{expect} of the {w.size:,} weight parameters are negative**" in md


def test_html_layer_table_equals_csv(small):
    _, _, out = small
    layers = read_layers(out)
    rows = parse_html((out / "report.html").read_text()).rows
    header = [t for _, t in rows[0]]
    assert header[:2] == ["#", "layer"]
    body = rows[1:]
    assert len(body) == len(layers) > 0
    cols = ["layer"] + NUMERIC
    for (i, r), cells in zip(layers.iterrows(), body):
        assert cells[0] == (str(i), str(i))
        for c, (raw, shown) in zip(cols, cells[1:]):
            v = r[c]
            if c == "layer":
                assert raw == shown == (v or "(top level)")
                continue
            if isinstance(v, float) and math.isnan(v):
                assert raw == "nan" and shown == "—"
            else:
                assert float(raw) == v, (c, raw, v)  # the exact value, for sorting
                assert shown_equals(shown, v), (c, shown, v)


def test_markdown_layer_table_equals_csv(small):
    _, _, out = small
    layers = read_layers(out)
    rows = md_layer_rows((out / "report.md").read_text())
    assert len(rows) == len(layers) > 0
    for (i, r), cells in zip(layers.iterrows(), rows):
        assert cells[0] == str(i) and cells[1] == (r["layer"] or "(top level)")
        for c, shown in zip(NUMERIC, cells[2:]):
            assert shown_equals(shown, r[c]), (c, shown, r[c])


def test_kind_table_and_extreme_layers_equal_summary(small):
    import json

    _, _, out = small
    s = json.loads((out / "summary.json").read_text())
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    html_rows = [[t for _, t in r] for r in parse_html(html).tables["kinds"][1:]]
    md_rows = md_table(md, "## By kind", "**Most")
    keys = ["tensors", "numel", "neg_frac", "zero_frac", "pos_frac", "abs_mean", "std"]
    for rows in (html_rows, md_rows):
        assert [r[0] for r in rows] == list(s["by_kind"])
        for r in rows:
            for key, shown in zip(keys, r[1:]):
                assert shown_equals(shown, s["by_kind"][r[0]][key]), (r[0], key, shown)
    for x in s["most_negative_layers"] + s["least_negative_layers"]:
        shown = f"{x['layer']} {100 * x['weight_neg_frac']:.1f}%"
        assert shown in md
        assert f"<code>{x['layer']}</code> {100 * x['weight_neg_frac']:.1f}%" in html


def test_markdown_references_plots_by_relative_path(small):
    _, _, out = small
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text())
    assert refs and sorted(refs) == sorted(p.name for p in out.glob("*.png"))


def test_every_image_is_an_embedded_png(small):
    _, _, out = small
    from PIL import Image

    srcs = parse_html((out / "report.html").read_text()).imgs
    assert len(srcs) == len(list(out.glob("*.png")))
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_MAGIC)
        Image.open(io.BytesIO(data)).verify()


def test_no_external_references(small):
    _, _, out = small
    html = (out / "report.html").read_text()
    stripped = re.sub(r'data:image/png;base64,[A-Za-z0-9+/=]+', "", html)
    for bad in ("http:", "https:", "//", "<link", "@import", "url(", "file:"):
        assert bad not in stripped, bad
    assert re.findall(r'\ssrc="([^"]*)"', stripped) == [""] * stripped.count(' src="')
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', stripped))
    assert stripped.count("<script") == 1  # the inline table-sorting script, nothing loaded


def test_hostile_names_are_escaped(tmp_path):
    arrays = small_arrays()
    arrays[f"{HOSTILE}.weight"] = np.full((16, 16), -1.0, np.float32)
    arrays["a|b`c`*d*_e_[f](g).weight"] = np.ones((16, 16), np.float32)
    arrays["$x^2$.weight"] = np.ones((16, 16), np.float32)
    out = tmp_path / "r"
    inspection_of(arrays, source=f"{HOSTILE}.safetensors").to_report(out)
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert HOSTILE not in html and "<script>alert" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # title, heading, table...
    assert HOSTILE not in md and "<script" not in md
    rows = md_layer_rows(md)
    width = len(rows[0])
    assert all(len(r) == width for r in rows)  # no name broke a row into more cells
    names = {r[1] for r in rows}
    assert {HOSTILE, "a|b`c`*d*_e_[f](g)", "$x^2$"} <= names
    cells = {raw for row in parse_html(html).rows[1:] for raw, _ in row[1:2]}
    assert {HOSTILE, "a|b`c`*d*_e_[f](g)", "$x^2$"} <= cells


def test_model_without_weights(tmp_path):
    arrays = {"ln.weight": np.ones(8, np.float32), "ln.bias": np.zeros(8, np.float32)}
    insp = inspection_of(arrays)
    out = tmp_path / "r"
    insp.to_report(out)
    assert "no weight-kind tensors" in (out / "report.html").read_text()
    assert "no weight-kind tensors" in (out / "report.md").read_text()
    assert insp.plot() == [] and len(insp.plot("negative")) == 1
    assert sorted(p.name for p in out.glob("*.png")) == ["negative-fraction.png"]


def test_untrained_models_say_so(tmp_path):
    insp = inspection_of(small_arrays(), meta={"trained": False})
    out = tmp_path / "r"
    insp.to_report(out)
    assert '<p class="untrained">UNTRAINED' in (out / "report.html").read_text()
    assert "> **UNTRAINED" in (out / "report.md").read_text()
    assert "UNTRAINED" in insp._repr_html_()
    assert "UNTRAINED" not in inspection_of(small_arrays())._repr_html_()


def test_findings_are_listed(tmp_path):
    arrays = small_arrays()
    arrays["blocks.1.fc.bias"] = np.array([0.0, np.nan, np.inf, 1.0] * 12, np.float32)
    arrays["blocks.2.fc.bias"] = np.zeros(48, np.float32)
    out = tmp_path / "r"
    inspection_of(arrays).to_report(out)
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in ("12 NaN values", "12 infinite values", "every value is zero"):
        assert text in html and text in md


# --- big models stay legible ------------------------------------------------------------

def test_block_of():
    assert P.block_of("layer1.0.conv1") == "layer1.0"
    assert P.block_of("encoder/layers/7/attn/q") == "encoder/layers/7"
    assert P.block_of("blocks.12") == "blocks.12"
    assert P.block_of("w0001.x") == "w0001.x"  # no numeric component: itself
    assert P.block_of("") == ""


def test_group_layers_keeps_order_and_cap():
    units = [f"blocks.{i}.fc{j}" for i in range(100) for j in (1, 2)]
    assert P.group_layers(units[:10], 10) == {u: u for u in units[:10]}
    by_block = P.group_layers(units, 100)
    assert by_block["blocks.7.fc1"] == by_block["blocks.7.fc2"] == "blocks.7"
    runs = P.group_layers(units, 30)
    labels = list(dict.fromkeys(runs[u] for u in units))
    assert len(labels) <= 30 and labels[0] == "blocks.0 … blocks.3"
    flat = [f"w{i:04d}" for i in range(2000)]
    groups = list(dict.fromkeys(P.group_layers(flat, 144).values()))
    assert len(groups) <= 144 and groups[0] == "w0000 … w0013"


def test_rebin_conserves_counts_and_signs():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 10_000)
    a = np.abs(x).max()
    edges = np.linspace(-a, a, 65)
    counts = np.histogram(x, edges)[0]
    wide = np.linspace(-2 * a, 2 * a, 257)  # every source bin is two target bins
    moved = P.rebin(edges, counts, wide)
    assert moved.sum() == pytest.approx(x.size)
    assert moved[:128].sum() == pytest.approx(np.count_nonzero(x < 0))
    assert np.allclose(moved[64:192:2] + moved[65:192:2], counts)
    assert np.allclose(moved[64:192:2], counts / 2)  # spread evenly inside a bin
    coarse = np.linspace(-a, a, 9)  # every target edge is a source edge: exact
    assert np.allclose(P.rebin(edges, counts, coarse), np.histogram(x, coarse)[0])


def test_model_distribution_keeps_the_negative_share():
    insp = inspection_of(small_arrays())
    edges, counts, beyond = P.model_distribution(insp.tensors, insp.histograms)
    half = len(counts) // 2
    neg, total = counts[:half].sum(), counts.sum()
    w = insp.tensors[insp.tensors["kind"] == "weight"]
    assert total == pytest.approx(w["numel"].sum() * (1 - beyond))
    assert beyond < 0.01
    assert neg / total == pytest.approx(w["neg_count"].sum() / w["numel"].sum(), abs=2e-3)


def test_model_distribution_range_ignores_an_outlier():
    rng = np.random.default_rng(4)
    arrays = {f"l{i}.weight": rng.normal(0, 0.02, (128, 128)).astype(np.float32) for i in range(4)}
    arrays["l2.weight"][0, 0] = 50.0  # its 64 bins are 1.56 wide: the bulk sits in two of them
    insp = inspection_of(arrays)
    edges, counts, beyond = P.model_distribution(insp.tensors, insp.histograms)
    x = np.concatenate([a.ravel() for a in arrays.values()])
    assert edges[-1] == pytest.approx(1.5 * np.percentile(np.abs(x), 98), rel=0.15)  # ~1.5 x p99 reach
    inside = np.histogram(x, edges)[0]
    assert beyond < 0.01
    # the outlying tensor's bulk is placed by its percentiles, not smeared over +-1.56
    assert np.abs(counts - inside).sum() / x.size < 0.08


def test_many_tensor_model_is_split_across_figures(tmp_path, monkeypatch):
    """More tensors than the figures hold: split across figures, then pooled, within the caps. The
    figures are made small (as a 2000-tensor model fills the real ones), so the test stays quick."""
    monkeypatch.setattr(P, "BARS_PER_FIG", 12)
    monkeypatch.setattr(P, "MULTIPLES_PER_FIG", 6)
    # what is counted here is figures and files, not pixels (other tests render the images)
    monkeypatch.setattr(bundle, "_render", lambda fig, fmt: b"\x89PNG")
    arrays = big_arrays(blocks=100)
    assert len(arrays) == 400
    insp = inspector.inspect(save(tmp_path, arrays))
    neg = P.negative_entries(insp.tensors)
    assert neg["members"].sum() == 400 and len(neg) <= P.BARS_PER_FIG * P.MAX_FIGS["negative"]
    w = insp.tensors[insp.tensors["kind"] == "weight"]
    pooled = (neg["neg_frac"] * neg["numel"])[neg["kind"] == "weight"].sum()
    assert pooled == pytest.approx(w["neg_count"].sum())
    figs = insp.plot("negative")
    assert 1 < len(figs) <= P.MAX_FIGS["negative"]
    for fig in figs:
        assert len(fig.axes[0].patches) <= P.BARS_PER_FIG
    hists = insp.plot("histograms")
    assert 1 < len(hists) <= P.MAX_FIGS["histograms"]
    assert all(sum(ax.axison for ax in f.axes) <= P.MULTIPLES_PER_FIG for f in hists)
    out = tmp_path / "r"
    insp.to_report(out)
    assert len(list(out.glob("negative-fraction-*.png"))) == len(figs)
    assert len(list(out.glob("histograms-*.png"))) == len(hists)
    assert 1 < len(list(out.glob("magnitudes-*.png"))) <= P.MAX_FIGS["magnitude"]
    view = insp._repr_html_()
    assert len(parse_html(view).rows) == 21 and "20 of 200 layers shown" in view


# --- Python API ---------------------------------------------------------------------------

def test_plot_api(small):
    from matplotlib.figure import Figure

    _, path, _ = small
    insp = inspector.inspect(path)
    one = insp.plot()
    assert len(one) == 1 and isinstance(one[0], Figure)
    assert len(insp.plot("all")) == 4
    with pytest.raises(ValueError, match="unknown plot 'pie'"):
        insp.plot("pie")


def test_matplotlib_only_when_plotting(small):
    _, path, _ = small
    code = (
        "import sys, tempfile, inspector; i = inspector.inspect(sys.argv[1]); i._repr_html_(); "
        "assert 'matplotlib' not in sys.modules; i.to_report(tempfile.mkdtemp()); "
        "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules; "
        "figs = i.plot('all'); import matplotlib.pyplot as plt; "  # the API's figures are pyplot's
        "assert [f.number for f in figs] == plt.get_fignums()"
    )
    env = {"PYTHONPATH": str(Path(inspector.__file__).parents[1]), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env)


def test_repr_html_shows_summary_and_compact_table(small):
    _, path, _ = small
    insp = inspector.inspect(path)
    view = insp._repr_html_()
    assert f"{100 * insp.summary['weight_neg_frac']:.1f}%" in view
    assert "<img" not in view and "<script" not in view
    assert len(parse_html(view).rows) == len(insp.layers) + 1


def test_svg_plots(tmp_path):
    out = tmp_path / "r"
    inspection_of(small_arrays()).to_report(out, svg=True)
    svgs = sorted(out.glob("*.svg"))
    assert [p.stem for p in svgs] == sorted(p.stem for p in out.glob("*.png"))
    assert all(b"<svg" in p.read_bytes() for p in svgs)


# --- outlier findings ------------------------------------------------------------------------

def test_robust_z_matches_formula():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    med, mad = 3.0, 1.0
    assert np.allclose(robust_z(x), 0.6745 * (x - med) / mad)
    flat = np.array([5.0, 5.0, 5.0, 5.0, 9.0])
    assert np.allclose(robust_z(flat), (flat - 5.0) / (1.2533 * np.abs(flat - 5.0).mean()))


def test_layer_outliers_flags_far_layers_only():
    rng = np.random.default_rng(3)
    arrays = {f"l{i}.weight": rng.normal(0, 0.1, (64, 64)).astype(np.float32) for i in range(8)}
    arrays["l3.weight"] = np.abs(arrays["l3.weight"]) * np.where(rng.random((64, 64)) < 0.9, -1, 1)
    arrays["l5.weight"] = arrays["l5.weight"] * 100
    arrays["tiny.weight"] = np.array([[-0.1, -0.1], [-0.1, 0.1]], np.float32)  # 75% negative, 4 values
    insp = inspection_of(arrays)
    found = {(f.subject, f.data["statistic"]) for f in layer_outliers(insp.tables.layers, insp.tables.tensors)}
    assert found == {("l3", "negative fraction"), ("l5", "weight magnitude")}
    assert {f.subject for f in insp.summary["findings"] if f.type == "outlier"} == {"l3", "l5"}
    plain = inspection_of({k: v for k, v in arrays.items() if k not in ("l3.weight", "l5.weight")})
    assert layer_outliers(plain.tables.layers, plain.tables.tensors) == []


def test_layer_outliers_compare_weights_of_one_rank():
    rng = np.random.default_rng(4)
    arrays = {f"fc{i}.weight": rng.normal(0, 0.1, (32, 32)).astype(np.float32) for i in range(7)}
    arrays["conv.weight"] = rng.normal(0, 10, (4, 4, 3, 3)).astype(np.float32)  # far off, but alone of its rank
    arrays["step"] = np.array(3.0, np.float32)
    insp = inspection_of(arrays)
    assert list(insp.tensors["ndim"]) == [a.ndim for a in arrays.values()]
    assert layer_outliers(insp.tables.layers, insp.tables.tensors) == []
    arrays["fc6.weight"] = arrays["fc6.weight"] * 100  # far off among the 2-d weights
    found = layer_outliers(inspection_of(arrays).tables.layers, inspection_of(arrays).tables.tensors)
    assert [(f.subject, f.data["statistic"]) for f in found] == [("fc6", "weight magnitude")]


# --- the command line -------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_out_creates_replaces_and_leaves_foreign_files(tmp_path):
    a = save(tmp_path, small_arrays(0), "a.safetensors")
    b = save(tmp_path, small_arrays(1), "b.safetensors")
    out = tmp_path / "deep" / "report"
    r = run(a, "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert all((out / f).exists() for f in REPORT_FILES)
    (out / "notes.txt").write_text("mine")
    (out / "histograms-9.png").write_bytes(PNG_MAGIC)  # a page an earlier run wrote: its manifest says so
    (out / "histograms-8.png").write_bytes(PNG_MAGIC)  # named like a page, but no run wrote it
    listed = json.loads((out / MANIFEST).read_text())
    listed["files"]["histograms-9.png"] = signature(out / "histograms-9.png")
    (out / MANIFEST).write_text(json.dumps(listed))
    before = (out / "summary.json").read_text()
    r = run(b, "--out", out)
    assert r.exit_code == 0, r.output
    assert f"report: {out / 'report.html'}" in r.output
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "histograms-9.png").exists()
    assert (out / "histograms-8.png").read_bytes() == PNG_MAGIC
    assert "histograms-9.png" not in json.loads((out / MANIFEST).read_text())["files"]
    after = (out / "summary.json").read_text()
    assert after != before and "b.safetensors" in after
    assert not list(out.glob(".*.tmp"))


def test_out_errors(tmp_path):
    model = save(tmp_path, small_arrays())
    assert run(model, "--svg").exit_code == 2
    assert run(model, "--out", model).exit_code == 2  # a file, not a directory
    d = tmp_path / "hf"
    d.mkdir()
    shutil.copy(model, d / "model.safetensors")
    r = run(d, "--out", d, "-q")
    assert r.exit_code == 1 and "is an input of this command" in r.output


# --- in a real browser -------------------------------------------------------------------------

@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)")
def test_report_renders_in_headless_chromium(small, tmp_path):
    import matplotlib.image as mpimg

    _, _, out = small
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
           (out / "report.html").as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1280)
    non_white = np.any(img < 0.9, axis=-1).mean()
    assert non_white > 0.05
    neg = np.array([int(P.NEG_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    red = np.all(np.abs(img - neg) < 0.08, axis=-1).sum()
    assert red > 5000  # the embedded plots are drawn, their negative side visible


def test_small_multiples_keep_the_bulk_of_a_tensor_with_outliers():
    rng = np.random.default_rng(6)
    arrays = {"a.weight": rng.normal(0, 0.02, (128, 128)).astype(np.float32),
              "b.weight": rng.normal(0, 0.02, (128, 128)).astype(np.float32)}
    arrays["a.weight"][3, 3] = 5.0
    insp = inspection_of(arrays)
    entries = {e["label"]: e for e in P.histogram_entries(insp.tensors, insp.histograms)}
    a, b = entries["a.weight"], entries["b.weight"]
    assert a["edges"][-1] < 0.25 and a["outliers_to"] == pytest.approx(5.0)
    assert b["outliers_to"] is None
    assert (a["counts"] > 0).sum() > 20  # a shape, not a spike in the two bins beside zero
    xs, cum = P.tensor_cdf(next(insp.tensors[insp.tensors["name"] == "a.weight"].itertuples()),
                           *insp.histograms["a.weight"])
    assert xs[-1] == pytest.approx(5.0) and cum[-1] == 128 * 128  # the outer bin reaches out to the max
    figs = P.histogram_figures(insp.tensors, insp.histograms)
    texts = [t.get_text() for ax in figs[0].axes for t in ax.texts]
    assert any("out to ±5" in t for t in texts)
