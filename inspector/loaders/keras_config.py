"""Keras model configs read as plain JSON: layer names and classes, variable names, kinds,
output axes, and findings (Lambda layers, custom objects). Nothing is deserialised or run.

Keras 3 stores a container's layers in its weights file under ``layers/<key>``, where the key
is the snake-cased class name made unique in layer order (``conv2d``, ``conv2d_1``, ...);
:func:`config_tree` rebuilds those keys from ``config.json`` so every group gets the user's
layer name and class back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..finding import Finding, custom_object_finding, finding, lambda_finding, python_lambda_finding
from .keras_names import KERAS_NAMES

# Per class: the variables Keras creates, in creation order, as (name, config flag, default).
# A variable whose flag is not None exists only when ``config.get(flag, default)`` is truthy.
_KERNEL_BIAS = (("kernel", None, True), ("bias", "use_bias", True))
_SCALE_SHIFT = (("gamma", "scale", True), ("beta", "center", True))
_RNN_CELL = (("kernel", None, True), ("recurrent_kernel", None, True), ("bias", "use_bias", True))
VAR_NAMES: dict[str, tuple] = {
    **{c: _KERNEL_BIAS for c in (
        "Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
        "DepthwiseConv1D", "DepthwiseConv2D",
    )},
    "EinsumDense": (("kernel", None, True), ("bias", "bias_axes", None)),
    "SeparableConv1D": (("depthwise_kernel", None, True), ("pointwise_kernel", None, True), ("bias", "use_bias", True)),
    "SeparableConv2D": (("depthwise_kernel", None, True), ("pointwise_kernel", None, True), ("bias", "use_bias", True)),
    "BatchNormalization": (*_SCALE_SHIFT, ("moving_mean", None, True), ("moving_variance", None, True)),
    "LayerNormalization": _SCALE_SHIFT,
    "GroupNormalization": _SCALE_SHIFT,
    "Embedding": (("embeddings", None, True),),
    "LSTMCell": _RNN_CELL,
    "GRUCell": _RNN_CELL,
    "SimpleRNNCell": _RNN_CELL,
    "PReLU": (("alpha", None, True),),
}
RNN_LAYERS = {"LSTM": "LSTMCell", "GRU": "GRUCell", "SimpleRNN": "SimpleRNNCell"}

WEIGHT_VARS = {"kernel", "depthwise_kernel", "pointwise_kernel", "embeddings", "recurrent_kernel"}
NORM_VARS = {"gamma", "beta"}
BUFFER_VARS = {"moving_mean", "moving_variance"}


def snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: the key a class gets in a Keras 3 weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


_CLASS_OF_SNAKE = {snake_case(c): c for c in (*VAR_NAMES, *RNN_LAYERS)}


def class_of_key(key: str) -> str | None:
    """The class behind a Keras 3 group key (``batch_normalization_1`` -> BatchNormalization), if known."""
    return _CLASS_OF_SNAKE.get(re.sub(r"_\d+$", "", key))


def var_names(cls: str | None, cfg: dict | None, count: int) -> list[str] | None:
    """Names of a layer's ``count`` variables, from its class and config; None when unsure.

    Without a config, optional variables are resolved by count; an ambiguous count
    (a BatchNormalization with 3 variables) gives None and the ``vars/N`` names stay.
    """
    spec = VAR_NAMES.get(cls or "")
    if spec is None:
        return None
    if cfg is not None:
        names = [n for n, flag, default in spec if flag is None or cfg.get(flag, default)]
        return names if len(names) == count else None
    fits = []
    optional = [i for i, (_, flag, _) in enumerate(spec) if flag is not None]
    for mask in range(1 << len(optional)):
        dropped = {optional[j] for j in range(len(optional)) if mask >> j & 1}
        names = [n for i, (n, _, _) in enumerate(spec) if i not in dropped]
        if len(names) == count:
            fits.append(names)
    return fits[0] if len(fits) == 1 else None


def kind_of(var: str, ndim: int) -> str:
    """weight / bias / norm / buffer / other for a Keras variable name (its last component)."""
    if var in WEIGHT_VARS:
        return "weight"
    if var == "bias" or var.endswith("_bias"):
        return "bias"
    if var in NORM_VARS:
        return "norm"
    if var in BUFFER_VARS:
        return "buffer"
    return "weight" if ndim >= 2 else "other"


def out_axis_of(kind: str, cls: str | None, var: str, ndim: int) -> int | None:
    """Axis of the output units of a Keras weight.

    Dense ``(in, out)`` and Conv ``(k..., in, out)`` kernels: the last axis. Transposed conv
    kernels ``(k..., out, in)``: the second-to-last. Depthwise kernels ``(k..., in, multiplier)``:
    the channel axis (second-to-last), since output channel ``c * multiplier + m`` belongs to input
    channel ``c``; with the usual multiplier 1 each slice is exactly one output unit.
    Embeddings ``(vocab, dim)``: axis 0, one row per token, as for PyTorch embeddings.
    """
    if kind != "weight" or ndim < 2:
        return None
    if var == "embeddings":
        return 0
    depthwise = var == "depthwise_kernel" or (var == "kernel" and (cls or "").startswith("DepthwiseConv"))
    if depthwise or (cls or "").endswith("Transpose"):
        return ndim - 2
    return ndim - 1


# --- config trees ---------------------------------------------------------------------------


@dataclass
class Node:
    """A layer in a model config: its name, class and config, and its sub-layers when it is a model."""

    name: str
    cls: str | None
    cfg: dict
    by_key: dict[str, "Node"] = field(default_factory=dict)  # Keras 3 weights-file keys
    by_name: dict[str, "Node"] = field(default_factory=dict)


def layer_list(entry: dict) -> list:
    """The layer configs of a model config entry (Functional/Sequential/Keras 2 list form)."""
    cfg = entry.get("config")
    if isinstance(cfg, list):  # Keras 2.0 Sequential
        return [x for x in cfg if isinstance(x, dict)]
    if isinstance(cfg, dict) and isinstance(cfg.get("layers"), list):
        return [x for x in cfg["layers"] if isinstance(x, dict)]
    return []


def entry_name(entry: dict) -> str:
    cfg = entry.get("config")
    name = cfg.get("name") if isinstance(cfg, dict) else None
    return str(name if name is not None else entry.get("name", ""))


def config_tree(entry: dict) -> Node:
    cls = entry.get("class_name")
    cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    node = Node(entry_name(entry), cls if isinstance(cls, str) else None, cfg)
    used: dict[str, int] = {}
    for sub in layer_list(entry):
        child = config_tree(sub)
        base = snake_case(child.cls or "")
        used[base] = used.get(base, -1) + 1
        node.by_key[base if used[base] == 0 else f"{base}_{used[base]}"] = child
        node.by_name.setdefault(child.name, child)
    return node




# --- findings -------------------------------------------------------------------------------


def _is_keras_module(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


def _custom(obj: dict) -> str | None:
    """Why a serialised object is custom code (None when it is a Keras built-in)."""
    cls, module, reg = obj.get("class_name"), obj.get("module"), obj.get("registered_name")
    foreign = isinstance(module, str) and not _is_keras_module(module)
    registered = [n for n in (reg, cls) if isinstance(n, str) and ">" in n and not n.startswith("keras>")]
    where = f" from module {module!r}" if isinstance(module, str) else ""
    if not (foreign or registered):
        if isinstance(module, str) and isinstance(cls, str) and cls not in KERAS_NAMES:
            return f"object {cls!r} claims Keras module {module!r}, which has no such name"
        return None
    name = f" registered as {registered[0]!r}" if registered else ""
    return f"custom object {cls!r}{where}{name}"


def _marshalled(value) -> bool:
    """A Keras-serialised Python function: base64 of marshalled bytecode (a code object starts 0xe3 or 0x63)."""
    first = value[0] if isinstance(value, list) and value else value
    return isinstance(first, str) and first[:2] in ("4w", "Yw") and len(first) > 16


def config_findings(entry: dict) -> list[Finding]:
    """Lambda layers, Python lambdas (``__lambda__``, marshalled functions) and custom objects anywhere
    in a model config: nested models, activations, ``compile_config`` included."""
    out: list[Finding] = []
    _walk_findings(entry, [], out, "")
    return list(dict.fromkeys(out))  # de-duplicated in linear time, in order


def _lambda_finding(obj: dict, where: str, key: str) -> Finding | None:
    if obj.get("class_name") == "Lambda":
        cfg = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        fn = cfg.get("function")
        kind = fn.get("class_name") if isinstance(fn, dict) else cfg.get("function_type", type(fn).__name__)
        return lambda_finding(where, kind)
    if obj.get("class_name") == "__lambda__" or (set(obj) == {"value"} and _marshalled(obj["value"])):
        return python_lambda_finding(where, key)
    return None


def _walk_findings(obj, path: list[str], out: list[Finding], key: str) -> None:
    if isinstance(obj, list):
        for item in obj:
            _walk_findings(item, path, out, key)
        return
    if not isinstance(obj, dict):
        return
    where = "/".join(path) or "(model)"
    for k in [k for k, v in obj.items() if v == "<lambda>"] if "class_name" not in obj else []:
        # Keras 2 writes a lambda given as activation= as its __name__ alone
        out.append(finding("lambda", where, f"{k} is an anonymous Python function ('<lambda>'): the file does "
                           "not hold it, and Keras cannot rebuild the layer without the code"))
    found = _lambda_finding(obj, where, key)
    if found:
        out.append(found)
        return
    why = _custom(obj) if "class_name" in obj else None
    if why:
        out.append(custom_object_finding(where, why))
    for k, value in obj.items():
        if k in ("layers", "config") and isinstance(value, list):  # a model's layers; Keras 2.0 Sequential
            for sub in value:
                _walk_findings(sub, path + [entry_name(sub)] if isinstance(sub, dict) else path, out, k)
        else:
            _walk_findings(value, path, out, k if k != "config" else key)
