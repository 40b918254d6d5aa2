"""What a tensor is, from its name, its shape and its neighbours, when the source gives no module types.

Loaders without module types (safetensors, PyTorch state dicts) call :func:`classify` on the
whole list of (name, shape) pairs before any data is read; everything that decides a kind,
an output axis or a guessed module type from names lives here.

* Kinds: ``weight``, ``bias``, ``norm``, ``buffer``, ``other`` (see :mod:`inspector.records`).
* Recurrent layers (PyTorch ``nn.RNN/LSTM/GRU`` and their cells): ``weight_ih_l0``,
  ``weight_hh_l0``, ``weight_hr_l0`` (LSTM projections), their ``_reverse`` variants and the
  cells' ``weight_ih`` / ``weight_hh`` are weights, ``bias_ih*`` / ``bias_hh*`` biases. Their
  output axis is 0, which holds the gates stacked (LSTM 4 x hidden, GRU 3 x, RNN 1 x), so
  per-unit figures are per gate row. The module type (``LSTM``, ``GRUCell``, ...) is read from
  the gate count, ``weight_hh.shape[0] / hidden``.
* Embedding tables (rows are tokens, not units) have no output axis. Without a module type a
  2-D ``*embed*`` weight is a table only when its layer has no bias: a Linear projection named
  ``bond_embedding`` keeps its bias and its output axis.
* A one-element ``x_weight`` next to an ``x_bias`` (a learned scalar scale and shift) gives
  both the same kind, ``other``.

Also here: the natural order of names (``layers.2`` before ``layers.10``) and the step number
a checkpoint's name carries (``epoch20.pt`` -> 20).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .records import layer_of

_BUFFER_SUFFIXES = (
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "moving_mean",
    "moving_variance",
    "position_ids",
    "inv_freq",
    "attn.bias",
    "attn.masked_bias",
)
_NORM_HINTS = ("norm", "bn", "ln_", ".ln", "layernorm", "batchnorm", "groupnorm", "rmsnorm")
_EMBEDDING_HINTS = ("embed", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type_embeddings")
RECURRENT_PARAM = re.compile(r"^(weight|bias)_(ih|hh|hr)(_l\d+)?(_reverse)?$")
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
RECURRENT_TYPES = {*RECURRENT_GATES, *(f"{t}Cell" for t in RECURRENT_GATES)}


@dataclass(frozen=True)
class Classified:
    """What :func:`classify` decided for one tensor."""

    kind: str
    out_axis: int | None = None
    module_type: str | None = None


def leaf_of(name: str) -> str:
    """The last component of a tensor name (``.`` or ``/`` separated)."""
    return re.split(r"[./]", name)[-1]


def classify(entries: list[tuple[str, tuple[int, ...]]]) -> dict[str, Classified]:
    """Kind, output axis and guessed module type of every (name, shape), from the names and shapes only."""
    shapes = {name: tuple(shape) for name, shape in entries}
    kinds = infer_kinds(entries)
    layers_with_bias = {layer_of(n) for n in shapes if leaf_of(n) == "bias"}
    out = {}
    for name, shape in shapes.items():
        kind = kinds[name]
        rnn = recurrent_type(name, shapes)
        if rnn:
            out[name] = Classified(kind, 0 if kind == "weight" else None, rnn)
        else:
            out[name] = Classified(kind, default_out_axis(kind, shape, name, layer_of(name) in layers_with_bias))
    return out


def infer_kinds(entries: list[tuple[str, tuple[int, ...]]]) -> dict[str, str]:
    """Kinds for (name, shape) pairs when no module types are known.

    Works on the whole list of names first (no tensor data), so a layer whose ``weight`` is
    1-D (a normalisation scale) also marks its ``bias`` as ``norm``.
    """
    norm_layers = set()
    for name, shape in entries:
        leaf = name.rsplit(".", 1)[-1]
        lower = name.lower()
        if leaf in ("weight", "scale", "gamma") and len(shape) == 1:
            norm_layers.add(layer_of(name))
        elif leaf in ("running_mean", "running_var"):
            norm_layers.add(layer_of(name))
        elif any(h in lower for h in _NORM_HINTS) and leaf in ("weight", "bias", "beta", "gamma"):
            norm_layers.add(layer_of(name))
    kinds = {name: _kind_of(name, tuple(shape), norm_layers) for name, shape in entries}
    shapes = dict(entries)
    for name in kinds:  # x_weight scalar + x_bias: one learned scale and shift, one kind
        if name.endswith("_bias") and kinds.get(name[: -len("bias")] + "weight") == "other":
            if math.prod(shapes[name[: -len("bias")] + "weight"]) == 1:
                kinds[name] = "other"
    return kinds


def _kind_of(name: str, shape: tuple[int, ...], norm_layers: set[str]) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith(_BUFFER_SUFFIXES):
        return "buffer"
    if layer_of(name) in norm_layers and leaf in ("weight", "bias", "scale", "gamma", "beta"):
        return "norm"
    rnn = RECURRENT_PARAM.match(leaf)
    if rnn:
        return "weight" if rnn.group(1) == "weight" and len(shape) >= 2 else "bias" if rnn.group(1) == "bias" else "other"
    if leaf == "bias" or leaf.endswith("_bias"):
        return "bias"
    if (leaf == "weight" or leaf.endswith("_weight") or leaf == "kernel") and len(shape) >= 2:
        return "weight"
    return "other"


def default_out_axis(kind: str, shape: tuple[int, ...], name: str = "", has_bias: bool = False) -> int | None:
    """PyTorch convention: linear (out, in) and conv (out, in, kh, kw) have outputs on axis 0.

    Embedding tables (rows are tokens, not units) have none: a weight whose name says
    ``embed`` (``wte``, ...) is one unless it is 2-D and its layer has a bias, as a Linear has.
    """
    if kind != "weight" or len(shape) < 2:
        return None
    if any(h in name.lower() for h in _EMBEDDING_HINTS) and not (has_bias and len(shape) == 2):
        return None
    return 0


def recurrent_type(name: str, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """``LSTM`` / ``GRU`` / ``RNN`` (``...Cell`` for cells) for a recurrent parameter, from its layer's
    ``weight_hh`` shape; ``RNN`` when the gate count cannot be read; None for other names."""
    m = RECURRENT_PARAM.match(leaf_of(name))
    if not m:
        return None
    cell = m.group(3) is None
    prefix = name[: len(name) - len(leaf_of(name))]
    suffix = (m.group(3) or "") + (m.group(4) or "")
    hh = shapes.get(f"{prefix}weight_hh{suffix}", ())
    hr = shapes.get(f"{prefix}weight_hr{suffix}", ())
    hidden = hr[1] if len(hr) == 2 else hh[1] if len(hh) == 2 else 0
    gates = hh[0] // hidden if hidden and len(hh) == 2 and hh[0] % hidden == 0 else 0
    base = {g: t for t, g in RECURRENT_GATES.items()}.get(gates)
    if base is None:
        return None if len(hh) != 2 else "RNN" + ("Cell" if cell else "")
    return base + ("Cell" if cell else "")


def recurrent_hidden(module_type: str | None, name: str, shape: tuple[int, ...]) -> int | None:
    """The hidden size of a PyTorch recurrent weight (``weight_ih``: (gates x hidden, in)), or None."""
    if module_type not in RECURRENT_TYPES or len(shape) != 2 or not RECURRENT_PARAM.match(leaf_of(name)):
        return None
    if leaf_of(name).startswith("weight_hr"):
        return shape[1]
    gates = RECURRENT_GATES[module_type.removesuffix("Cell")]
    return shape[0] // gates if shape[0] % gates == 0 else None


# --- order ----------------------------------------------------------------------------------

def natural_key(s: str):
    """Sort key putting numbers in numeric order: ``layers.2`` before ``layers.10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", s) if t]


_STEP_NUMBER = re.compile(r"\d+")


def step_from_name(path: str, pattern: str | None = None) -> int | None:
    """The training step a checkpoint's name carries: the last number in its file name (without
    the suffix), or the last number in the first group (else the whole match) of ``pattern``
    searched in the path."""
    if pattern:
        m = re.search(pattern, path)
        if not m:
            return None
        numbers = _STEP_NUMBER.findall((m.group(1) if m.groups() else m.group(0)) or "")
        return int(numbers[-1]) if numbers else None
    base = re.split(r"[\\/]", path.rstrip("/\\"))[-1]
    stem = base.split(".", 1)[0] if not base.startswith(".") else base
    numbers = _STEP_NUMBER.findall(stem) or _STEP_NUMBER.findall(base)
    return int(numbers[-1]) if numbers else None
