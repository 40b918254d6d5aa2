"""Sign constraints on weights, imposed by projection (``clamp``) or reparametrisation (``reparam``).

Configurations, for every weight matrix (``Linear``/``Conv2d`` weights; biases too when
``biases`` is set; normalisation parameters stay free):

* ``free``: no constraint;
* ``nonneg`` / ``nonpos``: every value >= 0 / <= 0;
* ``fixed_sign``: each value keeps the sign it was initialised with, its magnitude is learned;
* ``dale``: each unit is excitatory or inhibitory (Dale's principle): all outgoing weights of
  an input unit (one column of a matrix, one input channel of a convolution) share a sign,
  positive with probability ``EXCITATORY`` (drawn from the run's seed).

Constrained values start at ``sign * |w0|`` where ``w0`` is PyTorch's default initialisation.
``clamp`` trains ``w`` and after every optimiser step sets the values on the wrong side to 0;
``reparam`` trains ``v`` with ``w = sign * softplus(v)`` (``v`` starts at softplus⁻¹(|w0|)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONFIGS = ("free", "nonneg", "nonpos", "fixed_sign", "dale")
METHODS = ("clamp", "reparam")
EXCITATORY = 0.8
_TINY = 1e-6


def is_matrix(name: str, param: torch.Tensor) -> bool:
    return name.endswith("weight") and param.dim() >= 2


def _signs(config: str, name: str, w0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """+1 / -1 per value: the side each value must stay on."""
    if config == "nonneg":
        return torch.ones_like(w0)
    if config == "nonpos":
        return -torch.ones_like(w0)
    if config == "dale" and w0.dim() >= 2:
        unit = torch.rand(w0.shape[1], generator=gen) < EXCITATORY
        shape = [1, w0.shape[1]] + [1] * (w0.dim() - 2)
        return torch.where(unit, 1.0, -1.0).reshape(shape).expand_as(w0).clone()
    return torch.where(w0 < 0, -1.0, 1.0)  # fixed_sign, and a bias under dale keeps its initial sign


class Constraint:
    """The sign constraint of one run: builds the trained tensors and maps them to the network's weights."""

    def __init__(self, config: str = "free", method: str = "clamp", biases: bool = False):
        self.config, self.method, self.biases = config, method if config != "free" else "none", biases
        self.signs: dict[str, torch.Tensor] = {}

    def applies(self, name: str, param: torch.Tensor) -> bool:
        return self.config != "free" and (is_matrix(name, param) or (self.biases and name.endswith("bias")))

    def attach(self, model: torch.nn.Module, gen: torch.Generator) -> None:
        """Put each constrained parameter on its allowed side (``reparam``: replace it by ``v``)."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not self.applies(name, p):
                    continue
                s = self.signs[name] = _signs(self.config, name, p.detach().clone(), gen)
                mag = p.abs().clamp_min(_TINY)
                p.copy_(torch.log(torch.expm1(mag.double())).float() if self.method == "reparam" else s * p.abs())

    def params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The network's effective parameters (differentiable in the trained ones)."""
        out = {}
        for name, p in model.named_parameters():
            out[name] = self.signs[name] * F.softplus(p) if self.method == "reparam" and name in self.signs else p
        return out

    def project(self, model: torch.nn.Module) -> None:
        """After an optimiser step (``clamp``): values on the wrong side become 0."""
        if self.method != "clamp":
            return
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in self.signs:
                    s = self.signs[name]
                    p.copy_(s * (s * p).clamp_min(0.0))

    def state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The effective weights and the buffers, as a plain state dict of contiguous tensors."""
        with torch.no_grad():
            sd = {k: v.detach().clone().contiguous() for k, v in self.params(model).items()}
            sd.update({k: v.detach().clone().contiguous() for k, v in model.named_buffers()})
        return sd
