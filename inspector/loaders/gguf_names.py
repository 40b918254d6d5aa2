"""Matching another format's tensors to a GGUF file's, for ``winspect diff model.safetensors model.gguf``.

Names go through gguf-py's tensor name map for the file's architecture (the map llama.cpp's
converter uses): ``model.layers.0.self_attn.q_proj.weight`` becomes ``blk.0.attn_q.weight``.
llama.cpp's converter also reorders the rows of the LLaMA-family q and k projections (rotary
halves interleaved per head); those source tensors are read in the converted row order, so
that each value meets its own quantized counterpart. When the head counts needed for that are
missing or do not fit the tensor, the tensor keeps its name, is not compared, and a note says so.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from ..records import TensorRecord, exact_chunks, layer_of

# architectures whose converter permutes q/k rows (LlamaModel and the converters built on it)
PERMUTED_ARCHS = ("llama", "granite", "granitemoe", "deci", "mistral3", "llama4")


def name_map(arch: str | None, blocks):
    """gguf-py's TensorNameMap for an architecture, or (None, why not)."""
    try:
        import gguf
    except ImportError:
        return None, "gguf-py is not installed (pip install gguf), so names of other formats are not mapped " \
                     "to GGUF names and only identical names are compared"
    archs = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if not isinstance(arch, str) or arch not in archs or not isinstance(blocks, int) or blocks < 0:
        return None, f"gguf-py has no tensor name map for architecture {arch!r} ({blocks!r} blocks)"
    return gguf.get_tensor_name_map(archs[arch], blocks), None


def head_groups(meta: dict, arch: str, gguf_name: str) -> int | None:
    """Row groups that llama.cpp's permutation swaps within: the head count (q) or KV head count (k)."""
    heads = meta.get(f"{arch}.attention.head_count")
    kv = meta.get(f"{arch}.attention.head_count_kv", heads)
    leaf = layer_of(gguf_name).rsplit(".", 1)[-1]
    n = heads if leaf == "attn_q" else kv if leaf == "attn_k" else None
    return n if isinstance(n, int) and n > 0 else None


def converter_order(rows: int, groups: int) -> np.ndarray:
    """perm with converted[i] = source[perm[i]] (llama.cpp's ``permute`` applied to row indices)."""
    return np.arange(rows).reshape(groups, 2, rows // groups // 2).swapaxes(1, 2).reshape(-1)


def rows_in_order(rec: TensorRecord, perm: np.ndarray) -> TensorRecord:
    """A record whose values are ``rec``'s with its rows (axis 0) in the order ``perm``."""
    cols = rec.numel // rec.shape[0]
    whole = None

    def rows() -> Iterator[np.ndarray]:
        nonlocal whole
        for r in perm:
            if rec.range_reader is not None:
                yield from rec.range_chunks(int(r) * cols, (int(r) + 1) * cols, max(cols, 1))
            else:  # no range reads: the tensor is read once into memory
                if whole is None:
                    whole = np.concatenate([c.copy() for c in rec.chunks(1 << 20)])
                yield whole[int(r) * cols : (int(r) + 1) * cols]

    def read(max_elems: int) -> Iterator[np.ndarray]:
        return exact_chunks(rows(), max_elems, rec.np_dtype)

    return dataclasses.replace(rec, reader=read, range_reader=None)


def adopt(records: list[TensorRecord], own: set[str], meta: dict) -> tuple[list, list[str]]:
    """Records of another source renamed to GGUF names (rows reordered where the converter reorders
    them), and notes. ``own``: the GGUF file's tensor names; ``meta``: its metadata."""
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    mapping, why = name_map(arch, meta.get(f"{arch}.block_count"))
    if mapping is None:
        return records, [why] if not own & {r.name for r in records} else []
    out, renamed, notes = [], 0, []
    for rec in records:
        new = mapping.get_name(rec.name, try_suffixes=(".weight", ".bias"))
        if new is None or new == rec.name or new not in own:
            out.append(rec)
            continue
        if arch in PERMUTED_ARCHS and layer_of(new).rsplit(".", 1)[-1] in ("attn_q", "attn_k"):
            rec, note = _reordered(rec, meta, arch, new)
            if note:
                notes.append(note)
                out.append(rec)
                continue
        out.append(dataclasses.replace(rec, name=new, layer=layer_of(new)))
        renamed += 1
    notes.insert(0, f"{renamed} tensor names mapped to GGUF names with gguf-py's {arch} name map")
    return out, notes


def _reordered(rec: TensorRecord, meta: dict, arch: str, new: str):
    """(record with converter row order, None), or (record unchanged, why it cannot be compared)."""
    groups = head_groups(meta, arch, new)
    rows = rec.shape[0] if rec.shape else 0
    if groups is None or rows % (2 * groups):
        return rec, (f"{rec.name}: not compared: llama.cpp reorders its rows by attention head and the head count "
                     f"({groups}) does not divide its {rows} rows into pairs")
    return rows_in_order(rec, converter_order(rows, groups)), None
