"""Findings: facts about a checkpoint that a user auditing it should see."""

from __future__ import annotations

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
