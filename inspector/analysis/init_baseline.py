"""Initialisation baseline: how a weight tensor's std compares with common initialisations.

The fans follow ``torch.nn.init._calculate_fan_in_and_fan_out`` for PyTorch layouts
(``(out, in, *kernel)``, and ConvTranspose's ``(in, out, *kernel)``, which PyTorch
initialises with the same formula on the stored shape): receptive field
``rf = prod(shape[2:])``, ``fan_in = shape[1] * rf``, ``fan_out = shape[0] * rf``. For records in
the Keras layout (``record.layout == "keras"``: dense ``(in, out)``, conv ``(kh, kw, in, out)``,
and transposed and depthwise kernels, on their stored shape) as Keras computes them:
``rf = prod(shape[:-2])``, ``fan_in = shape[-2] * rf``, ``fan_out = shape[-1] * rf``; the same for
other records whose output is on the last axis (``(in, out)`` matrices).

Reference stds:

* ``kaiming_uniform``: PyTorch's default for Linear and Conv layers, kaiming-uniform with
  ``a = sqrt(5)``: bound ``1 / sqrt(fan_in)``, std ``bound / sqrt(3)``. For PyTorch's recurrent
  layers (RNN/LSTM/GRU and their cells) the column holds PyTorch's default for them instead,
  ``U(-1/sqrt(hidden), 1/sqrt(hidden))`` for every weight: std ``1 / sqrt(3 hidden)``;
* ``kaiming_normal``: He initialisation with the ReLU gain, ``sqrt(2 / fan_in)``;
* ``xavier``: Glorot, ``sqrt(2 / (fan_in + fan_out))`` (the std of both its uniform and normal forms).

The columns are the tensor's std (population, finite values) divided by each reference: a
ratio near 1 means the layer is still near that initialisation's scale. This needs only the
record's shape and the std the one-pass analyzer already computed, so it is a function of
the record and its statistics rather than a second reduction over the values.
"""

from __future__ import annotations

import math

from ..kinds import recurrent_hidden


def fans(shape: tuple[int, ...], out_axis: int | None, layout: str = "pytorch") -> tuple[int, int] | None:
    """(fan_in, fan_out) of a weight tensor, or None when it has no output axis or fewer than 2 dims."""
    nd = len(shape)
    if out_axis is None or nd < 2:
        return None
    if layout == "keras" or out_axis == nd - 1:  # (..., in, out), as Keras computes fans
        rf = math.prod(shape[:-2])
        return shape[-2] * rf, shape[-1] * rf
    rf = math.prod(shape[2:])
    return shape[1] * rf, shape[0] * rf


def reference_stds(fan_in: int, fan_out: int) -> dict[str, float]:
    """Std of each reference initialisation for these fans (NaN where a fan is zero)."""
    if fan_in <= 0 or fan_out <= 0:
        return {"kaiming_uniform": math.nan, "kaiming_normal": math.nan, "xavier": math.nan}
    return {
        "kaiming_uniform": 1.0 / math.sqrt(fan_in) / math.sqrt(3.0),
        "kaiming_normal": math.sqrt(2.0 / fan_in),
        "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
    }


def baseline_columns(record, stats: dict) -> dict:
    """fan_in, fan_out and std_vs_<init> columns for a weight record (empty for other kinds)."""
    if record.kind != "weight":
        return {}
    f = fans(record.shape, record.out_axis, record.layout)
    if f is None:
        return {}
    refs = reference_stds(*f)
    hidden = recurrent_hidden(record.module_type, record.name, record.shape)
    if hidden:  # PyTorch's recurrent layers: U(-1/sqrt(hidden), 1/sqrt(hidden))
        refs["kaiming_uniform"] = 1.0 / math.sqrt(3.0 * hidden)
    std = stats.get("std", math.nan)
    return {"fan_in": f[0], "fan_out": f[1], **{f"std_vs_{k}": std / v for k, v in refs.items()}}
