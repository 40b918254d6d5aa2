"""Changes between two checkpoints, tensor by tensor, one tensor of each side at a time.

Tensors are matched by name after normalisation: the loaders' own prefix stripping
(``module.``, ``_orig_mod.``), and a leading component that every name of one side shares
and that, stripped, makes more names match (``model.`` on one side only). A matched pair is
read in lockstep: equal-sized chunks of A and B, reduced in float64 by :class:`PairedChange`.

Per tensor (values that are NaN or ±Inf on either side are excluded, and counted):

* ``rel_change`` = ||B - A|| / ||A|| (0 when both are zero, inf when only A is);
* ``cosine`` between A and B as vectors (NaN when either is zero);
* ``sign_flips``: elements negative on one side and positive on the other (neither zero);
  ``sign_flip_frac`` = sign_flips / numel;
* ``became_neg``: A >= 0 and B < 0; ``became_pos``: A <= 0 and B > 0; ``became_zero``: A != 0 and
  B == 0 (what quantization rounds to zero);
* ``max_abs_change`` = max |B - A|; ``l2_a``, ``l2_b``, ``l2_change`` = ||A||, ||B||, ||B - A||;
* ``neg_frac_a`` / ``neg_frac_b``: negative values of each side over numel.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import CorruptCheckpoint, InspectorError
from ..names import shape_str, strip_prefixes

CHANGE_COLUMNS = [
    "rel_change", "cosine", "sign_flips", "sign_flip_frac", "became_neg", "became_pos", "became_zero",
    "max_abs_change", "l2_a", "l2_b", "l2_change", "neg_frac_a", "neg_frac_b", "excluded_count",
]
DIFF_COLUMNS = ["name", "layer", "kind", "shape", "numel", *CHANGE_COLUMNS, "tied_to"]
TOP_CHANGED = 5


class NoCommonNames(InspectorError):
    """Two checkpoints share no tensor to compare."""


class PairedChange:
    """Reduce the change from tensor A to tensor B. Fed B's chunks; pulls A's in lockstep.

    Both sides are read with the same ``chunk_elems``, so the i-th chunks cover the same
    elements. A chunk may be a view into its reader's reused buffer: each pair is consumed
    before the next is requested.
    """

    def __init__(self, a_record, chunk_elems: int):
        self.name = a_record.name
        self.numel = a_record.numel
        self.a_chunks = iter(a_record.chunks(chunk_elems))
        self.sq_a = self.sq_b = self.sq_d = self.dot = 0.0
        self.flips = self.became_neg = self.became_pos = self.became_zero = 0
        self.neg_a = self.neg_b = self.excluded = 0
        self.max_abs = -math.inf

    def update(self, b_chunk: np.ndarray) -> None:
        a_chunk = next(self.a_chunks, None)
        if a_chunk is None or a_chunk.size != b_chunk.size:
            raise CorruptCheckpoint(f"{self.name}: the two tensors yielded different numbers of values")
        a = a_chunk.astype(np.float64)
        b = b_chunk.astype(np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        if not ok.all():
            self.excluded += int(ok.size - np.count_nonzero(ok))
            a, b = a[ok], b[ok]
        if a.size == 0:
            return
        d = b - a
        self.sq_a += float(np.dot(a, a))
        self.sq_b += float(np.dot(b, b))
        self.sq_d += float(np.dot(d, d))
        self.dot += float(np.dot(a, b))
        self.max_abs = max(self.max_abs, float(np.abs(d).max()))
        a_neg, a_pos, b_neg, b_pos = a < 0, a > 0, b < 0, b > 0
        self.flips += int(np.count_nonzero(a_neg & b_pos) + np.count_nonzero(a_pos & b_neg))
        self.became_neg += int(np.count_nonzero(b_neg & ~a_neg))
        self.became_pos += int(np.count_nonzero(b_pos & ~a_pos))
        self.became_zero += int(np.count_nonzero((a != 0) & (b == 0)))
        self.neg_a += int(np.count_nonzero(a_neg))
        self.neg_b += int(np.count_nonzero(b_neg))

    def result(self) -> dict:
        if next(self.a_chunks, None) is not None:
            raise CorruptCheckpoint(f"{self.name}: the two tensors yielded different numbers of values")
        n = self.numel
        l2_a, l2_b, l2_d = math.sqrt(self.sq_a), math.sqrt(self.sq_b), math.sqrt(self.sq_d)
        norm = math.sqrt(self.sq_a * self.sq_b)
        return {
            "rel_change": l2_d / l2_a if l2_a > 0 else (0.0 if l2_d == 0 else math.inf),
            "cosine": min(1.0, max(-1.0, self.dot / norm)) if norm > 0 else math.nan,
            "sign_flips": self.flips,
            "sign_flip_frac": self.flips / n if n else math.nan,
            "became_neg": self.became_neg,
            "became_pos": self.became_pos,
            "became_zero": self.became_zero,
            "max_abs_change": self.max_abs if self.max_abs > -math.inf else math.nan,
            "l2_a": l2_a,
            "l2_b": l2_b,
            "l2_change": l2_d,
            "neg_frac_a": self.neg_a / n if n else math.nan,
            "neg_frac_b": self.neg_b / n if n else math.nan,
            "excluded_count": self.excluded,
        }


def change_of(a_record, b_record, chunk_elems: int) -> dict:
    """The change columns for one matched pair, from one lockstep pass over both."""
    reducer = PairedChange(a_record, chunk_elems)
    for chunk in b_record.chunks(chunk_elems):
        reducer.update(chunk)
    return reducer.result()


# --- name matching --------------------------------------------------------------------


def _shared_head(keys) -> str | None:
    """The first dotted component, when every key has more than one and they all share it."""
    heads = {k.split(".", 1)[0] if "." in k else None for k in keys}
    if len(heads) == 1 and None not in heads and keys:
        return heads.pop()
    return None


def _strip_head(side: dict[str, str], head: str) -> dict[str, str]:
    return {k[len(head) + 1 :]: v for k, v in side.items()}


def align_names(names_a, names_b) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Normalised name -> original name for each side, and notes on what was stripped."""
    sides = [{}, {}]
    for side, names in zip(sides, (names_a, names_b)):
        for n in names:
            side.setdefault(strip_prefixes(n), n)
    notes = []
    while True:
        best, matched = None, len(sides[0].keys() & sides[1].keys())
        for i in (0, 1):
            head = _shared_head(list(sides[i]))
            if head is None:
                continue
            trial = _strip_head(sides[i], head)
            m = len(trial.keys() & sides[1 - i].keys())
            if m > matched:
                best, matched = (i, head, trial), m
        if best is None:
            return sides[0], sides[1], notes
        i, head, sides[i] = best
        notes.append(f"stripped the prefix {head + '.'!r} from every name of {'AB'[i]} to match the other side")


MATCH_MODES = ("name", "position")
SHOWN_NAMES = 4  # names of each side quoted when none match


def _few(names: list[str]) -> str:
    more = f", … ({len(names)} in all)" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def pair_records(recs_a: list, recs_b: list, match: str = "name") -> tuple[list[tuple], dict]:
    """Pairs (key, record of A, record of B) and what did not pair.

    ``name``: by normalised name (see :func:`align_names`); when both sides have tensors and no
    name is shared, a :class:`NoCommonNames` error names a few of each side (nothing changed
    would be a false answer). ``position``: the i-th tensor of A with the i-th of B, in the
    sources' order; the key is A's name.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, not {match!r}")
    if match == "position":
        pairs = [(ra.name, ra, rb) for ra, rb in zip(recs_a, recs_b)]
        n = len(pairs)
        note = f"tensors paired by position: {n} pairs, A's names kept"
        return pairs, {"only_in_a": [r.name for r in recs_a[n:]], "only_in_b": [r.name for r in recs_b[n:]],
                       "notes": [note]}
    map_a, map_b, notes = align_names([r.name for r in recs_a], [r.name for r in recs_b])
    if recs_a and recs_b and not map_a.keys() & map_b.keys():
        raise NoCommonNames(
            f"A and B have no tensor names in common (A: {_few([r.name for r in recs_a])}; "
            f"B: {_few([r.name for r in recs_b])}); pass --match position to pair them by order and shape"
        )
    by_a = {r.name: r for r in recs_a}
    by_b = {r.name: r for r in recs_b}
    pairs = [(key, by_a[name_a], by_b[map_b[key]]) for key, name_a in map_a.items() if key in map_b]
    return pairs, {"only_in_a": [n for k, n in map_a.items() if k not in map_b],
                   "only_in_b": [n for k, n in map_b.items() if k not in map_a], "notes": notes}


def diff_records(recs_a: list, recs_b: list, chunk_elems: int, match: str = "name") -> tuple[list[dict], dict]:
    """Rows of the diff table (A's order) and the matching report (unmatched, mismatched, notes)."""
    pairs, unpaired = pair_records(recs_a, recs_b, match)
    rows, mismatched = [], []
    for key, ra, rb in pairs:
        if ra.shape != rb.shape:
            mismatched.append({"name": key, "shape_a": shape_str(ra.shape), "shape_b": shape_str(rb.shape)})
            continue
        rows.append({
            "name": key, "layer": ra.layer, "kind": ra.kind, "shape": shape_str(ra.shape), "numel": ra.numel,
            **change_of(ra, rb, chunk_elems), "tied_to": ra.tied_to,
        })
    if pairs and not rows:
        raise NoCommonNames(f"no pair of tensors has the same shape ({len(mismatched)} pairs differ, first: "
                            f"{mismatched[0]['name']} {mismatched[0]['shape_a']} vs {mismatched[0]['shape_b']})")
    matching = {"only_in_a": unpaired["only_in_a"], "only_in_b": unpaired["only_in_b"],
                "shape_mismatches": mismatched, "notes": unpaired["notes"], "match": match}
    return rows, matching


def diff_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    for c in ("numel", "sign_flips", "became_neg", "became_pos", "became_zero", "excluded_count"):
        df[c] = df[c].astype("int64")
    return df


def pooled_change(df: pd.DataFrame) -> dict:
    """Change figures pooled over several tensors' rows (tied copies counted once)."""
    df = df[df["tied_to"].isna()] if "tied_to" in df else df
    numel = int(df["numel"].sum())
    sq_a, sq_b, sq_d = (float((df[c] ** 2).sum()) for c in ("l2_a", "l2_b", "l2_change"))
    dot = float((df["cosine"].fillna(0.0) * df["l2_a"] * df["l2_b"]).sum())
    norm = math.sqrt(sq_a * sq_b)
    flips = int(df["sign_flips"].sum())
    return {
        "tensors": int(len(df)),
        "numel": numel,
        "rel_change": math.sqrt(sq_d) / math.sqrt(sq_a) if sq_a > 0 else (0.0 if sq_d == 0 else math.inf),
        "cosine": dot / norm if norm > 0 else math.nan,
        "sign_flips": flips,
        "sign_flip_frac": flips / numel if numel else math.nan,
        "became_neg": int(df["became_neg"].sum()),
        "became_pos": int(df["became_pos"].sum()),
        "became_zero": int(df["became_zero"].sum()),
        "neg_frac_a": float((df["neg_frac_a"] * df["numel"]).sum() / numel) if numel else math.nan,
        "neg_frac_b": float((df["neg_frac_b"] * df["numel"]).sum() / numel) if numel else math.nan,
    }


def diff_summary(df: pd.DataFrame, matching: dict) -> dict:
    """The model-level summary of a diff: all tensors, weight tensors, the most changed ones."""
    weights = df[df["kind"] == "weight"]
    ranked = weights.sort_values("rel_change", ascending=False, kind="stable").head(TOP_CHANGED)
    return {
        "compared": int(len(df)),
        "all": pooled_change(df),
        "weight": pooled_change(weights),
        "most_changed": [
            {"name": r.name, "rel_change": float(r.rel_change), "sign_flip_frac": float(r.sign_flip_frac)}
            for r in ranked.itertuples()
        ],
        **matching,
    }
