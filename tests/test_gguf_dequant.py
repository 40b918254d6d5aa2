"""The GGUF dequantization kernels, compiled and numpy, against gguf-py's ``gguf.quants.dequantize``.

Random blocks (every byte random) with bounded float16 scales, plus awkward scales (zero, -0.0,
subnormal, the largest float16), decoded by both paths and compared value for value: at most
1 ulp of float32 apart (in practice the same bits).
"""

from __future__ import annotations

import numpy as np
import pytest

from inspector.loaders import dequant
from inspector.loaders.dequant import DECODED, TYPES, dequantize

gguf = pytest.importorskip("gguf")

# byte offsets of each type's float16 scales (d, and m / dmin where the type has one)
SCALE_OFFSETS = {2: [0], 3: [0, 2], 6: [0], 7: [0, 2], 8: [0], 10: [80, 82], 11: [108], 12: [0, 2], 13: [0, 2],
                 14: [208], 20: [0], 23: [0]}
AWKWARD_SCALES = [0.0, -0.0, 6e-8, -1e-5, 65504.0, -2.0]
PATHS = ["native", "numpy"]


def random_blocks(type_id: int, n: int, seed: int = 0) -> np.ndarray:
    """n random blocks of a type, their scales bounded (|d| about 0.05, a few awkward ones)."""
    t = TYPES[type_id]
    rng = np.random.default_rng(seed + type_id)
    blocks = rng.integers(0, 256, size=(n, t.size), dtype=np.uint8)
    for at in SCALE_OFFSETS[type_id]:
        d = (rng.standard_normal(n) * 0.05).astype(np.float16)
        k = min(n, len(AWKWARD_SCALES))
        d[:k] = AWKWARD_SCALES[:k]
        blocks[:, at : at + 2] = d.view(np.uint8).reshape(n, 2)
    return blocks


def reference(type_id: int, blocks: np.ndarray) -> np.ndarray:
    return np.asarray(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(type_id)), np.float32).reshape(-1)


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in float32 units in the last place (same-sign values; 0 and -0 are 0 apart)."""
    def key(x):
        i = x.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return int(np.abs(key(a) - key(b)).max()) if a.size else 0


def use_native(path: str) -> bool:
    if path == "native" and dequant.native is None:
        pytest.skip("compiled kernels not built (python setup.py build_ext --inplace)")
    return path == "native"


def test_every_named_kernel_is_covered():
    names = {TYPES[i].name for i in DECODED}
    assert names == {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
                     "IQ4_XS"}
    assert set(SCALE_OFFSETS) == set(DECODED)
    if dequant.native is not None:
        assert all(dequant.native.block_shape(i) == (TYPES[i].block, TYPES[i].size) for i in DECODED)
        assert dequant.native.block_shape(15) is None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("type_id", sorted(DECODED), ids=lambda i: TYPES[i].name)
def test_kernel_matches_gguf_py(type_id, path):
    blocks = random_blocks(type_id, 700)
    got = dequantize(type_id, blocks.tobytes(), use_native=use_native(path))
    want = reference(type_id, blocks)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.isfinite(want).all()
    assert ulps(got, want) <= 1
    assert np.array_equal(np.signbit(got[got == 0]), np.signbit(want[want == 0]))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("type_id", sorted(DECODED), ids=lambda i: TYPES[i].name)
def test_kernel_writes_into_a_given_buffer(type_id, path):
    t = TYPES[type_id]
    blocks = random_blocks(type_id, 3, seed=7)
    out = np.full(5 * t.block, 123.0, dtype=np.float32)
    got = dequantize(type_id, memoryview(blocks.tobytes()), out, use_native=use_native(path))
    assert got.base is out or got is out
    assert ulps(out[: 3 * t.block], reference(type_id, blocks)) <= 1
    assert (out[3 * t.block :] == 123.0).all()
    assert dequantize(type_id, b"", use_native=use_native(path)).size == 0


@pytest.mark.parametrize("path", PATHS)
def test_partial_blocks_are_refused(path):
    with pytest.raises(ValueError):
        dequantize(12, bytes(145), use_native=use_native(path))


def test_native_refuses_a_short_output_and_unknown_types():
    if dequant.native is None:
        pytest.skip("compiled kernels not built")
    with pytest.raises(ValueError):
        dequant.native.dequantize(12, bytes(144), np.empty(255, np.float32))
    with pytest.raises(ValueError):
        dequant.native.dequantize(15, bytes(292), np.empty(256, np.float32))


def test_gguf_py_decodes_the_other_types():
    for name in ("IQ2_XXS", "IQ3_S", "TQ2_0", "MXFP4"):
        type_id = int(gguf.GGMLQuantizationType[name])
        decode = dequant.gguf_decoder(type_id)
        assert decode is not None, name
        blocks = np.random.default_rng(1).integers(0, 256, size=(4, TYPES[type_id].size), dtype=np.uint8)
        assert np.array_equal(decode(blocks.tobytes()), reference(type_id, blocks), equal_nan=True)
    assert dequant.gguf_decoder(9) is None  # Q8_1: neither decodes it
