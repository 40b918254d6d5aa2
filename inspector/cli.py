"""The ``winspect`` command. The only module that prints or exits.

Exit codes: 0 success; 1 bad input (missing, unknown, unsupported, unsafe or unreadable
source; unwritable output); 2 usage errors; 3 ``audit`` or ``scan`` found what --fail-on lists; 141
(128 + SIGPIPE, as a shell reports a command ended by a closed pipe) when the reader of
standard output went away early (``| head``).

An output path of ``-`` (``--csv -``, ``--json -``) is standard output; the terminal report
is then left out, so that the data can be piped.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from pathlib import Path

import click

from .errors import FindingsFound, InspectorError, OutputError, first_line
from .finding import DEFAULT_FAIL_ON, FINDING_TYPES
from .table.schema import LAYER_COLUMNS


# The status a shell gives a command that SIGPIPE ended (128 + 13): what `set -o pipefail` expects
# from a writer whose reader went away, not the bad-input code.
CLOSED_PIPE = 128 + 13


class _Fail(click.ClickException):
    """An InspectorError as one ``error:`` line, with the error's exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        from .report.terminal import visible

        click.echo(f"error: {visible(self.message)}", err=True)


class Terminated(BaseException):
    """SIGTERM (``timeout``, CI runners, ``kill``): unwinds like Ctrl-C, so temporary files are removed."""


def _on_sigterm(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_unwinds():
    """While a command runs, SIGTERM raises :class:`Terminated` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def handle_errors(fn):
    """Turn library errors into one ``error:`` line and the error's exit code (``--debug`` re-raises)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug") or os.environ.get("WINSPECT_DEBUG")
        try:
            with sigterm_unwinds():
                return fn(*args, **kwargs)
        except Terminated:
            click.echo("error: terminated", err=True)
            sys.exit(143)
        except FindingsFound as e:  # the audit report has said what was found
            raise click.exceptions.Exit(e.exit_code) from None
        except InspectorError as e:
            if debug:
                raise
            raise _Fail(str(e), e.exit_code) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader of standard output went away (| head): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(CLOSED_PIPE)
        except Exception as e:  # never a traceback for a user: say what failed and how to see more
            if debug:
                raise
            msg = first_line(e) if str(e).strip() else ""
            raise _Fail(f"unexpected {type(e).__name__}: {msg} (rerun with --debug for the traceback)") from None

    return wrapper


def output_width() -> int:
    """Columns of standard output: the terminal's width; in a file or pipe, COLUMNS when set, else 120."""
    from rich.console import Console

    from .report.terminal import DEFAULT_WIDTH

    console = Console()
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "").strip()
    return max(int(columns), MIN_WIDTH) if columns.isdigit() and int(columns) > 0 else DEFAULT_WIDTH


MIN_WIDTH = 40  # narrower than this, tables would hold nothing but their numbers


def show(make) -> None:
    """Print the renderable ``make(width)`` builds for the width of standard output."""
    from rich.console import Console

    width = output_width()
    Console(width=width).print(make(width))


@contextlib.contextmanager
def progress_shown(bar, stream=None, delay: float | None = None):
    """Show ``bar`` (a report.progress bar, or None) on ``stream`` (stderr) while the block runs, from
    ``delay`` seconds on (report.progress.DELAY), and remove it at the end."""
    if bar is None:
        yield
        return
    from rich.console import Console
    from rich.live import Live

    from .report.progress import DELAY

    live = Live(get_renderable=bar.renderable, console=Console(file=stream or sys.stderr), transient=True,
                refresh_per_second=4)
    timer = threading.Timer(DELAY if delay is None else delay, live.start)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        live.stop()


def common_options(fn):
    fn = click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")(fn)
    fn = click.option("--quiet", "-q", is_flag=True, help="No terminal report or progress bar.")(fn)
    return fn


def check_outputs(inputs, outputs) -> None:
    """Refuse to write an output over an input file, or over a checkpoint file that a directory or
    shard-index input reads (by path, relative path, symlink or hard link); and more than one
    output on standard output (``-``), where they would interleave."""
    if sum(1 for out in outputs if out == "-") > 1:
        raise click.UsageError("only one output can be '-' (standard output)")
    if not any(out and out != "-" for out in outputs):
        return  # nothing written to a file: no need to open the inputs to list what they read
    from .loaders import source_files

    ins = [p for i in inputs if i for p in source_files(str(i))]
    for out in outputs:
        if not out or out == "-":
            continue
        o = Path(out)
        for i in ins:
            if o.exists() and o.samefile(i) or o.resolve() == i.resolve():
                raise OutputError(f"{out}: is an input of this command; refusing to overwrite it")


def _regex(value, name: str):
    """A regular expression option, checked before any work (a bad one is a usage error)."""
    import re

    if value is not None:
        try:
            re.compile(value)
        except re.error as e:
            raise click.BadParameter(f"not a regular expression ({e})", param_hint=name) from None
    return value


def weights_for(sources, weights: str | None) -> str:
    """The --weights value, refused (a usage error) when no source is a model name it could apply to."""
    if weights is None:
        return "DEFAULT"
    if all(Path(s).exists() for s in sources):
        raise click.UsageError(f"--weights applies to torchvision model names; {_which(sources)} a file or "
                               "directory, whose weights are its own")
    return weights


def _which(sources) -> str:
    return f"{sources[0]} is" if len(sources) == 1 else "every source is"


def piped(*paths) -> bool:
    """Whether an output is ``-`` (standard output), which the terminal report must leave alone."""
    return "-" in paths


def report_outputs(out_dir) -> list:
    """The report directory and its fixed files, for check_outputs."""
    if not out_dir:
        return []
    from .report.bundle import REPORT_FILES

    return [out_dir, *(Path(out_dir) / f for f in REPORT_FILES)]


def no_unsafe_load(ctx, param, value) -> None:
    """``--unsafe-load`` is gone: every PyTorch file is read without running it."""
    if value:
        raise click.UsageError("--unsafe-load has no purpose any more: winspect reads every PyTorch file "
                               "(full-model pickles and TorchScript included) without running anything in it")


def warn_unsafe(findings, source) -> None:
    """The loud warning for a pickle that names dangerous globals or could not be fully scanned."""
    names = [f.subject for f in findings if f.type == "unsafe" and f.data.get("class") == "dangerous"]
    other = [f"{f.subject}: {f.detail}" for f in findings if f.type == "scan_incomplete" or
             (f.type == "unsafe" and f.data.get("class") != "dangerous")]
    if names:
        click.secho(f"WARNING: {source}: the pickle names dangerous globals {', '.join(names[:8])}: loading it "
                    "with torch.load would run code. Nothing was run here; its tensors were read as data.",
                    err=True, fg="red", bold=True)
    for detail in other[:4]:
        click.secho(f"WARNING: {detail}", err=True, fg="red", bold=True)


class DefaultGroup(click.Group):
    """``winspect SOURCE`` is the short form of ``winspect inspect SOURCE``."""

    default_command = "inspect"

    def format_help_text(self, ctx, formatter):
        from .loaders import formats_text

        super().format_help_text(ctx, formatter)
        with formatter.indentation():
            formatter.write_paragraph()
            formatter.write_text(f"Formats: {formats_text()}.")

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="winspect")
def main():
    """winspect: what is inside a model's weights — how much is negative, where, how large.

    SOURCE is a model name, a checkpoint file, a shard index, a model directory, or a URL: http(s)://…,
    hf://ORG/REPO[@REVISION][/FILE], s3://, gs://, az:// (read by byte range where the format allows).
    """


@main.command("inspect")
@click.argument("source")
@click.option("--weights", help="For torchvision names: DEFAULT (the default), a weights enum member "
                                "(IMAGENET1K_V1, …, any case) or none (untrained).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the per-tensor table as CSV.")
@click.option("--layers-csv", type=click.Path(dir_okay=False), help="Write the per-layer table as CSV.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write summary and tensors as JSON.")
@click.option("--unsafe-load", is_flag=True, hidden=True, expose_value=False, callback=no_unsafe_load)
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Write the report set into DIR: CSVs, summary.json, PNG plots, report.html, report.md.")
@click.option("--svg", is_flag=True, help="With --out: write the plots as SVG too.")
@click.option("--spectral", is_flag=True,
              help="Add spectral columns (WeightWatcher's alpha, norms, ranks; sign spectrum) to weight matrices.")
@click.option("--top", type=click.IntRange(min=1), help="Terminal layer table: show the first N layers (after "
                                                         "--sort and --filter).")
@click.option("--sort", type=click.Choice(LAYER_COLUMNS), metavar="COLUMN",
              help="Terminal layer table: sort by a layer-table column (numbers largest first), e.g. weight_neg_frac.")
@click.option("--filter", "pattern", callback=lambda ctx, param, v: _regex(v, "--filter"), metavar="REGEX",
              help="Terminal layer table: only layers whose name matches this regular expression.")
@click.option("--header-only", is_flag=True,
              help="Shapes, dtypes and parameter counts from the headers alone (no value is read).")
@click.option("--no-download", is_flag=True,
              help="Remote sources: refuse formats that cannot be read by byte range instead of downloading them.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Remote sources: keep the files in DIR, and read them from there next time.")
@common_options
@handle_errors
def inspect_cmd(source, weights, csv_path, layers_csv, json_path, out_dir, svg, spectral, top, sort, pattern,
                header_only, no_download, cache_dir, quiet, debug):
    """Per-tensor and per-layer statistics of one model (a name, a path, an http(s) URL or hf://ORG/REPO)."""
    from .api import inspect
    from .report.terminal import LayerSelection

    if svg and not out_dir:
        raise click.UsageError("--svg needs --out DIR")
    if header_only and (out_dir or cache_dir or spectral):
        raise click.UsageError("--header-only reads no values: it takes no --out, --cache or --spectral")
    selection = LayerSelection(top, sort, pattern)
    weights = weights_for([source], weights)
    check_outputs([source], [csv_path, layers_csv, json_path, *report_outputs(out_dir)])
    report = not (quiet or piped(csv_path, layers_csv, json_path))
    if header_only:
        return _header_only(source, weights, csv_path, layers_csv, json_path, no_download, report)
    from .report.progress import progress_for

    bar = progress_for(quiet=quiet)
    with progress_shown(bar):
        result = inspect(source, weights=weights, progress=bar, spectral=spectral, no_download=no_download,
                         cache=cache_dir)
    warn_unsafe(result.summary["findings"], source)
    write_tables(result, csv_path, layers_csv, json_path)
    if report:
        from .report.terminal import render

        show(lambda width: render(result, width=width, selection=selection))
    if out_dir:
        from .loaders import source_files

        html = result.to_report(out_dir, svg=svg, protect=source_files(str(source)))
        if report:
            click.echo(f"report: {html}")


def write_tables(result, csv_path, layers_csv, json_path) -> None:
    """The tables an inspection was asked to write."""
    if csv_path:
        result.to_csv(csv_path)
    if layers_csv:
        result.to_layers_csv(layers_csv)
    if json_path:
        result.to_json(json_path)


def _header_only(source, weights, csv_path, layers_csv, json_path, no_download, report) -> None:
    from .api import inspect_headers

    result = inspect_headers(source, weights=weights, no_download=no_download)
    write_tables(result, csv_path, layers_csv, json_path)
    if report:
        from .report.headers_terminal import render_headers

        show(lambda width: render_headers(result))


_csv_option = click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the table as CSV.")
_json_option = click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write everything as JSON.")
_out_option = click.option("--out", "out_dir", type=click.Path(file_okay=False),
                           help="Directory for the CSV tables and plots.")
_weights_option = click.option("--weights", help="For torchvision names: DEFAULT (the default), a weights enum "
                                                "member or none (untrained).")


def multi_options(fn):
    """The options of the commands over several sources: --csv, --json, --out, --weights, -q, --debug."""
    for option in (handle_errors, common_options, _weights_option, _out_option, _json_option, _csv_option):
        fn = option(fn)
    return fn


def _finish(result, inputs, csv_path, json_path, out_dir, out_names, render: str, quiet: bool) -> None:
    """Write what was asked (never over an input), then the terminal summary."""
    outs = [csv_path, json_path] + ([str(Path(out_dir) / n) for n in out_names] if out_dir else [])
    check_outputs(inputs, outs)
    report = not (quiet or piped(csv_path, json_path))
    write_tables(result, csv_path, None, json_path)
    if out_dir:
        result.save(out_dir)
    if report:
        from .report import change_terminal

        show(lambda width: getattr(change_terminal, render)(result, width))


@main.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--match", type=click.Choice(["name", "position"]), default="name", show_default=True,
              help="Pair tensors by name (no name in common is an error) or by position (i-th with i-th).")
@multi_options
def diff_cmd(a, b, match, csv_path, json_path, out_dir, weights, quiet, debug):
    """How each tensor changed from checkpoint A to checkpoint B (matched by name, or by position)."""
    from .multi import diff

    weights = weights_for([a, b], weights)
    check_outputs([a, b], [csv_path, json_path])
    result = diff(a, b, weights=weights, match=match)
    _finish(result, [a, b], csv_path, json_path, out_dir, ["diff.csv", "diff_change.png"], "render_diff", quiet)


@main.command("track")
@click.argument("sources", nargs=-1, required=True)
@click.option("--step-regex", callback=lambda ctx, param, v: _regex(v, "--step-regex"), help="Where a checkpoint's path says its step: the first group (or the match) of "
                                   "this regular expression; default: the last number in the file name.")
@multi_options
def track_cmd(sources, step_regex, csv_path, json_path, out_dir, weights, quiet, debug):
    """Statistics across the checkpoints of one run (paths or globs), in step order: the step is the last
    number in each file name (or --step-regex); without one for each, natural order and positions."""
    from .analysis.track import ordered_sources
    from .multi import track

    weights = weights_for(ordered_sources(sources), weights)
    check_outputs(sources, [csv_path, json_path])
    result = track(sources, weights=weights, step_regex=step_regex)
    _finish(result, result.checkpoints, csv_path, json_path, out_dir, ["track.csv", "track_steps.csv"],
            "render_track", quiet)


@main.command("compare")
@click.argument("sources", nargs=-1, required=True)
@multi_options
def compare_cmd(sources, csv_path, json_path, out_dir, weights, quiet, debug):
    """Several models side by side: per model and kind, sign fractions, abs mean, std."""
    from .multi import compare

    weights = weights_for(sources, weights)
    check_outputs(sources, [csv_path, json_path])
    result = compare(sources, weights=weights)
    _finish(result, sources, csv_path, json_path, out_dir, ["compare.csv"], "render_compare", quiet)


@main.command("audit")
@click.argument("source")
@click.option("--fail-on", default=",".join(DEFAULT_FAIL_ON), show_default=True,
              help=f"Finding types that make the command exit 3 ({', '.join(FINDING_TYPES)}; all; none).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write {source, findings, failed_on} as JSON.")
@click.option("--weights", help="For torchvision names, as for inspect.")
@click.option("--unsafe-load", is_flag=True, hidden=True, expose_value=False, callback=no_unsafe_load)
@common_options
@handle_errors
def audit_cmd(source, fail_on, json_path, weights, quiet, debug):
    """Findings (NaN/Inf, zero and tied tensors, unsafe pickles, ...): exit 3 when one listed in --fail-on is
    present, 0 when none is, 1 on bad input. No pickle is ever executed. Listing ``alpha`` runs the
    spectral analysis."""
    from .audit import UnknownFinding, audit, parse_fail_on

    try:
        gate = parse_fail_on(fail_on)
    except UnknownFinding as e:
        raise click.BadParameter(str(e).removeprefix("--fail-on: "), param_hint="--fail-on") from None
    weights = weights_for([source], weights)
    check_outputs([source], [json_path])
    report = not (quiet or piped(json_path))
    result = audit(source, weights=weights, spectral="alpha" in gate)
    failed = result.failed_on(gate)
    if json_path:
        result.to_json(json_path, gate)
    if report:
        from .report.findings import render_audit

        show(lambda width: render_audit(result, failed, gate))
    result.check(gate)


@main.command("experiment")
@click.argument("names", nargs=-1)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the CSV tables, plots, experiments.md and experiments.html.")
@click.option("--seeds", type=click.IntRange(min=1), help="Runs per configuration, seeds 0..N-1 [default: 5; 2 with --quick].")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs for every network [default: per network; fewer with --quick].")
@click.option("--quick", is_flag=True, help="A reduced budget (fewer seeds and epochs), for a first look or a test.")
@common_options
@handle_errors
def experiment_cmd(names, out_dir, seeds, epochs, quick, quiet, debug):
    """Train small networks on scikit-learn's bundled data to see whether negative weights matter.

    NAMES: signs, speed, tasks, activations, init, evolution (default: all). CPU only, deterministic per
    seed; needs the torch extra (torch, scikit-learn)."""
    from .experiments import BadExperiment, check_names, experiment, require

    try:
        names = check_names(names)
    except BadExperiment as e:
        raise click.BadParameter(str(e), param_hint="NAMES") from None
    require()

    def progress(name, done, total):
        if done == total:
            click.echo(f"{name}: {total} runs done", err=True)

    result = experiment(names, out_dir, seeds=seeds, epochs=epochs, quick=quick, progress=None if quiet else progress)
    if not quiet:
        click.echo(f"report: {Path(out_dir) / 'experiments.md'} ({result.platform['wall time (s)']} s)")


@main.command("scan")
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for models.parquet/.csv, tensors.parquet/, report.html/.md.")
@click.option("--scheduler", help="Dask scheduler address (tcp://host:port; default $DASK_SCHEDULER_ADDRESS); "
              "without one, a local process pool.")
@click.option("--workers", type=click.IntRange(min=1), help="Local pool processes (default: the core count).")
@click.option("--fail-on", default=",".join(DEFAULT_FAIL_ON), show_default=True,
              help="Finding types that make the command exit 3 when any model has one (as for audit).")
@click.option("--resume", is_flag=True, help="Keep the rows of an earlier scan into --out for unchanged models.")
@click.option("--timeout", type=click.FloatRange(min=0), default=3600, show_default=True,
              help="Seconds one model may take; one still running then is stopped and is an error row (0: no limit).")
@click.option("--models-per-task", type=click.IntRange(min=1),
              help="Small models run at most N to a task (a model of more than 4 MiB runs alone; default 8 on "
                   "the local pool, 16 on Dask; 1: one task per model).")
@common_options
@handle_errors
def scan_cmd(paths, out_dir, scheduler, workers, fail_on, resume, timeout, models_per_task, quiet, debug):
    """Inspect every model under PATHS (files, folders, globs, @FILE with one path a line), locally or on Dask.
    Exit 3 when a model has a finding listed in --fail-on; failing models are rows, not errors."""
    from .audit import UnknownFinding, parse_fail_on
    from .report.progress import scan_progress_for
    from .scan import scan

    try:
        gate = parse_fail_on(fail_on)
    except UnknownFinding as e:
        raise click.BadParameter(str(e).removeprefix("--fail-on: "), param_hint="--fail-on") from None
    progress = scan_progress_for(quiet=quiet)
    with progress_shown(progress, delay=0.0):
        result = scan(paths, out_dir, scheduler=scheduler, workers=workers, resume=resume, timeout=timeout,
                      models_per_task=models_per_task, progress=progress)
    if not quiet:
        counts = ", ".join(f"{n} {s}" for s, n in result.counts().items())
        click.echo(f"{result.total} models ({counts}); wrote {out_dir}")
    result.check(gate)
