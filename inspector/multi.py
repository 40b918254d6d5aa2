"""The Python API over several sources: ``diff(a, b)``, ``track(sources)``, ``compare(sources)``.

Each returns a result with DataFrames, a ``summary`` dict and the same export methods as
:class:`~inspector.api.Inspection` (``to_csv``, ``to_json``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .analysis.diff import CHANGE_COLUMNS, NoCommonNames, diff_frame, diff_records, diff_summary, pooled_change
from .analysis.stats import CHUNK_ELEMS
from .analysis.track import change_factory, checkpoint_steps, ordered_sources, source_list
from .api import inspect
from .loaders import LoadOptions, open_source
from .report import change_plots
from .report.bundle import report_dir
from .report.export import write_csv, write_json, write_text
from .report.views import num, pct
from .table.layers import layer_frame
from .table.rows import ProgressFn, analyze_records
from .table.schema import TENSOR_COLUMNS, tensor_frame
from .table.summary import summarize

TRACK_COLUMNS = ["checkpoint", "step", *TENSOR_COLUMNS, "rel_change", "cosine", "sign_flips", "sign_flip_frac",
                 "became_neg", "became_pos", "tied_to"]
STEP_COLUMNS = ["step", "checkpoint", "tensors", "numel", "weight_neg_frac", "weight_std", "weight_l2_norm",
                "weight_rel_change", "weight_sign_flips", "weight_sign_flip_frac", "weight_became_neg",
                "weight_became_pos"]
COMPARE_COLUMNS = ["model", "kind", "tensors", "numel", "neg_frac", "zero_frac", "pos_frac", "abs_mean", "std"]


class _Result:
    """Common export methods: the main table as CSV, everything as JSON."""

    table_attr = "tensors"

    def to_csv(self, path) -> Path:
        return write_csv(getattr(self, self.table_attr), path)

    def to_json(self, path) -> Path:
        return write_json(self._payload(), path)

    def _payload(self) -> dict:  # pragma: no cover - every result defines it
        raise NotImplementedError

    def figures(self) -> list:  # pragma: no cover - every result defines it
        """The result's matplotlib figures, on their own Agg canvases."""
        raise NotImplementedError

    def summary_lines(self) -> list[str]:  # pragma: no cover - every result defines it
        raise NotImplementedError

    def title(self) -> str:  # pragma: no cover - every result defines it
        raise NotImplementedError

    def plot(self) -> list:
        """A list of matplotlib Figures, known to pyplot (``plt.show()`` and notebooks display them):
        diff and compare one, track one per page of trends, then the sign flips."""
        from .report.plots import with_pyplot

        return with_pyplot(self.figures())

    def to_report(self, directory) -> Path:
        """What ``save`` writes, and ``report.html``: one self-contained file (figures embedded, no
        network) with the summary, the plots and the table. Returns the path of report.html."""
        from .report.bundle import render_png
        from .report.change_html import change_report_html

        d = report_dir(directory, "report")
        self.save(d)
        images = [(f"figure {i + 1}", render_png(fig)) for i, fig in enumerate(self.figures())]
        html = change_report_html(self.title(), self.summary_lines(), getattr(self, self.table_attr), images)
        return write_text(html, d / "report.html")

    def _repr_html_(self) -> str:
        from .report.change_html import change_notebook_html

        return change_notebook_html(self.title(), self.summary_lines(), getattr(self, self.table_attr))


class DiffResult(_Result):
    """``tensors``: one row per matched tensor (``DIFF_COLUMNS``); ``summary``: pooled figures,
    the most changed tensors, unmatched names and shape mismatches."""

    def __init__(self, a: str, b: str, tensors: pd.DataFrame, summary: dict):
        self.a, self.b, self.tensors, self.summary = a, b, tensors, summary

    def _payload(self) -> dict:
        return {"a": self.a, "b": self.b, "summary": self.summary, "tensors": self.tensors}

    def save(self, directory) -> list[Path]:
        """diff.csv and diff_change.png in ``directory``."""
        d = report_dir(directory, "output")
        return [self.to_csv(d / "diff.csv"), change_plots.diff_plot(self.tensors, d)]

    def figures(self) -> list:
        return [change_plots.diff_figure(self.tensors)]

    def title(self) -> str:
        return f"diff {self.a} → {self.b}"

    def summary_lines(self) -> list[str]:
        s, w = self.summary, self.summary["weight"]
        return [f"{s['compared']} tensors compared (matched by {s.get('match', 'name')}); weights: "
                f"||B−A||/||A|| = {num(w['rel_change'])}, cosine {num(w['cosine'])}",
                f"weight sign flips: {w['sign_flips']:,} ({pct(w['sign_flip_frac'])}); negative fraction "
                f"{pct(w['neg_frac_a'])} → {pct(w['neg_frac_b'])}",
                f"only in A: {len(s['only_in_a'])}, only in B: {len(s['only_in_b'])}, "
                f"shape mismatches: {len(s['shape_mismatches'])}", *(f"note: {n}" for n in s["notes"])]

    def __repr__(self) -> str:
        w = self.summary["weight"]
        return (f"<DiffResult {self.a} -> {self.b}: {self.summary['compared']} tensors, weight rel_change "
                f"{w['rel_change']:.4g}, {w['sign_flips']:,} weight sign flips>")


class TrackResult(_Result):
    """``tensors``: the long table (``checkpoint``, ``step``, core columns, change from the previous step);
    ``steps``: one row per checkpoint; ``summary``."""

    def __init__(self, checkpoints: list[str], tensors: pd.DataFrame, steps: pd.DataFrame, summary: dict):
        self.checkpoints, self.tensors, self.steps, self.summary = checkpoints, tensors, steps, summary

    def to_steps_csv(self, path) -> Path:
        return write_csv(self.steps, path)

    def _payload(self) -> dict:
        return {"checkpoints": self.checkpoints, "summary": self.summary, "steps": self.steps, "tensors": self.tensors}

    def save(self, directory) -> list[Path]:
        """track.csv, track_steps.csv, trend pages and the sign-flip plot in ``directory``."""
        d = report_dir(directory, "output")
        paths = [self.to_csv(d / "track.csv"), self.to_steps_csv(d / "track_steps.csv")]
        return paths + change_plots.track_plots(self.tensors, self.steps, d)

    def figures(self) -> list:
        return change_plots.track_figures(self.tensors, self.steps)

    def title(self) -> str:
        n = len(self.checkpoints)
        return f"track, {n} checkpoint{'' if n == 1 else 's'}"

    def summary_lines(self) -> list[str]:
        how = self.summary.get("step_source", "position")
        return [f"steps from: {how}", *(f"note: {n}" for n in self.summary["notes"])]

    def __repr__(self) -> str:
        return f"<TrackResult {len(self.checkpoints)} checkpoints, {len(self.tensors)} rows>"


class CompareResult(_Result):
    """``table``: one row per model and kind (``COMPARE_COLUMNS``); ``summary``: per model headline figures."""

    table_attr = "table"

    def __init__(self, sources: list[str], table: pd.DataFrame, summary: dict):
        self.sources, self.table, self.summary = sources, table, summary

    def _payload(self) -> dict:
        return {"sources": self.sources, "summary": self.summary, "table": self.table}

    def save(self, directory) -> list[Path]:
        """compare.csv and compare.png in ``directory``."""
        d = report_dir(directory, "output")
        return [self.to_csv(d / "compare.csv"), change_plots.compare_plot(self.table, d)]

    def figures(self) -> list:
        return [change_plots.compare_figure(self.table)]

    def title(self) -> str:
        return f"compare, {len(self.sources)} models"

    def summary_lines(self) -> list[str]:
        return [f"{m}: {pct(s.get('weight_neg_frac'))} of {s.get('weight_numel') or 0:,} weight values negative"
                + (" (UNTRAINED)" if s.get("trained") is False else "") for m, s in self.summary["models"].items()]

    def __repr__(self) -> str:
        return f"<CompareResult {len(self.sources)} models>"


def diff(a, b, weights: str = "DEFAULT", *, chunk_elems: int = CHUNK_ELEMS, match: str = "name") -> DiffResult:
    """The change from checkpoint ``a`` to checkpoint ``b``, tensor by tensor (``--weights`` applies to names).

    ``match``: ``name`` (normalised names; no name in common is an error) or ``position`` (the
    i-th tensor of A with the i-th of B)."""
    options = LoadOptions(weights=weights)
    with open_source(str(a), options) as sa, open_source(str(b), options) as sb:
        recs_a, adopted_a = sb.adopt(list(sa.records()))  # names of another format in B's own convention
        recs_b, adopted_b = sa.adopt(list(sb.records()))
        notes = [f"A: {n}" for n in sa.meta["notes"]] + [f"B: {n}" for n in sb.meta["notes"]]
        notes += [f"A: {n}" for n in adopted_a] + [f"B: {n}" for n in adopted_b]
        try:
            rows, matching = diff_records(recs_a, recs_b, chunk_elems, match)
        except NoCommonNames as e:  # say why names of two formats did not meet, when a loader knows
            why = adopted_a + adopted_b
            raise NoCommonNames(f"{e}" + (f"; note: {'; '.join(why)}" if why else "")) from None
    matching["notes"] = notes + matching["notes"]
    df = diff_frame(rows)
    summary = {"a": str(a), "b": str(b), **diff_summary(df, matching)}
    return DiffResult(str(a), str(b), df, summary)


def track(sources, weights: str = "DEFAULT", *, chunk_elems: int = CHUNK_ELEMS,
          progress: ProgressFn | None = None, step_regex: str | None = None) -> TrackResult:
    """Core statistics of each checkpoint of a run, in step order, and the change between consecutive ones.

    The step of a checkpoint is the last number in its file name, or what ``step_regex`` finds
    in its path; when some checkpoint has none (or two share one) the checkpoints keep their
    natural order and the step is the position (see analysis.track.checkpoint_steps).
    Only two checkpoints are open at a time: the current one and the previous one it is compared with.
    """
    checkpoints, step_numbers, step_source = checkpoint_steps(ordered_sources(sources), step_regex)
    options = LoadOptions(weights=weights)
    frames, steps, notes, prev, prev_src = [], [], [], [], None
    if step_source == "position" and len(checkpoints) > 1:
        notes.append("steps are positions 0 .. n-1: not every checkpoint name carries its own step number")
    try:
        for step, path in zip(step_numbers, checkpoints):
            src = open_source(path, options)
            try:
                records = list(src.records())
                table, df, step_notes = _track_step(path, src, prev, records, chunk_elems, progress)
            except BaseException:
                src.close()
                raise
            steps.append(_step_row(step, path, table, df))
            df.insert(0, "step", step)
            df.insert(0, "checkpoint", path)
            frames.append(df[TRACK_COLUMNS])
            notes += step_notes
            if prev_src is not None:
                prev_src.close()
            prev, prev_src = records, src
    finally:
        if prev_src is not None:
            prev_src.close()
    tensors = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TRACK_COLUMNS)
    steps_df = pd.DataFrame(steps, columns=STEP_COLUMNS)
    for c in ("weight_sign_flips", "weight_became_neg", "weight_became_pos"):
        steps_df[c] = steps_df[c].astype("Int64")
    summary = {"checkpoints": checkpoints, "step_source": step_source, "steps": steps, "notes": notes}
    return TrackResult(checkpoints, tensors, steps_df, summary)


def _track_step(path: str, src, prev: list, records: list, chunk_elems: int, progress):
    """One checkpoint's tensor table with the change from the previous checkpoint (as a Frame and as a
    DataFrame), and its notes."""
    factory, aligned = change_factory(prev, records, chunk_elems)
    rows, _ = analyze_records(records, chunk_elems, progress, (factory,))
    table = tensor_frame(rows, extra=CHANGE_COLUMNS)
    for c in ("sign_flips", "became_neg", "became_pos", "became_zero"):
        table.cast(c, "Int64")
    return table, table.to_pandas(), [f"{path}: {n}" for n in list(src.meta["notes"]) + aligned]


def _step_row(step: int, path: str, table, df: pd.DataFrame) -> dict:
    """One checkpoint's headline figures, and the weights' change from the previous checkpoint
    (``table`` and ``df``: its tensor table as a Frame and as a DataFrame)."""
    s = summarize(table, layer_frame(table), {"source": path})
    w = s["by_kind"].get("weight", {})
    row = {"step": step, "checkpoint": path, "tensors": s["tensors"], "numel": s["numel"],
           "weight_neg_frac": s["weight_neg_frac"], "weight_std": w.get("std"), "weight_l2_norm": w.get("l2_norm")}
    changed = df[(df["kind"] == "weight") & df["rel_change"].notna()]
    if len(changed):
        c = pooled_change(changed)
        for k in ("rel_change", "sign_flips", "sign_flip_frac", "became_neg", "became_pos"):
            row[f"weight_{k}"] = c[k]
    return row


def compare(sources, weights: str = "DEFAULT", *, chunk_elems: int = CHUNK_ELEMS) -> CompareResult:
    """Several models side by side: per model and kind, parameters, sign fractions, abs mean, std."""
    rows, models, sources = [], {}, source_list(sources)
    for source in sources:
        ins = inspect(source, weights=weights, chunk_elems=chunk_elems)
        s = ins.summary
        models[source] = {k: s.get(k) for k in ("format", "model", "weights", "trained", "numel",
                                                  "weight_numel", "weight_neg_frac")}
        for kind, k in s["by_kind"].items():
            rows.append({"model": source, "kind": kind, "tensors": k["tensors"], "numel": k["numel"],
                         **{c: k[c] for c in ("neg_frac", "zero_frac", "pos_frac", "abs_mean", "std")}})
    table = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    return CompareResult(sources, table, {"models": models})


__all__ = ["diff", "track", "compare", "DiffResult", "TrackResult", "CompareResult"]
