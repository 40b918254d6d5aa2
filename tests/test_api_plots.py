"""The Python API's figures are pyplot's; diff, track and compare results render like inspections;
names with markup or control characters draw without font warnings."""

from __future__ import annotations

import re
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

import inspector  # noqa: E402

HOSTILE = "$x^2$ <b>\x07bell\x1b[31m</b>"


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _files(tmp_path):
    rng = np.random.default_rng(0)
    a = {f"{HOSTILE}.{i}.weight": rng.normal(size=(8, 8)).astype(np.float32) for i in range(3)}
    a["fc.weight"] = rng.normal(size=(4, 8)).astype(np.float32)
    paths = []
    for e in (1, 2, 10):
        save_file({k: (v * e).astype(np.float32) for k, v in a.items()}, str(tmp_path / f"epoch{e}.safetensors"))
        paths.append(tmp_path / f"epoch{e}.safetensors")
    return paths


def test_inspection_plot_returns_pyplots_figures(tmp_path):
    paths = _files(tmp_path)
    ins = inspector.inspect(paths[0])
    (fig,) = ins.plot()
    assert isinstance(fig, Figure) and fig.number in plt.get_fignums()
    figs = ins.plot("all")
    assert all(f.number in plt.get_fignums() for f in figs) and len(figs) >= 4


def test_diff_track_compare_plot_report_and_notebook_html(tmp_path):
    paths = _files(tmp_path)
    results = [inspector.diff(paths[0], paths[1]), inspector.track([str(p) for p in paths]),
               inspector.compare([str(p) for p in paths[:2]])]
    for i, r in enumerate(results):
        figs = r.plot()
        assert figs and all(isinstance(f, Figure) and f.number in plt.get_fignums() for f in figs)
        html = r._repr_html_()
        assert "<table>" in html and "\x07" not in html and "<b>" not in html
        assert ("&lt;b&gt;\\x07bell" in html) == (i < 2)  # compare's table names models, not tensors
        report = r.to_report(tmp_path / f"r{i}")
        text = report.read_text()
        assert report.name == "report.html" and text.count("data:image/png;base64,") == len(figs)
        assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # nothing fetched
        assert "\x07" not in text and "<b>" not in text
    assert (tmp_path / "r0" / "diff.csv").is_file() and (tmp_path / "r1" / "track_steps.csv").is_file()


def test_track_figures_label_steps_with_checkpoint_names(tmp_path):
    paths = _files(tmp_path)
    figs = inspector.track([str(p) for p in paths]).plot()
    flips = figs[-1]
    labels = [t.get_text() for t in flips.axes[-1].get_xticklabels()]
    assert labels == ["1\nepoch1.safetensors", "2\nepoch2.safetensors", "10\nepoch10.safetensors"]


def test_names_with_markup_and_control_characters_draw_without_warnings(tmp_path):
    paths = _files(tmp_path)
    ins = inspector.inspect(paths[0])
    results = [inspector.diff(paths[0], paths[1]), inspector.track([str(p) for p in paths])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph or bad mathtext would raise here
        for fig in [*ins.plot("all"), *(f for r in results for f in r.figures())]:
            fig.canvas.draw()
    texts = [t.get_text() for f in ins.plot("all") for ax in f.axes for t in ax.get_yticklabels()]
    assert any("\\x07bell" in t for t in texts)
