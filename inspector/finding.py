"""Findings: typed facts about a checkpoint that a user auditing it should see.

A :class:`Finding` says what (``type``, one of ``FINDING_TYPES``), about what (``subject``: the
tensor, layer or pickle global), how serious (``severity``) and in words (``detail``), with the
figures some types carry in ``data``. Each type has one constructor here; loaders (Lambda layers,
custom objects, pickle scans) and the table stage (NaN/Inf, zero, tied, dead-ReLU, outliers)
build findings only through them. On the ground floor, so that every floor can.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITIES = ("error", "warning", "info")

# Every finding type: (severity, what it means). ``winspect audit --fail-on`` accepts exactly these names.
FINDING_KINDS = {
    "nan": ("error", "NaN values in a tensor"),
    "inf": ("error", "infinite values in a tensor"),
    "zero": ("warning", "a learned tensor whose values are all zero"),
    "tied": ("info", "a tensor sharing storage with another"),
    "dead_relu": ("warning", "units that never activate (dead-ReLU candidates)"),
    "outlier": ("info", "a layer whose weight statistics are far from the other layers of its kind"),
    "lambda": ("warning", "a Keras Lambda layer or Python lambda (code that runs when the model is loaded)"),
    "custom_object": ("warning", "a Keras layer or object of a custom class"),
    "unsafe": ("error", "a pickle that names dangerous globals, or an archive with duplicate members (nothing "
                        "was executed)"),
    "scan_incomplete": ("error", "a file whose pickles could not all be scanned (bounds reached, unreadable "
                                 "members)"),
    "alpha": ("warning", "a weight whose spectral power-law exponent alpha is < 2 or > 6 (needs --spectral)"),
}
FINDING_TYPES = {name: meaning for name, (_, meaning) in FINDING_KINDS.items()}
DEFAULT_FAIL_ON = ("nan", "inf", "unsafe", "scan_incomplete")


@dataclass(frozen=True)
class Finding:
    type: str
    subject: str  # the tensor, layer or pickle global the finding is about
    severity: str
    detail: str
    data: dict = field(default_factory=dict, compare=False)  # figures of some types (outlier z, pickle class)

    def to_dict(self) -> dict:
        """The JSON form: type, subject, severity, detail, then the type's figures."""
        return {"type": self.type, "subject": self.subject, "severity": self.severity, "detail": self.detail,
                **self.data}


def finding(type_: str, subject: str, detail: str, **data) -> Finding:
    """A finding of a known type, with that type's severity."""
    return Finding(type_, subject, FINDING_KINDS[type_][0], detail, data)


def nan_finding(tensor: str, count: int) -> Finding:
    return finding("nan", tensor, f"{count} NaN values")


def inf_finding(tensor: str, count: int) -> Finding:
    return finding("inf", tensor, f"{count} infinite values")


def zero_finding(tensor: str, kind: str | None = None) -> Finding:
    """``kind``: the tensor's kind (bias, norm, ...), which says whether all zeros are usual."""
    return finding("zero", tensor, "every value is zero", **({"kind": kind} if kind else {}))


def tied_finding(tensor: str, tied_to: str) -> Finding:
    return finding("tied", tensor, f"shares storage with {tied_to}")


def dead_relu_finding(tensor: str, candidates: int, units: int) -> Finding:
    return finding("dead_relu", tensor, f"{candidates} of {units} units have no positive weight and no positive "
                   "bias: a ReLU after them never opens on non-negative inputs")


def outlier_finding(layer: str, group: str, n: int, statistic: str, how: str, z: float, **figures) -> Finding:
    """``figures``: what else says how surprising the layer is (``p_value``, the 95 % ``interval``)."""
    detail = f"{statistic} far from the other {n - 1} {group} layers: {how} (robust z {z:+.1f})"
    return finding("outlier", layer, detail, statistic=statistic, z=float(z), **figures)


def lambda_finding(layer: str, code_kind: str) -> Finding:
    return finding("lambda", layer, f"Lambda layer stores Python code ({code_kind}); winspect never runs it")


def python_lambda_finding(layer: str, key: str) -> Finding:
    """A Python lambda Keras stored as marshalled bytecode (``__lambda__``: an activation, a loss, ...)."""
    at = f" in {key!r}" if key else ""
    return finding("lambda", layer, f"Python lambda stored as marshalled bytecode{at}; winspect never runs it")


def custom_object_finding(layer: str, why: str) -> Finding:
    return finding("custom_object", layer, f"{why} in the config; winspect does not import or run it")


def unsafe_finding(global_name: str, klass: str) -> Finding:
    return finding("unsafe", global_name, f"pickle imports {klass} global {global_name}", **{"class": klass})


def duplicate_member_finding(member: str) -> Finding:
    return finding("unsafe", member, "the archive holds several members of this name: readers disagree on which "
                   "one counts", **{"class": "duplicate"})


def scan_incomplete_finding(source: str, why: str) -> Finding:
    return finding("scan_incomplete", source, why)


ALPHA_LOW, ALPHA_HIGH = 2.0, 6.0  # WeightWatcher's bounds of a well-trained layer's alpha


def alpha_finding(tensor: str, alpha: float) -> Finding:
    why = (f"below {ALPHA_LOW:g}: a very heavy-tailed spectrum (over-fit, or over-regularised)" if alpha < ALPHA_LOW
           else f"above {ALPHA_HIGH:g}: a spectrum close to random (under-trained)")
    return finding("alpha", tensor, f"power-law exponent alpha {alpha:.2f} is {why}", alpha=float(alpha))
