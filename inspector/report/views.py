"""What the reports show, defined once: columns, number formats, summary lines.

The terminal, HTML and Markdown renderers only escape and lay out these strings, so all three
show the same numbers, formatted the same way.
"""

from __future__ import annotations

import math



def pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.4g}"


def count(x) -> str:
    """An integer with thousands separators ("—" when missing)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{int(x):,}"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def text(x) -> str:
    return "(top level)" if x is None or x == "" or (isinstance(x, float) and math.isnan(x)) else str(x)


# The order of the tables, as the source knows it (see inspector.kinds): a state dict's or a model
# config's module order; a file written in its own order keeps it; else the names' natural order
# (``layers.2`` before ``layers.10``), never plain lexicographic.
ORDER_LABELS = {"module": "module order", "natural": "natural order of the names",
                "keys": "natural order of the file's layer keys", "file": "the file's order"}


def order_label(summary: dict) -> str:
    """How the layer table is ordered, in words."""
    return ORDER_LABELS.get(summary.get("order") or "file", str(summary.get("order")))


# (column of the layer table, header, formatter); the "#" column is the table's order
LAYER_VIEW = [
    ("layer", "layer", text),
    ("tensors", "tensors", count),
    ("numel", "values", count),
    ("weight_numel", "weight values", count),
    ("weight_neg_frac", "weight negative", pct),
    ("neg_frac", "all negative", pct),
    ("zero_frac", "zero", pct),
    ("weight_abs_mean", "weight abs mean", num),
    ("weight_std", "weight std", num),
    ("weight_l2_norm", "weight L2 norm", num),
    ("nan_count", "NaN", count),
    ("inf_count", "Inf", count),
]
COMPACT_COLUMNS = ("layer", "numel", "weight_neg_frac", "neg_frac", "weight_abs_mean", "weight_std")

# (key of summary["by_kind"][kind], header, formatter)
KIND_VIEW = [
    ("tensors", "tensors", count),
    ("numel", "values", count),
    ("neg_frac", "negative", pct),
    ("zero_frac", "zero", pct),
    ("pos_frac", "positive", pct),
    ("abs_mean", "abs mean", num),
    ("std", "std", num),
]

UNTRAINED = "UNTRAINED: freshly initialised weights, not a trained model. These numbers describe the initialisation."


def headline(s: dict) -> str | None:
    """The one-sentence answer, or None for a model without weight-kind tensors."""
    if not s["weight_numel"]:
        return None
    return f"{pct(s['weight_neg_frac'])} of the {s['weight_numel']:,} weight parameters are negative"


def headline_detail(s: dict) -> str:
    return (f"{pct(s['weight_zero_frac'])} zero, {pct(s['weight_pos_frac'])} positive; "
            f"all learned parameters: {pct(s['learned_neg_frac'])} negative")


def totals(s: dict) -> str:
    return (f"{s['tensors']:,} tensors, {s['numel']:,} values "
            f"({s['learned_numel']:,} learned, {s['buffer_numel']:,} in buffers)")


def quantization_line(s: dict) -> str:
    """The values in each stored type, and how many of the quantized ones are exactly zero (sources with
    quantized tensors: the summary's ``quantization``)."""
    total = sum(s["dtypes"].values()) or 1
    mix = ", ".join(f"{k} {v:,} ({pct(v / total)})" for k, v in sorted(s["dtypes"].items(), key=lambda kv: -kv[1]))
    return f"quantization: {mix}; {pct(s['quantization']['quantized_zero_frac'])} of the quantized values are " \
           "exactly zero"
def counters_line(s: dict) -> str | None:
    """Which integer counters are left out of the magnitude figures, or None when there are none."""
    names = s.get("counters") or []
    if not names:
        return None
    shown = ", ".join(names[:3]) + (f", … ({len(names)} in all)" if len(names) > 3 else "")
    return (f"{plural(len(names), 'integer counter')} left out of abs mean, std and L2 norm "
            f"(counted in values and signs): {shown}")


def extreme_layers(s: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """("most negative layers", [(layer, "51.2%"), ...]) and the least negative ones."""
    return [
        (title, [(text(x["layer"]), pct(x["weight_neg_frac"])) for x in s[key]])
        for title, key in (("most negative layers", "most_negative_layers"),
                           ("least negative layers", "least_negative_layers"))
        if s[key]
    ]


GROUP_FINDINGS_AT = 4  # findings of one type (and tensor kind) shown as one line from this many on
SHOWN_IN_GROUP = 3
USUAL_AT_INIT = {("zero", "bias"), ("zero", "norm")}  # PyTorch and Keras start biases and shifts at zero


def grouped_findings(findings: list) -> list[tuple[str, str, str]]:
    """(type, subject, detail) rows with the findings of one type and tensor kind folded into one
    row from GROUP_FINDINGS_AT of them on ("54 bias tensors", "every value is zero (usual at
    initialisation): a, b, c, … (--json lists all)"); others one row each, in the findings' order."""
    groups: dict[tuple, list] = {}
    for f in findings:
        groups.setdefault((f.type, f.data.get("kind")), []).append(f)
    rows = []
    for (type_, kind), fs in groups.items():
        if len(fs) < GROUP_FINDINGS_AT:
            rows += [(f.type, f.subject, f.detail) for f in fs]
            continue
        what = plural(len(fs), f"{kind} tensor" if kind else "tensor or layer")
        details = {f.detail for f in fs}
        detail = fs[0].detail if len(details) == 1 else f"{len(details)} different details"
        usual = " (usual at initialisation)" if (type_, kind) in USUAL_AT_INIT else ""
        names = ", ".join(f.subject for f in fs[:SHOWN_IN_GROUP])
        rows.append((type_, what, f"{detail}{usual}: {names}, … (--json lists all)"))
    return rows


def finding_rows(s: dict) -> list[tuple[str, str, str]]:
    """(type, subject, detail) per finding."""
    return [(f.type, f.subject, f.detail) for f in s.get("findings", [])]
