"""Two plugins adding one ``keel`` sub-command name: a visible conflict, never a silent override
(issue 14), unless each adds a distinct kind, which ``keel NAME --runner KIND`` picks (issue 21)."""

from __future__ import annotations

import warnings
from typing import Any

import click
import pytest
from click.testing import CliRunner

import keel
from keel.cli import build_cli
from keel.plugins import PluginHost
from keel.stack import Stack

HERE = __name__


@click.command("worker")
@click.option("--queue", default="default")
def jobs_worker(queue: str) -> None:
    click.echo(f"jobs worker on {queue}")


@click.command("worker")
@click.option("--runner", "runner_name", default=None)
@click.option("--task-queue", default="q")
def temporal_worker(runner_name: str | None, task_queue: str) -> None:
    click.echo(f"temporal worker ({runner_name}) on {task_queue}")


class Adds:
    """A plugin whose ``keel_commands`` adds ``worker`` with the given keyword arguments."""

    def __init__(self, target: str, **kwargs: Any):
        self.target, self.kwargs = target, kwargs

    @keel.hookimpl
    def keel_commands(self, cli: Any) -> None:
        cli.add_lazy_command("worker", f"{HERE}:{self.target}", help=f"the {self.target}", **self.kwargs)


def host_with(*plugins: tuple[str, object], strict: bool = False) -> PluginHost:
    host = PluginHost(trace=False, strict=strict)
    for name, plugin in plugins:
        host.register(plugin, name, distribution=f"keel-{name}")
    return host


def run(host: PluginHost, *args: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cli = build_cli(host, Stack())
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def test_two_plugins_adding_one_command_name_is_a_conflict_naming_both() -> None:
    host = host_with(("scheduler", Adds("jobs_worker")), ("runner-temporal", Adds("temporal_worker")))
    with pytest.warns(RuntimeWarning, match="command name 'worker' is registered twice"):
        build_cli(host, Stack())
    conflict = next(p for p in host.problems if isinstance(p, keel.PluginConflictError))
    assert conflict.plugins == ("scheduler", "runner-temporal")
    assert "distribution keel-scheduler" in str(conflict) and "distribution keel-runner-temporal" in str(conflict)
    assert "KEEL_DISABLE_PLUGINS=runner-temporal" in str(conflict)
    infos = {i.name: i for i in host.plugin_infos()}
    assert any("'worker'" in p for p in infos["scheduler"].problems)
    assert any("'worker'" in p for p in infos["runner-temporal"].problems)

    listed = run(host, "plugins")
    assert listed.exit_code == 0 and "command name 'worker' is registered twice" in listed.output

    ran = run(host, "worker")  # fails closed: neither worker runs
    assert isinstance(ran.exception, keel.KeelError)
    assert "'scheduler', 'runner-temporal'" in str(ran.exception)
    assert "KEEL_DISABLE_PLUGINS=" in str(ran.exception)
    assert "worker on" not in ran.output


def test_strict_mode_makes_a_command_conflict_an_error() -> None:
    host = host_with(("scheduler", Adds("jobs_worker")), ("other", Adds("temporal_worker")), strict=True)
    listed = run(host, "plugins")
    assert listed.exit_code == 1 and "registered twice" in listed.output
    ran = run(host, "stack")  # any command but the diagnostic ones
    assert isinstance(ran.exception, keel.PluginConflictError)


def test_an_eager_command_colliding_with_a_lazy_one_is_a_conflict() -> None:
    class Eager:
        @keel.hookimpl
        def keel_commands(self, cli: Any) -> None:
            cli.add_command(jobs_worker)

    host = host_with(("eager", Eager()), ("lazy", Adds("temporal_worker")))
    ran = run(host, "worker")
    assert isinstance(ran.exception, keel.KeelError) and "'eager', 'lazy'" in str(ran.exception)


def test_distinct_kinds_share_one_name_and_runner_picks() -> None:
    host = host_with(
        ("scheduler", Adds("jobs_worker", kind="jobs", default=True)),
        ("runner-temporal", Adds("temporal_worker", kind="temporal")),
    )
    assert run(host, "worker", "--queue", "mail").output == "jobs worker on mail\n"
    assert run(host, "worker", "--runner", "jobs").output == "jobs worker on default\n"
    # a kind's command with its own --runner still sees it
    assert (
        run(host, "worker", "--runner", "temporal", "--task-queue", "t").output == "temporal worker (temporal) on t\n"
    )
    assert run(host, "worker", "--runner=temporal").output == "temporal worker (temporal) on q\n"
    wrong = run(host, "worker", "--runner", "local")
    assert wrong.exit_code == 2
    assert "no kind 'local'" in wrong.output and "jobs (plugin 'scheduler'), temporal (plugin 'runner-temporal')" in (
        wrong.output
    )
    assert not [p for p in host.problems if isinstance(p, keel.PluginConflictError)]
    helped = run(host, "--help")
    assert "[--runner jobs|temporal] the jobs_worker" in helped.output
    assert "worker --runner temporal [OPTIONS]" in run(host, "worker", "--runner", "temporal", "--help").output


def test_without_a_default_several_kinds_need_runner_and_a_lone_kind_needs_none() -> None:
    host = host_with(("a", Adds("jobs_worker", kind="jobs")), ("b", Adds("temporal_worker", kind="temporal")))
    ran = run(host, "worker")
    assert ran.exit_code == 2 and "needs --runner KIND" in ran.output and "worker on" not in ran.output
    alone = host_with(("b", Adds("temporal_worker", kind="temporal")))
    assert run(alone, "worker").output == "temporal worker (None) on q\n"


def test_one_kind_twice_or_two_defaults_is_a_conflict() -> None:
    same = host_with(("a", Adds("jobs_worker", kind="jobs")), ("b", Adds("temporal_worker", kind="jobs")))
    assert "'a', 'b'" in str(run(same, "worker").exception)
    defaults = host_with(
        ("a", Adds("jobs_worker", kind="jobs", default=True)),
        ("b", Adds("temporal_worker", kind="temporal", default=True)),
    )
    assert "'a', 'b'" in str(run(defaults, "worker").exception)
    mixed = host_with(("a", Adds("jobs_worker")), ("b", Adds("temporal_worker", kind="temporal")))
    assert "'a', 'b'" in str(run(mixed, "worker").exception)


@pytest.mark.parametrize("kwargs", [{}, {"kind": "jobs", "default": True}])
def test_one_plugin_adding_its_commands_twice_is_no_conflict(kwargs: dict[str, Any]) -> None:
    class Eager:
        @keel.hookimpl
        def keel_commands(self, cli: Any) -> None:
            cli.add_command(temporal_worker, "eager-worker")

    # build_cli adds every plugin's commands; a caller that adds them again (tests do) replaces them
    host = host_with(("scheduler", Adds("jobs_worker", **kwargs)), ("eager", Eager()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        cli = build_cli(host, Stack())
        host.add_commands(cli)
    assert not [p for p in host.problems if isinstance(p, keel.PluginConflictError)]
    assert CliRunner().invoke(cli, ["worker", "--queue", "q"]).output == "jobs worker on q\n"
    assert CliRunner().invoke(cli, ["eager-worker"]).exit_code == 0
