"""torchvision model names: ``winspect resnet18 [--weights DEFAULT|IMAGENET1K_V1|none]``.

Pretrained weights resolve through torchvision's weights API and torch hub's cache
(``$TORCH_HOME/hub/checkpoints/<file>``); they are downloaded only when not cached
and ``WINSPECT_OFFLINE`` is unset. The checkpoint is read like any PyTorch file, by
winspect's own restricted reader. Every tensor's kind and output axis come from the
module that owns it in the real architecture (built on the ``meta`` device: no memory,
no initialisation). Model names need torch and torchvision: the optional ``torch``
extra (``pip install "winspect[torch]"``); files never do.
"""

from __future__ import annotations

import difflib
import os
import warnings
from functools import lru_cache
from pathlib import Path

from ..errors import InspectorError, SourceNotFound, UnsupportedSource, WeightsUnavailable, first_line
from . import Loader, LoadOptions, OpenedSource, register
from .torch_pickle import StateDictSource, open_state_dict_file

INSTALL_EXTRA = 'pip install "winspect[torch]"'


class MissingExtra(InspectorError):
    """A model name was given but torch / torchvision (the optional ``torch`` extra) is not installed."""


@lru_cache(maxsize=1)
def model_names() -> tuple[str, ...]:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise MissingExtra("torchvision model names need the optional torch extra (torch and torchvision are "
                           f"not installed); install it with: {INSTALL_EXTRA}") from None
    return tuple(tvm.list_models())


def cache_path(url: str) -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def module_info(model) -> dict[str, dict]:
    """kind, output axis and module type for every parameter and buffer of a model."""
    info = {}
    for prefix, module in model.named_modules():
        mtype = type(module).__name__
        for pname, p in list(module._parameters.items()) + list(module._buffers.items()):
            if p is None:
                continue
            is_buffer = pname in module._buffers
            full = f"{prefix}.{pname}" if prefix else pname
            kind = classify(module, pname, p.dim(), is_buffer)
            info[full] = {"kind": kind, "out_axis": out_axis(module, pname, kind), "module_type": mtype}
    return info


def classify(module, pname: str, ndim: int, is_buffer: bool) -> str:
    import torch.nn as nn

    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    is_norm = isinstance(module, norm_types) or "Norm" in type(module).__name__
    if is_norm and pname in ("weight", "bias"):
        return "norm"  # includes FrozenBatchNorm2d, whose scale/shift are buffers
    if is_buffer:
        return "buffer"
    if pname == "bias" or pname.startswith("bias_") or pname.endswith("_bias"):
        return "bias"
    weight_types = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.Embedding, nn.EmbeddingBag,
                    nn.MultiheadAttention, nn.RNNBase)
    if isinstance(module, weight_types) and ndim >= 2:
        return "weight"
    if "weight" in pname and ndim >= 2:
        return "weight"
    return "other"


def out_axis(module, pname: str, kind: str) -> int | None:
    import torch.nn as nn

    if kind != "weight" or isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return None
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 1  # (in, out / groups, kh, kw)
    return 0


def _suggest(name: str) -> str:
    names = model_names()
    close = difflib.get_close_matches(name.lower(), names, n=5, cutoff=0.6)
    if not close:
        close = [n for n in names if n.startswith(name.lower()[:4])][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{name}: not a file, directory or torchvision model name{hint} (see torchvision.models.list_models())"


def _weights_member(name: str, weights: str):
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    members = [m for m in enum.__members__ if m != "DEFAULT"]
    by_upper = {m.upper(): m for m in enum.__members__}  # model names ignore case; so do their weights
    try:
        return enum[by_upper[weights.upper()]]
    except KeyError:
        raise SourceNotFound(
            f"{name}: unknown --weights {weights!r}; choose DEFAULT, none, or one of {', '.join(members)}"
        ) from None


def _build(name: str, device: str):
    """The architecture with no weights at all (no pretrained backbone either)."""
    import inspect as pyinspect

    import torch
    import torchvision.models as tvm

    kwargs = {"weights": None}
    if "weights_backbone" in pyinspect.signature(tvm.get_model_builder(name)).parameters:
        kwargs["weights_backbone"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device(device):
            return tvm.get_model(name, **kwargs)


def _module_info_for(name: str) -> dict:
    """Module types of every tensor, from the architecture built on the meta device (CPU if it must)."""
    for device in ("meta", "cpu"):
        try:
            return module_info(_build(name, device))
        except Exception:  # some constructors compute with tensors and cannot run on meta
            continue
    return {}


DOWNLOAD_TIMEOUT = 30  # seconds without data before a download is given up


def download(url: str, path: Path) -> None:
    """Download ``url`` into ``path`` (through a temporary file beside it), with a socket timeout of
    its own: the process-wide default timeout is left alone."""
    import shutil
    import tempfile
    import urllib.request

    path.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as r:  # noqa: S310 - torchvision's own URLs
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".part-", delete=False) as f:
            try:
                shutil.copyfileobj(r, f, 1 << 20)
            except BaseException:
                f.close()
                os.unlink(f.name)
                raise
    os.replace(f.name, path)


def _fetch(name: str, member) -> Path:
    path = cache_path(member.url)
    if path.is_file():
        return path
    why = "WINSPECT_OFFLINE is set"
    if not os.environ.get("WINSPECT_OFFLINE"):
        try:
            download(member.url, path)
            return path
        except Exception as e:  # any network failure: report it, don't crash
            why = f"download failed: {first_line(e, 120)}"
    raise WeightsUnavailable(
        f"{name}: pretrained weights {member} are not cached at {path} and could not be downloaded ({why}); "
        f"use --weights none for an untrained network, or pass a local checkpoint file"
    )


@register
class TorchvisionLoader(Loader):
    name = "torchvision"
    title = "torchvision model names (resnet18)"
    order = 40
    takes_names = True

    @classmethod
    def accepts_name(cls, name: str) -> bool:
        try:
            return name.lower() in model_names()
        except MissingExtra:
            return False

    @classmethod
    def open(cls, source: str, options: LoadOptions) -> OpenedSource:
        name = source.lower()
        try:
            names = model_names()
        except MissingExtra as e:
            raise MissingExtra(f"{source}: not a file or directory; {e}") from None
        if name not in names:
            raise SourceNotFound(_suggest(source))
        weights = (options.weights or "DEFAULT").strip()
        if weights.lower() == "none":
            return cls._untrained(name)
        member = _weights_member(name, weights)
        path = _fetch(name, member)
        src = open_state_dict_file(source, path, _module_info_for(name), fmt="torchvision")
        src.meta.update(
            model=name, weights=str(member), trained=True, checkpoint=str(path),
            weights_meta={k: v for k, v in member.meta.items() if isinstance(v, (str, int, float))},
        )
        src.note(f"torchvision {name} with pretrained weights {member} from {path}")
        return src

    @classmethod
    def _untrained(cls, name: str) -> OpenedSource:
        import torch

        try:
            with torch.random.fork_rng(devices=[]):  # seed 0 for the build, the caller's RNG left as it was
                torch.manual_seed(0)
                model = _build(name, "cpu")
        except Exception as e:
            raise UnsupportedSource(f"{name}: torchvision could not build the model ({e})") from None
        sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        src = StateDictSource(name, "torchvision", sd, module_info(model))
        src.meta.update(model=name, weights="none", trained=False)
        src.note(f"UNTRAINED: {name} freshly initialised by torchvision (--weights none, seed 0); no pretrained weights")
        return src
