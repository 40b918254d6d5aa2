"""Terminal report of an audit: the findings, then the verdict."""

from __future__ import annotations

from rich.console import Group

from .terminal import safe
from .views import grouped_findings

MAX_SHOWN = 50


def render_audit(audit, failed: list[str], fail_on) -> Group:
    parts: list = []
    n = len(audit.findings)
    parts.append(f"[bold]winspect audit[/bold] {safe(audit.source)}: {n} finding{'s' if n != 1 else ''}")
    if audit.refused:
        parts.append("  note: the file could not be read (nothing executed); its tensors were not checked")
    rows = grouped_findings(audit.findings)
    for type_, subject, detail in rows[:MAX_SHOWN]:
        parts.append(f"[yellow]{safe(type_)}[/yellow] {safe(subject)}: {safe(detail)}")
    if len(rows) > MAX_SHOWN:
        parts.append(f"… {len(rows) - MAX_SHOWN} more findings (--json FILE lists all)")
    gate = ", ".join(fail_on) or "nothing"
    if failed:
        parts.append(f"[bold red]FAIL[/bold red]: found {', '.join(failed)} (--fail-on {gate})")
    elif audit.refused:
        parts.append(f"[bold red]not checked[/bold red]: {gate} cannot be ruled out in a file that could not be read")
    else:
        parts.append(f"[green]ok[/green]: none of {gate} found")
    return Group(*parts)
