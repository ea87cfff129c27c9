"""``keel eval run | compare | rescore | from-execution | schema``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import click

from keel import Runtime

__all__ = ["eval_group"]

DEFAULT_DIR = Path(".keel") / "eval"


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False, width=None if sys.stdout.isatty() else 140)


def _state() -> Any:
    return click.get_current_context().find_root().obj


def _load_stack_runnables(runtime: Runtime) -> None:
    from keel_eval.runner import resolve_runnable

    for target in runtime.stack.config.runnables:
        resolve_runnable(runtime, target)


@click.group("eval")
def eval_group() -> None:
    """Eval cases against a runnable; compare two runs; turn a recorded execution into a case."""


@eval_group.command("run")
@click.argument("cases", type=click.Path(exists=True, path_type=Path))
@click.option("--runnable", "-r", metavar="NAME", help="a registered runnable, or package.module:attr / file.py:attr")
@click.option("--repeat", "-n", default=1, show_default=True, type=click.IntRange(1), help="runs per case")
@click.option("--concurrency", "-c", default=4, show_default=True, type=click.IntRange(1), help="runs at once")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="report file (default .keel/eval/<id>.json)")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="HTML page (default beside the JSON)")
@click.option("--tenant", default="default", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar; only failed cases in the table")
def run_cmd(
    cases: Path,
    runnable: str | None,
    repeat: int,
    concurrency: int,
    json_path: Path | None,
    html_path: Path | None,
    tenant: str,
    quiet: bool,
) -> None:
    """Run the cases in CASES (a file or a folder) and judge every run.

    Exits 1 when a case failed, so a CI job can gate on it; `keel eval compare` gates on a
    regression against a baseline instead.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from keel_eval.cases import load_dataset
    from keel_eval.render import report_html, report_table
    from keel_eval.report import Report
    from keel_eval.runner import run_dataset

    dataset = load_dataset(cases)
    state = _state()
    total = len(dataset.cases) * repeat
    progress = Progress(
        TextColumn("[bold]eval[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=_console(stderr=True), disable=quiet, transient=False,
    )  # fmt: skip

    async def main() -> Report:
        async with Runtime(state.host, state.stack) as runtime:
            _load_stack_runnables(runtime)
            with progress:
                task = progress.add_task(dataset.name, total=total)
                return await run_dataset(
                    dataset, runnable, runtime=runtime, repeat=repeat, concurrency=concurrency, tenant=tenant,
                    progress=lambda case, run: progress.advance(task),
                )  # fmt: skip

    report = anyio.run(main)
    json_file = report.save(json_path or DEFAULT_DIR / f"{report.id}.json")
    html_file = html_path or json_file.with_suffix(".html")
    html_file.parent.mkdir(parents=True, exist_ok=True)
    html_file.write_text(report_html(report), encoding="utf-8")
    console = _console()
    console.print(report_table(report, show_passed=not quiet))
    console.print(f"report: {json_file}\nhtml:   {html_file}")
    if not report.passed:
        sys.exit(1)


@eval_group.command("compare")
@click.argument("baseline", type=click.Path(exists=True, path_type=Path))
@click.argument("new", type=click.Path(exists=True, path_type=Path))
@click.option("--tolerance", "-t", default=0.05, show_default=True, type=click.FloatRange(0), help="score band")
@click.option("--max-regressions", default=0, show_default=True, type=click.IntRange(0), help="regressed cases allowed")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def compare_cmd(baseline: Path, new: Path, tolerance: float, max_regressions: int, as_json: bool) -> None:
    """Per case, BASELINE → NEW; exit 1 when more cases regressed than allowed, or the mean fell past
    the tolerance."""
    from keel_eval.render import comparison_table
    from keel_eval.report import compare, load_report

    comparison = compare(load_report(baseline), load_report(new), tolerance=tolerance)
    failing = comparison.failing(max_regressions)
    if as_json:
        click.echo(json.dumps({**comparison.to_json(), "failing": failing}, indent=1))
    else:
        _console().print(comparison_table(comparison))
    if failing:
        names = ", ".join(case.name for case in comparison.regressed()) or "none (the mean fell)"
        click.echo(f"regression: {names}", err=True)
        sys.exit(1)


@eval_group.command("rescore")
@click.argument("report_path", metavar="REPORT", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--cases",
    "cases",
    type=click.Path(exists=True, path_type=Path),
    help="take evaluators and expected outputs from these (edited) cases",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="new report file (default .keel/eval/<id>.json)"
)
@click.option("--quiet", "-q", is_flag=True, help="only failed cases in the table")
def rescore_cmd(report_path: Path, cases: Path | None, json_path: Path | None, quiet: bool) -> None:
    """Judge REPORT's recorded outputs again, calling no model and running nothing."""
    from keel_eval.cases import load_dataset
    from keel_eval.render import report_html, report_table
    from keel_eval.report import load_report
    from keel_eval.runner import rescore

    old = load_report(report_path)
    dataset = load_dataset(cases) if cases is not None else None
    report = anyio.run(lambda: rescore(old, host=_state().host, dataset=dataset))
    json_file = report.save(json_path or DEFAULT_DIR / f"{report.id}.json")
    json_file.with_suffix(".html").write_text(report_html(report), encoding="utf-8")
    _console().print(report_table(report, show_passed=not quiet))
    click.echo(f"report: {json_file}")
    if not report.passed:
        sys.exit(1)


@eval_group.command("from-execution")
@click.argument("ref", metavar="ID|FILE")
@click.option("--dir", "folder", default=".keel/executions", show_default=True, help="where exported executions are")
@click.option("--name", help="the case's name (default: runnable and id)")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="write the case file here (default: stdout)")
def from_execution_cmd(ref: str, folder: str, name: str | None, output: Path | None) -> None:
    """Turn a recorded execution into a case: its input, its output as the expected output (edit it),
    its action results as fixtures. ID is looked up in --dir, then in DevTools' recording when
    keel-devtools is installed."""
    import yaml

    from keel_eval.errors import EvalError
    from keel_eval.recorded import case_from_recording, find_recording, read_recording

    try:
        path = find_recording(ref, folder)
    except EvalError as err:
        path = _export_with_devtools(ref, err)
    case = case_from_recording(read_recording(path), name=name)
    text = (
        f"# from execution {case['metadata']['from_execution']} on {time.strftime('%Y-%m-%d')}: "
        "check `expected`, it is what the run answered\n" + yaml.safe_dump(case, sort_keys=False, allow_unicode=True)
    )
    if output is None:
        click.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        click.echo(f"case {case['name']!r} written to {output}", err=True)


def _export_with_devtools(ref: str, not_found: Exception) -> Path:
    """Ask DevTools, when it is installed, to export execution ``ref`` from its recording: through its
    ``keel devtools export`` command, found by name on the root command, never by importing it."""
    import contextlib
    import io
    import tempfile

    from keel_eval.errors import EvalError

    root = click.get_current_context().find_root()
    group = root.command
    devtools = group.get_command(root, "devtools") if isinstance(group, click.Group) else None
    if not isinstance(devtools, click.Group):
        raise not_found
    target = Path(tempfile.mkdtemp(prefix="keel-eval-")) / f"{ref}.jsonl"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # export prints the file's path
            devtools.main(
                ["export", ref, "-o", str(target)], prog_name="keel devtools", standalone_mode=False, obj=root.obj
            )
    except click.ClickException as err:
        raise EvalError(
            f"{not_found}; DevTools' recording has no execution {ref!r} either: {err.format_message()}"
        ) from None
    return target


@eval_group.command("schema")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="write it here (default: stdout)")
def schema_cmd(output: Path | None) -> None:
    """Print the JSON schema of case files, for editor completion."""
    from keel_eval.cases import case_schema

    text = json.dumps(case_schema(), indent=1) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
