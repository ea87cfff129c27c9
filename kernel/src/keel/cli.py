"""The ``keel`` command. Plugins add sub-commands through the ``keel_commands`` hook."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

import click

from keel.errors import KeelError
from keel.plugins import PluginHost
from keel.refs import load_ref
from keel.runtime import Runtime, discover_for
from keel.stack import Stack, load_stack

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
    it runs, so ``keel plugins`` (and every other command) does not import every plugin's CLI.

    Two plugins adding one name is never a silent override: unless each names a distinct ``kind``
    (then ``keel NAME --runner KIND`` picks one, see :meth:`add_lazy_command`), the name is a
    conflict: :meth:`conflicts` lists it (``keel plugins`` shows it, strict mode makes it an error)
    and running the command fails, naming both plugins and how to choose."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, tuple[str, str, str]] = {}  # name -> (target, short help, plugin)
        self._kinds: dict[str, dict[str, tuple[str, str, str]]] = {}  # name -> kind -> (target, help, plugin)
        self._default_kind: dict[str, str] = {}
        self._owners: dict[str, str] = {}  # name -> plugin, for commands added eagerly by a plugin
        self._conflicts: dict[str, list[str]] = {}  # name -> the plugins that added it
        #: the plugin whose ``keel_commands`` is running (set by PluginHost.add_commands)
        self.adding_plugin = ""

    def add_lazy_command(
        self, name: str, target: str, help: str = "", *, kind: str = "", default: bool = False
    ) -> None:
        """Add sub-command ``name`` by reference.

        :param target: ``"package.module:attribute"``, a click command or group, imported when the
            command runs or its own ``--help`` is asked for.
        :param help: the one line ``keel --help`` shows for it (so listing imports nothing).
        :param kind: share ``name`` with other plugins: each adds its own ``kind`` and
            ``keel NAME --runner KIND ...`` runs that one (e.g. ``keel worker --runner temporal``).
        :param default: with ``kind``, the one ``keel NAME`` runs without ``--runner`` (one plugin's
            at most: two defaults are a conflict). A lone kind is the default anyway.
        """
        # one plugin adding its own command again (``add_commands`` run twice on one group) replaces it
        if not kind and name in self._lazy and self._lazy[name][2] == self.adding_plugin:
            del self._lazy[name]
        previous = self._kinds.get(name, {}).get(kind) if kind else None
        if previous is not None and previous[2] == self.adding_plugin:
            del self._kinds[name][kind]
        if not kind:
            if name in self._lazy or name in self._kinds or name in self._owners:
                self._conflict(name, self._owner(name))
                return
            self._lazy[name] = (target, help, self.adding_plugin)
            return
        if name in self._lazy or name in self._owners:
            self._conflict(name, self._owner(name))
            return
        kinds = self._kinds.setdefault(name, {})
        if kind in kinds:
            self._conflict(name, kinds[kind][2])
            return
        kinds[kind] = (target, help, self.adding_plugin)
        if default:
            if self._default_kind.get(name, kind) != kind:
                self._conflict(name, kinds[self._default_kind[name]][2])
                return
            self._default_kind[name] = kind

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name or ""
        if self.adding_plugin:  # a plugin's keel_commands adding a command eagerly
            if self._owners.get(name) == self.adding_plugin:  # the same plugin again: replaces it
                del self._owners[name]
            if name in self._lazy or name in self._kinds or name in self._owners:
                self._conflict(name, self._owner(name))
                return
            self._owners[name] = self.adding_plugin
        super().add_command(cmd, name)

    def _owner(self, name: str) -> str:
        if name in self._lazy:
            return self._lazy[name][2]
        if name in self._owners:
            return self._owners[name]
        return ", ".join(sorted({plugin for _t, _h, plugin in self._kinds.get(name, {}).values()}))

    def _conflict(self, name: str, first: str) -> None:
        plugins = self._conflicts.setdefault(name, [first])
        if self.adding_plugin not in plugins:
            plugins.append(self.adding_plugin)

    def conflicts(self) -> dict[str, list[str]]:
        """Each command name more than one plugin added without distinct kinds, with those plugins."""
        return {name: list(plugins) for name, plugins in self._conflicts.items()}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy, *self._kinds})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._conflicts:
            plugins = self._conflicts[cmd_name]
            raise KeelError(
                f"command {cmd_name!r} is added by {len(plugins)} plugins ({', '.join(map(repr, plugins))}), so keel "
                f"will not guess which one you mean. Disable all but one with KEEL_DISABLE_PLUGINS="
                f"{plugins[-1]} (or {plugins[0]}), or use the other plugin's own name for its command if it has one"
            )
        if cmd_name not in self.commands and cmd_name in self._lazy:
            target, _help, plugin = self._lazy[cmd_name]
            click.Group.add_command(self, self.load(cmd_name, target, plugin), cmd_name)
        if cmd_name not in self.commands and cmd_name in self._kinds:
            return _KindDispatch(self, cmd_name)
        return super().get_command(ctx, cmd_name)

    def load(self, cmd_name: str, target: str, plugin: str) -> click.Command:
        """Import a command added by reference (an error names the plugin and the fix)."""
        origin = f" of plugin {plugin!r}" if plugin else ""
        try:
            command = load_ref(target, what=f"command {cmd_name!r}{origin}")
        except KeelError as err:
            raise KeelError(
                f"{err}. Or reinstall the plugin, or skip it with KEEL_DISABLE_PLUGINS={plugin or '<plugin>'}"
            ) from err.__cause__
        if not isinstance(command, click.Command):
            raise KeelError(f"command {cmd_name!r} ({target}) is not a click command: {command!r}")
        return command

    def _help_of(self, name: str) -> str:
        if name in self._lazy:
            return self._lazy[name][1]
        kinds = self._kinds[name]
        default = self._default_kind.get(name) or (next(iter(kinds)) if len(kinds) == 1 else "")
        first = kinds[default][1] if default else ""
        return f"[--runner {'|'.join(sorted(kinds))}] {first}" if len(kinds) > 1 else first

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not imported yet shows the help it was added with."""
        names = [n for n in self.list_commands(ctx) if n in self.commands or n in self._lazy or n in self._kinds]
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
                rows.append((name, _short(self._help_of(name), limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


_KIND_OPTIONS = ("--runner", "--kind")


class _KindDispatch(click.Command):
    """``keel NAME [--runner KIND] ARGS...``: runs the command the plugin of ``KIND`` added under
    ``NAME`` with ``ARGS`` (the default kind without ``--runner``; none chosen is an error listing them)."""

    def __init__(self, group: KeelGroup, name: str):
        super().__init__(
            name,
            params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
            add_help_option=False,
        )
        self.group = group

    def invoke(self, ctx: click.Context) -> Any:
        args = list(ctx.params["args"])
        kind, rest = "", args
        for i, arg in enumerate(args):
            if arg in _KIND_OPTIONS and i + 1 < len(args):
                kind, rest = args[i + 1], args[:i] + args[i + 2 :]
                break
            if "=" in arg and arg.split("=", 1)[0] in _KIND_OPTIONS:
                kind, rest = arg.split("=", 1)[1], args[:i] + args[i + 1 :]
                break
        assert self.name is not None
        kinds = self.group._kinds[self.name]
        choices = ", ".join(f"{k} (plugin {kinds[k][2]!r})" for k in sorted(kinds))
        if not kind:
            kind = self.group._default_kind.get(self.name) or (next(iter(kinds)) if len(kinds) == 1 else "")
            if not kind:
                raise click.UsageError(f"keel {self.name} needs --runner KIND: the installed kinds are {choices}")
        if kind not in kinds:
            raise click.UsageError(
                f"keel {self.name} has no kind {kind!r}: the installed kinds are {choices} "
                "(a kind comes from a plugin: install or enable the one that adds it)"
            )
        target, _help, plugin = kinds[kind]
        command = self.group.load(self.name, target, plugin)
        own = {opt for param in command.params for opt in getattr(param, "opts", [])}
        args = args if own & set(_KIND_OPTIONS) else rest  # a command with its own --runner still sees it
        shown = (
            f"{self.name} --runner {kind}" if len(kinds) > 1 else self.name
        )  # its usage line: keel worker --runner x
        with command.make_context(shown, args, parent=ctx.parent) as sub:
            return command.invoke(sub)


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
    """The ``keel`` group: every sub-command, the kernel's own included, comes from ``keel_commands``."""

    @click.group(cls=KeelGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--stack", "stack_name", metavar="NAME", help="a named stack (entry-point group keel.stacks)")
    @click.option("--stack-file", metavar="PATH", help="a stack file instead of ./keel.toml")
    @click.pass_context
    def cli(ctx: click.Context, stack_name: str | None, stack_file: str | None) -> None:
        """Keel: a plugin-based agent framework."""
        ctx.obj = CliState(host, stack)
        if ctx.invoked_subcommand not in DIAGNOSTIC:
            host.raise_problems()  # the diagnostic commands list the problems instead

    host.add_commands(cli)
    return cli


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
