"""Small GGUF files for the tests, written byte by byte so that any field can be made hostile.

``gguf_file(tensors, metadata)`` lays out a GGUF v3 file: ``tensors`` are (name, numpy shape, type id,
raw bytes) and ``metadata`` (key, value type, packed value bytes). Keyword arguments override the
fields the bad-input tests corrupt.
"""

from __future__ import annotations

import struct

import numpy as np

from inspector.loaders.dequant import TYPES


def gstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv_string(key: str, value: str) -> tuple[str, int, bytes]:
    return key, 8, gstr(value)


def kv_u32(key: str, value: int) -> tuple[str, int, bytes]:
    return key, 4, struct.pack("<I", value)


def gguf_file(tensors, metadata=(), *, version=3, align=32, tensor_count=None, kv_count=None, dims=None,
              offsets=None, types=None) -> bytes:
    meta = [kv_string("general.architecture", "llama"), *metadata]
    out = [b"GGUF", struct.pack("<I", version),
           struct.pack("<Q", len(tensors) if tensor_count is None else tensor_count),
           struct.pack("<Q", len(meta) if kv_count is None else kv_count)]
    for key, vtype, packed in meta:
        out += [gstr(key), struct.pack("<I", vtype), packed]
    pos, data = 0, []
    for i, (name, shape, type_id, raw) in enumerate(tensors):
        ne = list(reversed(shape)) if dims is None or dims[i] is None else dims[i]
        off = pos if offsets is None or offsets[i] is None else offsets[i]
        tid = type_id if types is None or types[i] is None else types[i]
        out += [gstr(name), struct.pack("<I", len(ne)), *[struct.pack("<Q", d) for d in ne],
                struct.pack("<I", tid), struct.pack("<Q", off)]
        pad = -len(raw) % align
        data.append(raw + bytes(pad))
        pos += len(raw) + pad
    head = b"".join(out)
    return head + bytes(-len(head) % align) + b"".join(data)


def plain(name: str, array: np.ndarray, type_id: int):
    return name, array.shape, type_id, np.ascontiguousarray(array).tobytes()


def blocks_tensor(name: str, shape: tuple[int, ...], type_id: int, blocks: np.ndarray):
    t = TYPES[type_id]
    assert blocks.size == int(np.prod(shape)) // t.block * t.size
    return name, shape, type_id, blocks.tobytes()
