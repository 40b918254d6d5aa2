"""Short terminal summaries of diff, track and compare results (rich)."""

from __future__ import annotations

import pandas as pd
from rich.console import Group
from rich.table import Table

from .terminal import num, pct, safe

MAX_LISTED = 10  # unmatched names shown before "… N more"


def _listed(names: list[str]) -> str:
    shown = ", ".join(safe(n) for n in names[:MAX_LISTED])
    return shown + (f", … {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def render_diff(result) -> Group:
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
        t = Table(title="most changed weight tensors", title_justify="left")
        for col in ("tensor", "rel change", "sign flips"):
            t.add_column(col, justify="left" if col == "tensor" else "right")
        for r in s["most_changed"]:
            t.add_row(safe(r["name"]), num(r["rel_change"]), pct(r["sign_flip_frac"]))
        parts.append(t)
    if s["only_in_a"]:
        parts.append(f"[yellow]only in A[/yellow] ({len(s['only_in_a'])}): {_listed(s['only_in_a'])}")
    if s["only_in_b"]:
        parts.append(f"[yellow]only in B[/yellow] ({len(s['only_in_b'])}): {_listed(s['only_in_b'])}")
    for m in s["shape_mismatches"][:MAX_LISTED]:
        parts.append(f"[yellow]shape mismatch[/yellow] {safe(m['name'])}: {m['shape_a']} vs {m['shape_b']}")
    if len(s["shape_mismatches"]) > MAX_LISTED:
        parts.append(f"… {len(s['shape_mismatches']) - MAX_LISTED} more shape mismatches")
    return Group(*parts)


def render_track(result) -> Group:
    parts: list = []
    n = len(result.checkpoints)
    how = {"name": "steps from the file names", "regex": "steps from --step-regex",
           "position": "steps are positions"}.get(result.summary.get("step_source"), "")
    parts.append(f"[bold]winspect track[/bold] {n} checkpoint{'' if n == 1 else 's'}, in this order ({how}):")
    t = Table(title_justify="left")
    for col in ("step", "checkpoint", "weight neg", "weight std", "rel change", "sign flips"):
        t.add_column(col, justify="left" if col == "checkpoint" else "right", overflow="fold")
    for r in result.steps.itertuples():
        flips = "—" if pd.isna(r.weight_sign_flips) else f"{int(r.weight_sign_flips):,}"
        t.add_row(str(r.step), safe(r.checkpoint), pct(r.weight_neg_frac), num(r.weight_std),
                  num(r.weight_rel_change), flips)
    parts.append(t)
    for note in result.summary["notes"]:
        parts.append(f"  note: {safe(note)}")
    return Group(*parts)


def render_compare(result) -> Group:
    parts: list = []
    parts.append(f"[bold]winspect compare[/bold] {len(result.sources)} models")
    t = Table(title_justify="left")
    for col in ("model", "kind", "tensors", "numel", "negative", "abs mean", "std"):
        t.add_column(col, justify="left" if col in ("model", "kind") else "right")
    for r in result.table.itertuples():
        t.add_row(safe(r.model), r.kind, str(r.tensors), f"{r.numel:,}", pct(r.neg_frac), num(r.abs_mean),
                  num(r.std))
    parts.append(t)
    for source, m in result.summary["models"].items():
        if m.get("trained") is False:
            parts.append(f"[bold red]UNTRAINED[/bold red]: {safe(source)} is freshly initialised")
    return Group(*parts)
