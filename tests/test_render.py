"""Renderers return renderables and print nothing; the CLI prints them and exits with the error's code."""

from __future__ import annotations

import io
from pathlib import Path

import click
import pytest
from rich.console import Console

from inspector import inspect
from inspector.audit import audit
from inspector.cli import handle_errors
from inspector.errors import FindingsFound, InspectorError, OutputError
from inspector.report import change_terminal
from inspector.report.findings import render_audit
from inspector.report.terminal import render

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "digits_cnn.safetensors"


def text_of(renderable) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=False).print(renderable)
    return buf.getvalue()


def test_renderers_print_nothing_themselves(capsys):
    from inspector.multi import compare

    ins = inspect(FIXTURE)
    views = [render(ins), render_audit(audit(FIXTURE), [], ("nan",)),
             change_terminal.render_compare(compare([FIXTURE, FIXTURE]))]
    assert capsys.readouterr() == ("", "")
    text = text_of(views[0])
    assert "winspect" in text and f"{ins.summary['tensors']} tensors" in text
    assert "ok: none of nan found" in text_of(views[1])
    assert "winspect compare" in text_of(views[2])


@pytest.mark.parametrize("error, code", [(InspectorError("x"), 1), (OutputError("x"), 1), (FindingsFound("x"), 3)])
def test_exit_code_comes_from_the_error(error, code):
    @handle_errors
    def fails(**kwargs):
        raise error

    with pytest.raises((click.ClickException, click.exceptions.Exit)) as e:
        fails()
    assert getattr(e.value, "exit_code", None) == code
