"""Short terminal summaries of diff, track and compare results (rich)."""

from __future__ import annotations

import pandas as pd
from rich.console import Group

from .fit import Column, fitted_table
from .terminal import DEFAULT_WIDTH, dropped_note, num, pct, safe, visible

MAX_LISTED = 10  # unmatched names shown before "… N more"


def _listed(names: list[str]) -> str:
    shown = ", ".join(safe(n) for n in names[:MAX_LISTED])
    return shown + (f", … {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def render_diff(result, width: int = DEFAULT_WIDTH) -> Group:
    parts: list = []
    s = result.summary
    parts.append(f"[bold]winspect diff[/bold] {safe(s['a'])} → {safe(s['b'])}")
    for note in s["notes"]:
        parts.append(f"  note: {safe(note)}")
    w = s["weight"]
    parts.append(f"{s['compared']} tensors compared; weights: ||B−A||/||A|| = [bold]{num(w['rel_change'])}[/bold], "
                  f"cosine {num(w['cosine'])}")
    parts.append(f"weight sign flips: [bold]{w['sign_flips']:,}[/bold] ({pct(w['sign_flip_frac'])}); became negative "
                  f"{w['became_neg']:,}, became positive {w['became_pos']:,}, became exactly zero "
                  f"{w['became_zero']:,}; negative fraction "
                  f"{pct(w['neg_frac_a'])} → {pct(w['neg_frac_b'])}")
    if s["most_changed"]:
        rows = [[visible(r["name"]), num(r["rel_change"]), pct(r["sign_flip_frac"])] for r in s["most_changed"]]
        columns = [Column("tensor", "left", None, True), Column("rel change"), Column("sign flips")]
        parts.append(fitted_table(columns, rows, width, title="most changed weight tensors")[0])
    if s["only_in_a"]:
        parts.append(f"[yellow]only in A[/yellow] ({len(s['only_in_a'])}): {_listed(s['only_in_a'])}")
    if s["only_in_b"]:
        parts.append(f"[yellow]only in B[/yellow] ({len(s['only_in_b'])}): {_listed(s['only_in_b'])}")
    for m in s["shape_mismatches"][:MAX_LISTED]:
        parts.append(f"[yellow]shape mismatch[/yellow] {safe(m['name'])}: {m['shape_a']} vs {m['shape_b']}")
    if len(s["shape_mismatches"]) > MAX_LISTED:
        parts.append(f"… {len(s['shape_mismatches']) - MAX_LISTED} more shape mismatches")
    return Group(*parts)


TRACK_COLUMNS = [Column("step"), Column("checkpoint", "left", None, True), Column("weight neg"),
                 Column("weight std", priority=1), Column("rel change", priority=2), Column("sign flips", priority=3)]


def render_track(result, width: int = DEFAULT_WIDTH) -> Group:
    parts: list = []
    n = len(result.checkpoints)
    how = {"name": "steps from the file names", "regex": "steps from --step-regex",
           "position": "steps are positions"}.get(result.summary.get("step_source"), "")
    parts.append(f"[bold]winspect track[/bold] {n} checkpoint{'' if n == 1 else 's'}, in this order ({how}):")
    rows = [[str(r.step), visible(r.checkpoint), pct(r.weight_neg_frac), num(r.weight_std), num(r.weight_rel_change),
             "—" if pd.isna(r.weight_sign_flips) else f"{int(r.weight_sign_flips):,}"]
            for r in result.steps.itertuples()]
    table, dropped = fitted_table(TRACK_COLUMNS, rows, width)
    parts += [table, *dropped_note(dropped, width)]
    for note in result.summary["notes"]:
        parts.append(f"  note: {safe(note)}")
    return Group(*parts)


COMPARE_COLUMNS = [Column("model", "left", None, True), Column("kind", "left"), Column("tensors", priority=1),
                   Column("numel", priority=4), Column("negative"), Column("abs mean", priority=3),
                   Column("std", priority=2)]


def render_compare(result, width: int = DEFAULT_WIDTH) -> Group:
    parts: list = []
    parts.append(f"[bold]winspect compare[/bold] {len(result.sources)} models")
    rows = [[visible(r.model), r.kind, str(r.tensors), f"{r.numel:,}", pct(r.neg_frac), num(r.abs_mean), num(r.std)]
            for r in result.table.itertuples()]
    table, dropped = fitted_table(COMPARE_COLUMNS, rows, width)
    parts += [table, *dropped_note(dropped, width)]
    for source, m in result.summary["models"].items():
        if m.get("trained") is False:
            parts.append(f"[bold red]UNTRAINED[/bold red]: {safe(source)} is freshly initialised")
    return Group(*parts)
