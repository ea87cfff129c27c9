"""The plugin: entry point, runner hookspecs, CLI."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

import keel
from keel import DriverNotFoundError, PluginConflictError, Runtime, Stack
from keel.cli import build_cli
from keel.testing import make_host
from keel_triggerflow import plugin
from keel_triggerflow.runners import LocalRunner, RunnerSpec, get_runner, runner_specs


def test_entry_point_names_the_cheap_plugin_module() -> None:
    [ep] = [e for e in importlib.metadata.entry_points(group="keel") if e.name == "triggerflow"]
    assert ep.value == "keel_triggerflow.plugin"


class OtherRunner:
    @keel.hookimpl(optionalhook=True)
    def keel_triggerflow_runners(self) -> Any:
        yield RunnerSpec(name="other", factory=lambda runtime, options: LocalRunner(runtime, options))


class Clash:
    @keel.hookimpl(optionalhook=True)
    def keel_triggerflow_runners(self) -> Any:
        yield RunnerSpec(name="other", factory=lambda runtime, options: LocalRunner(runtime, options))


def test_runners_come_from_the_hook() -> None:
    runtime = Runtime(make_host(plugin, OtherRunner()))
    assert set(runner_specs(runtime)) == {"local", "other"}
    assert isinstance(get_runner(runtime), LocalRunner)
    assert isinstance(get_runner(runtime, "other"), LocalRunner)
    with pytest.raises(DriverNotFoundError, match="'local', 'other'"):
        get_runner(runtime, "temporal")


def test_two_plugins_with_one_runner_name_conflict() -> None:
    runtime = Runtime(make_host(OtherRunner(), Clash()))
    with pytest.raises(PluginConflictError):
        runner_specs(runtime)


async def test_local_runner_starts_and_resumes(keel_runtime: Any) -> None:
    from keel_triggerflow import TriggerFlow

    flow = TriggerFlow("r")
    flow.to(lambda ctx: ctx.value + 1).pause_for("go").to(lambda ctx: ctx.value)
    runner = get_runner(keel_runtime)
    execution = await runner.start(flow, 1)
    while not execution.get_pending_interrupts():  # type: ignore[attr-defined]
        await anyio.sleep(0.01)
    await execution.signal("go", "done")
    assert await execution.result() == "done"


FLOW_FILE = """
from keel_triggerflow import TriggerFlow

async def greet(ctx):
    return f"hello {ctx.value['name']}"

flow = TriggerFlow("greet")
flow.to(greet)
"""


def test_cli_run_prints_the_result(tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(FLOW_FILE)
    cli = build_cli(make_host(plugin), Stack())
    result = CliRunner().invoke(
        cli, ["flow", "run", str(tmp_path / "greet.py"), "--input", '{"name": "Ada"}', "--json"]
    )
    assert result.exit_code == 0, result.output
    snapshot = json.loads(result.output)
    assert snapshot["status"] == "completed" and snapshot["result"] == "hello Ada"


def test_cli_refuses_bad_input_json(tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(FLOW_FILE)
    cli = build_cli(make_host(plugin), Stack())
    result = CliRunner().invoke(cli, ["flow", "run", str(tmp_path / "greet.py"), "--input", "{nope"])
    assert result.exit_code != 0
    assert "must be JSON" in result.output
