"""Terminal report of an audit: the findings, then the verdict."""

from __future__ import annotations

from rich.console import Console

from .terminal import console_for, safe

MAX_SHOWN = 50


def render_audit(audit, failed: list[str], fail_on, console: Console | None = None) -> None:
    console = console_for(console)
    n = len(audit.findings)
    console.print(f"[bold]winspect audit[/bold] {safe(audit.source)}: {n} finding{'s' if n != 1 else ''}")
    if audit.refused:
        console.print("  note: pickle refused (nothing executed); its tensors were not checked")
    for f in audit.findings[:MAX_SHOWN]:
        console.print(f"[yellow]{safe(f.type)}[/yellow] {safe(f.subject)}: {safe(f.detail)}")
    if n > MAX_SHOWN:
        console.print(f"… {n - MAX_SHOWN} more findings (--json FILE lists all)")
    gate = ", ".join(fail_on) or "nothing"
    if failed:
        console.print(f"[bold red]FAIL[/bold red]: found {', '.join(failed)} (--fail-on {gate})")
    elif audit.refused:
        console.print(f"[bold red]not checked[/bold red]: {gate} cannot be ruled out in a refused pickle")
    else:
        console.print(f"[green]ok[/green]: none of {gate} found")
