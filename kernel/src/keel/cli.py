"""The ``keel`` command. Plugins add sub-commands through the ``keel_commands`` hook."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import click

from keel.errors import KeelError
from keel.plugins import PluginHost
from keel.refs import load_ref
from keel.runtime import Runtime, discover_for
from keel.stack import Stack, load_named, load_stack, stack_entry_points
from keel.types import ActionSpec

__all__ = ["CliState", "KeelGroup", "main"]


class CliState:
    """What every ``keel`` sub-command can use: ``click.get_current_context().find_root().obj``.

    :ivar host: the plugin host, with the plugins the stack and switches allowed.
    :ivar stack: the resolved stack (``--stack``/``--stack-file``/``keel.toml``).
    """

    def __init__(self, host: PluginHost, stack: Stack):
        self.host = host
        self.stack = stack

    def runtime(self) -> Runtime:
        """A new runtime over this host and stack (not started: use ``async with``)."""
        return Runtime(self.host, self.stack)


class KeelGroup(click.Group):
    """The top-level ``keel`` group: plugins may add a sub-command by reference, imported only when
    it runs, so ``keel plugins`` (and every other command) does not import every plugin's CLI."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, tuple[str, str, str]] = {}  # name -> (target, short help, plugin)
        #: the plugin whose ``keel_commands`` is running (set by PluginHost.add_commands)
        self.adding_plugin = ""

    def add_lazy_command(self, name: str, target: str, help: str = "") -> None:
        """Add sub-command ``name`` by reference.

        :param target: ``"package.module:attribute"``, a click command or group, imported when the
            command runs or its own ``--help`` is asked for.
        :param help: the one line ``keel --help`` shows for it (so listing imports nothing).
        """
        self._lazy[name] = (target, help, self.adding_plugin)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self._lazy:
            target, _help, plugin = self._lazy[cmd_name]
            origin = f" of plugin {plugin!r}" if plugin else ""
            try:
                command = load_ref(target, what=f"command {cmd_name!r}{origin}")
            except KeelError as err:
                raise KeelError(
                    f"{err}. Or reinstall the plugin, or skip it with KEEL_DISABLE_PLUGINS={plugin or '<plugin>'}"
                ) from err.__cause__
            if not isinstance(command, click.Command):
                raise KeelError(f"command {cmd_name!r} ({target}) is not a click command: {command!r}")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not imported yet shows the help it was added with."""
        names = [n for n in self.list_commands(ctx) if n in self.commands or n in self._lazy]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.commands:
                if self.commands[name].hidden:
                    continue
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, _short(self._lazy[name][1], limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _short(help: str, limit: int) -> str:
    """The first line of ``help``, cut at ``limit`` characters with ``...``."""
    line = help.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: max(limit - 3, 0)].rstrip() + "..."


#: commands that must work whatever the installed plugins do: they list problems instead of failing
DIAGNOSTIC = frozenset({"plugins", "stacks", "version"})


def _command(argv: Sequence[str]) -> str | None:
    """The sub-command's name, before click parses (the global options take one value each)."""
    args = iter(argv)
    for arg in args:
        if arg in ("--stack", "--stack-file"):
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _prescan(argv: Sequence[str], option: str) -> str | None:
    """Read a global option before click parses, because it decides which plugins (and so which
    sub-commands) exist."""
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def build_cli(host: PluginHost, stack: Stack) -> KeelGroup:
    @click.group(cls=KeelGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--stack", "stack_name", metavar="NAME", help="a named stack (entry-point group keel.stacks)")
    @click.option("--stack-file", metavar="PATH", help="a stack file instead of ./keel.toml")
    @click.pass_context
    def cli(ctx: click.Context, stack_name: str | None, stack_file: str | None) -> None:
        """Keel: a plugin-based agent framework."""
        ctx.obj = CliState(host, stack)
        if ctx.invoked_subcommand not in DIAGNOSTIC:
            host.raise_problems()  # the diagnostic commands list the problems instead

    @cli.command()
    def version() -> None:
        """Print the kernel's version."""
        from importlib.metadata import version as dist_version

        from keel.compat import CONTRACT_VERSION

        click.echo(f"keel-kernel {dist_version('keel-kernel')} (contract {CONTRACT_VERSION})")

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.pass_obj
    def plugins(state: CliState, as_json: bool) -> None:
        """List installed plugins, what they implement and what they registered."""
        infos = state.host.plugin_infos()
        problems = [str(p) for p in state.host.problems]
        if as_json:
            click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
            for problem in problems:
                click.echo(f"problem: {problem}", err=True)
        else:
            for info in infos:
                dist = f"{info.distribution} {info.version}".strip()
                supports = f"  (keel-kernel{info.kernel_range})" if info.kernel_range else ""
                click.echo(f"{info.name:<24} {info.status:<12} {dist}{supports}")
                for family, names in sorted(info.registered.items()):
                    click.echo(f"    {family}s: {', '.join(sorted(names))}")
                if info.hooks and not info.registered:
                    click.echo(f"    hooks: {', '.join(info.hooks)}")
                if info.error:
                    click.echo(f"    error: {info.error}")
            if problems:
                click.echo(f"\n{len(problems)} problem{'s' if len(problems) > 1 else ''}:")
                for problem in problems:
                    click.echo(f"  - {problem}")
        if state.host.strict and problems:
            raise click.exceptions.Exit(1)  # KEEL_STRICT_PLUGINS: listed, and still an error

    @cli.command("stacks")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.pass_obj
    def stacks_cmd(state: CliState, as_json: bool) -> None:
        """List the named stacks installed packages ship (entry-point group keel.stacks)."""
        rows = _named_stack_rows()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        elif not rows:
            click.echo("no named stacks installed: packages ship them in the entry-point group keel.stacks")
        for row in [] if as_json else rows:
            extends = f" (extends {row['extends']})" if row["extends"] else ""
            click.echo(f"{row['name']:<20} {row['status']:<9} {row['distribution']:<24} {row['target']}{extends}")
            if row["error"]:
                click.echo(f"    error: {row['error']}")
        if state.host.strict and any(row["status"] != "ok" for row in rows):
            raise click.exceptions.Exit(1)

    @cli.command("stack")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.pass_obj
    def stack_cmd(state: CliState, as_json: bool) -> None:
        """Show the resolved stack: each slot, its driver, and where the choice came from."""
        from keel.calls import governance_rows

        report = state.stack.check(state.host)
        governance = governance_rows(state.stack)
        if as_json:
            click.echo(json.dumps({"layers": state.stack.name, "slots": report, "governance": governance}, indent=2))
            return
        click.echo(f"stack: {state.stack.name}")
        for row in report:
            plugin = f" (plugin {row['plugin']})" if row["plugin"] else ""
            click.echo(f"  {row['slot']:<9} {row['name']:<12} {row['status']:<9} from {row['source']}{plugin}")
            if (row["note"] and row["status"] != "ok") or row["source"] == "built-in fallback":
                click.echo(f"            {row['note']}")
        click.echo("governance (budgets, timeouts, retries):" if governance else "governance: no [budgets], no [calls]")
        for row in governance:
            values = ", ".join(f"{k} = {v}" for k, v in row["values"].items())
            click.echo(f"  [{row['table']}] {values}  (from {row['source']})")

    @cli.group("env")
    def env_group() -> None:
        """Environments of the stack: MCP servers, sandboxes, anything with a lifecycle."""

    @env_group.command("list")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.pass_obj
    def env_list_cmd(state: CliState, as_json: bool) -> None:
        """List declared environments (nothing is started)."""
        rows = [s.as_dict() for s in state.runtime().environments.status()]
        _print_envs(rows, as_json)

    @env_group.command("status")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.option("--start", "start_all", is_flag=True, help="start lazy environments too before checking")
    @click.pass_obj
    def env_status_cmd(state: CliState, as_json: bool, start_all: bool) -> None:
        """Start the stack's eager environments, check each one's health, print, stop them."""

        async def run() -> list[dict[str, Any]]:
            async with state.runtime() as runtime:
                for name in runtime.environments.names():
                    if start_all:
                        with contextlib.suppress(KeelError):
                            await runtime.environments.ensure(name)
                    if runtime.environments.status_of(name).status in ("ready", "unhealthy"):
                        await runtime.environments.check(name)
                return [s.as_dict() for s in runtime.environments.status()]

        _print_envs(anyio.run(run), as_json)

    @env_group.command("start")
    @click.argument("name")
    @click.option("--hold", is_flag=True, help="keep it running (supervised, restarted on failure) until Ctrl-C")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.pass_obj
    def env_start_cmd(state: CliState, name: str, hold: bool, as_json: bool) -> None:
        """Start one environment and check its health; with --hold, supervise it until Ctrl-C."""

        async def run() -> list[dict[str, Any]]:
            async with state.runtime() as runtime:
                await runtime.environments.start(name)
                await runtime.environments.check(name)
                _print_envs([runtime.environments.status_of(name).as_dict()], as_json)
                if hold:
                    pidfile = _pidfile(name)
                    pidfile.parent.mkdir(parents=True, exist_ok=True)
                    pidfile.write_text(str(os.getpid()))
                    try:
                        # SIGTERM (`keel env stop`) or Ctrl-C: leave the runtime, which stops it cleanly
                        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                            async for _ in signals:
                                break
                    finally:
                        pidfile.unlink(missing_ok=True)
                return []

        anyio.run(run)

    @env_group.command("stop")
    @click.argument("name")
    @click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for it to stop")
    def env_stop_cmd(name: str, timeout: float) -> None:
        """Stop an environment held by `keel env start NAME --hold` (from this folder)."""
        pidfile = _pidfile(name)
        try:
            pid = int(pidfile.read_text())
            if not _holds(pid, name):  # a stale file whose pid now belongs to another process
                raise ProcessLookupError(pid)
            os.kill(pid, signal.SIGTERM)  # the holder leaves its runtime, which stops the environment
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            raise KeelError(
                f"environment {name!r} is not held by a running `keel env start {name} --hold` here "
                f"(no live process in {pidfile})"
            ) from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                click.echo(f"{name}: stopped")
                return
            time.sleep(0.05)
        raise KeelError(f"environment {name!r}: its holder (pid {pid}) did not stop within {timeout:g}s")

    @cli.command("actions")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.option("--agent", default=None, help="only the actions this agent may see")
    @click.option("--start", "start_lazy", is_flag=True, help="start lazy environments too, to list their actions")
    @click.pass_obj
    def actions_cmd(state: CliState, as_json: bool, agent: str | None, start_lazy: bool) -> None:
        """List every action of the stack with its scope and risk.

        Plugin actions are listed as registered; the stack's eager environments (MCP servers,
        sandboxes) are started so that their actions are listed too, then stopped.
        """

        async def run() -> tuple[list[dict[str, Any]], list[str]]:
            problems = []
            async with state.runtime() as runtime:
                for name in runtime.environments.names():
                    if start_lazy:
                        with contextlib.suppress(KeelError):
                            await runtime.environments.ensure(name)
                    env = runtime.environments.status_of(name)
                    if env.status == "failed" or (start_lazy and env.status != "ready"):
                        problems.append(f"environment {name!r} is {env.status}: {env.error}; its actions are missing")
                rows = [_describe_action(s, runtime.actions.source(s.name)) for s in runtime.actions.visible(agent)]
            return sorted(rows, key=lambda r: r["name"]), problems

        rows, problems = anyio.run(run)
        for problem in problems:
            click.echo(f"warning: {problem}", err=True)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            click.echo(
                "no actions: plugins register them with keel_actions(), environments (MCP servers...) add theirs"
            )
        for row in rows:
            scope = row["scope"] if isinstance(row["scope"], str) else ", ".join(row["scope"])
            click.echo(f"{row['name']:<32} {row['risk']:<12} {scope:<16} {row['source']}")

    # the kernel's own lazy command: imported only when it runs
    cli.add_lazy_command(
        "doctor", "keel.doctor:doctor_command", help="Check the stack against the pre-launch checklist."
    )
    host.add_commands(cli)
    return cli


def _named_stack_rows() -> list[dict[str, Any]]:
    """One row per entry point of ``keel.stacks``: each is loaded, so a broken one shows its error."""
    rows = []
    for name, eps in sorted(stack_entry_points().items()):
        for ep in eps:
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
            row = {"name": name, "distribution": dist, "target": ep.value, "status": "ok", "extends": None, "error": ""}
            if len(eps) > 1:
                others = ", ".join(e.dist.metadata["Name"] for e in eps if e is not ep and e.dist is not None)
                row.update(status="conflict", error=f"{others} ships a stack of the same name; neither is used")
            else:
                try:
                    row["extends"] = load_named(ep).extends
                except KeelError as err:
                    row.update(status="failed", error=str(err))
            rows.append(row)
    return rows


def _describe_action(spec: ActionSpec, source: str) -> dict[str, Any]:
    """One row of ``keel actions --json``."""
    return {
        "name": spec.name,
        "description": spec.description,
        "risk": spec.risk,
        "scope": sorted(spec.visible_to) if spec.visible_to is not None else "every agent",
        "tags": sorted(spec.tags),
        "source": source,
        "timeout": spec.timeout,
        "parameters": json.loads(json.dumps(spec.parameters, default=str)),
    }


def _alive(pid: int) -> bool:
    """Whether a process still runs (an exited one its parent has not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _holds(pid: int, name: str) -> bool:
    """Whether ``pid`` is a `keel env start NAME --hold` process."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc here: trust the file
    return b"--hold" in argv and name.encode() in argv


def _pidfile(name: str) -> Path:
    """Where `keel env start NAME --hold` says which process holds an environment."""
    return Path(".keel") / "env" / f"{name}.pid"


def _print_envs(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no environments declared: add [environments.<name>] tables to keel.toml")
    for row in rows:
        health = row["last_health"]
        checked = "healthy" if health and health["ok"] else (health["detail"] if health else "not checked")
        click.echo(f"{row['name']:<16} {row['driver']:<10} {row['status']:<10} restarts={row['restarts']} {checked}")
        if row["error"]:
            click.echo(f"    error: {row['error']}")


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    sys.stderr.write(f"warning: {message}\n")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    try:
        diagnostic = _command(args) in DIAGNOSTIC
        stack_error: KeelError | None = None
        try:
            stack = load_stack(_prescan(args, "--stack-file"), name=_prescan(args, "--stack"))
        except KeelError as err:
            if not diagnostic:
                raise
            click.echo(f"warning: {err}; listing without the stack", err=True)
            stack, stack_error = Stack(), err
        host = discover_for(stack, tolerant=True)
        if stack_error is not None:
            host.problems.insert(0, stack_error)
        cli = build_cli(host, stack)
        code = cli.main(args=args, prog_name="keel", standalone_mode=False)
        if isinstance(code, int) and code:  # click returns an Exit's code when not standalone
            sys.exit(code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeelError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
