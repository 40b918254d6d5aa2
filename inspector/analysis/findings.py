"""Findings: facts about a checkpoint that a user auditing it should see."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def tensor_findings(tensors: pd.DataFrame) -> list[dict]:
    """NaN/Inf values, all-zero tensors and tied tensors, from the tensor table."""
    out = []
    for r in tensors.itertuples():
        if r.nan_count:
            out.append({"type": "nan", "tensor": r.name, "detail": f"{r.nan_count} NaN values"})
        if r.inf_count:
            out.append({"type": "inf", "tensor": r.name, "detail": f"{r.inf_count} infinite values"})
        if r.numel > 0 and r.zero_count == r.numel and r.kind != "buffer":
            out.append({"type": "zero", "tensor": r.name, "detail": "every value is zero"})
        if isinstance(r.tied_to, str):
            out.append({"type": "tied", "tensor": r.name, "detail": f"shares storage with {r.tied_to}"})
    return out


# Every finding type, with what it means. Loaders and analyses add findings of these types to
# ``meta["findings"]``; ``winspect audit --fail-on`` accepts exactly these names.
FINDING_TYPES = {
    "nan": "NaN values in a tensor",
    "inf": "infinite values in a tensor",
    "zero": "a learned tensor whose values are all zero",
    "tied": "a tensor sharing storage with another",
    "dead_relu": "units that never activate (dead-ReLU candidates)",
    "lambda": "a Keras Lambda layer (code that runs when the model is loaded)",
    "custom_object": "a Keras layer or object of a custom class",
    "unsafe": "a pickle that imports code (refused; nothing was executed)",
}
DEFAULT_FAIL_ON = ("nan", "inf", "unsafe")


def unsafe_findings(scan) -> list[dict]:
    """One ``unsafe`` finding per dangerous or unknown global of a refused pickle's scan."""
    from ..safety.pickle_scan import classify

    return [
        {"type": "unsafe", "global": g, "class": classify(g), "detail": f"pickle imports {classify(g)} global {g}"}
        for g in scan.unsafe
    ]
