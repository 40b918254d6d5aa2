"""``audit``: the findings of one source, and whether any of them should fail a CI gate.

A pickle naming dangerous globals is read like any other (nothing in it runs) and gives
``unsafe`` findings beside the tensor findings. A file that cannot be read but whose scan
found something (dangerous globals, duplicate members, an unfinished scan) still gives those
findings; its tensors are then not checked, which :attr:`Audit.refused` says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .finding import DEFAULT_FAIL_ON, FINDING_TYPES, Finding
from .api import Inspection, inspect
from .errors import FindingsFound, InspectorError
from .report.export import write_json
from .safety.pickle_scan import UnsafePickle


class UnknownFinding(InspectorError):
    """A finding type that does not exist was asked for."""


@dataclass
class Audit:
    source: str
    findings: list[Finding] = field(default_factory=list)
    refused: str | None = None  # the refusal message when the source could not be loaded safely

    def failed_on(self, fail_on) -> list[str]:
        """The finding types present that are listed in ``fail_on``, in FINDING_TYPES order."""
        present = {f.type for f in self.findings}
        return [t for t in FINDING_TYPES if t in present and t in fail_on]

    def check(self, fail_on) -> None:
        """Raise FindingsFound when a type in ``fail_on`` is present; else the refusal, if the source was
        refused (its tensors could not be checked for what ``fail_on`` asks)."""
        failed = self.failed_on(fail_on)
        if failed:
            raise FindingsFound(f"found {', '.join(failed)} (--fail-on {', '.join(fail_on) or 'nothing'})")
        if self.refused:
            raise InspectorError(self.refused)

    def to_json(self, path, fail_on) -> Path:
        return write_json({"source": self.source, "findings": self.findings, "failed_on": self.failed_on(fail_on)},
                          path)


def parse_fail_on(text: str) -> tuple[str, ...]:
    """``nan,inf,unsafe`` -> a tuple of finding types; ``all`` and ``none`` are accepted too."""
    names = [t.strip().lower() for t in (text or "").split(",") if t.strip()]
    if names == ["none"]:
        return ()
    if names == ["all"]:
        return tuple(FINDING_TYPES)
    unknown = [n for n in names if n not in FINDING_TYPES]
    if unknown:
        raise UnknownFinding(f"--fail-on: unknown finding {', '.join(unknown)}; choose from "
                             f"{', '.join(FINDING_TYPES)}, all or none")
    return tuple(names) or DEFAULT_FAIL_ON


def audit(source, weights: str = "DEFAULT", spectral: bool = False) -> Audit:
    """Findings of a source. Never executes a pickle: an unreadable one whose scan found something
    yields those findings. ``spectral``: run the spectral analysis too (for ``alpha`` findings)."""
    return audited(source, weights, spectral)[1]


def audited(source, weights: str = "DEFAULT", spectral: bool = False,
            threads: int | None = None) -> tuple[Inspection | None, Audit]:
    """The inspection of a source (None when its pickle was refused) and its audit (``threads``: see inspect)."""
    try:
        result = inspect(source, weights=weights, spectral=spectral, threads=threads)
    except UnsafePickle as e:
        return None, Audit(str(source), e.scan.findings(), refused=str(e))
    return result, Audit(str(source), list(result.summary["findings"]))
