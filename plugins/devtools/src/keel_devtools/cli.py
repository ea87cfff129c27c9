"""``keel devtools`` (the web UI, ``ls``, ``export``, ``import``, ``purge``) and ``keel replay``.

Imported when ``keel devtools`` or ``keel replay`` runs (``keel_commands`` adds them by reference);\nheavier modules (the web UI, replay) load inside the commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

import keel

_db_option = click.option(
    "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="the recording file (default: KEEL_DEVTOOLS_DB or .keel/devtools.db)",
)  # fmt: skip


def _open(db_path: Path | None) -> Any:
    from keel_devtools.db import RecordingDB
    from keel_devtools.record import default_path

    path = db_path or default_path()
    if not path.exists():
        raise click.ClickException(
            f"no recording at {path}: run an application with keel-devtools installed first "
            "(or point --db / KEEL_DEVTOOLS_DB at a recording)"
        )
    return RecordingDB(path)


def _fail(err: keel.KeelError) -> click.ClickException:
    return click.ClickException(str(err))


@click.group(invoke_without_command=True)
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="the address the UI binds")
@click.option("--port", default=7788, show_default=True, type=int)
@click.pass_context
def devtools(ctx: click.Context, db_path: Path | None, host: str, port: int) -> None:
    """Recorded executions: with no sub-command, serve the local web UI (127.0.0.1 by default)."""
    if ctx.invoked_subcommand is not None:
        return
    from keel_devtools.record import default_path
    from keel_devtools.web import serve_forever

    path = db_path or default_path()
    if not path.exists():
        raise click.ClickException(f"no recording at {path}: run an application with keel-devtools installed first")
    click.echo(f"keel devtools: http://{host}:{port}/  (recording: {path}; Ctrl-C stops)")
    serve_forever(path, host=host, port=port)


@devtools.command("ls")
@_db_option
@click.option("--status", default=None)
@click.option("--runnable", default=None)
@click.option("--tenant", default=None)
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def ls_cmd(db_path: Path | None, status: str | None, runnable: str | None, tenant: str | None, limit: int,
           as_json: bool) -> None:  # fmt: skip
    """List recorded executions, newest first."""
    from keel_devtools.db import ExecutionFilter

    db = _open(db_path)
    rows, _ = db.page(ExecutionFilter(status=status, runnable=runnable, tenant=tenant), limit=limit)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for row in rows:
        age = time.time() - (row["started_at"] or time.time())
        tokens = row["input_tokens"] + row["output_tokens"]
        dropped = f"  dropped {row['dropped']}" if row["dropped"] else ""
        click.echo(
            f"{row['id']}  {row['kind'] or '?':5} {row['runnable'] or '?':20} {row['status'] or '?':10} "
            f"{row['events']:6} events {tokens:7} tokens ${row['cost']:.4f}  {age:,.0f}s ago{dropped}"
        )


@devtools.command("export")
@_db_option
@click.argument("execution_id")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="file or folder")
def export_cmd(db_path: Path | None, execution_id: str, output: Path | None) -> None:
    """Write one recorded execution to a file (JSON Lines: a header, then its events)."""
    from keel_devtools.exchange import export_execution

    try:
        click.echo(str(export_execution(_open(db_path), execution_id, output)))
    except keel.KeelError as err:
        raise _fail(err) from err


@devtools.command("import")
@_db_option
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def import_cmd(db_path: Path | None, files: tuple[Path, ...]) -> None:
    """Read execution files (or folders of them) into the recording."""
    from keel_devtools.db import RecordingDB
    from keel_devtools.exchange import import_execution
    from keel_devtools.record import default_path

    db = RecordingDB(db_path or default_path())
    try:
        for item in files:
            for file in sorted(item.rglob("*.jsonl")) if item.is_dir() else [item]:
                click.echo(f"{import_execution(db, file)}  <- {file}")
    except keel.KeelError as err:
        raise _fail(err) from err


@devtools.command("purge")
@_db_option
@click.option("--older-than", "days", type=float, default=None, help="forget executions older than DAYS")
@click.option("--max-mb", type=float, default=None, help="then the oldest until the events take at most this")
def purge_cmd(db_path: Path | None, days: float | None, max_mb: float | None) -> None:
    """Apply retention now."""
    if days is None and max_mb is None:
        raise click.UsageError("give --older-than DAYS, --max-mb MB, or both")
    db = _open(db_path)
    count = db.purge(
        max_age=days * 86400 if days is not None else None,
        max_bytes=int(max_mb * 1_000_000) if max_mb is not None else None,
    )
    click.echo(f"forgot {count} execution(s)")


@click.command()
@_db_option
@click.argument("target")
@click.option("--live-model", is_flag=True, help="ask the model again (tool results stay recorded) and compare")
@click.option("--runnable", default=None, help="replay with this runnable instead of the recorded name")
@click.pass_context
def replay(ctx: click.Context, db_path: Path | None, target: str, live_model: bool, runnable: str | None) -> None:
    """Re-run recorded executions against today's code: an execution ID, a FILE, or a DIR of files.

    Recorded model answers and action results are served: no model is asked and no action runs.
    Exits 1 when any execution diverged (every one is replayed first), for CI.
    """
    from keel_devtools.replayer import replay_cli

    ctx.exit(replay_cli(ctx, db_path, target, live_model=live_model, runnable=runnable))
