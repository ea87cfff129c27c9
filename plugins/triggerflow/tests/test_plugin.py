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
    @keel.hookimpl
    def keel_triggerflow_runners(self) -> Any:
        yield RunnerSpec(name="other", factory=lambda runtime, options: LocalRunner(runtime, options))


class Clash:
    @keel.hookimpl
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
    runtime = Runtime(make_host(OtherRunner(), Clash(), plugin))  # the spec's plugin last: order is free
    with pytest.raises(PluginConflictError):
        runner_specs(runtime)


async def test_local_runner_starts_and_resumes(keel_runtime: Any) -> None:
    from keel_triggerflow import TriggerFlow

    flow = TriggerFlow("r")
    flow.to(lambda ctx: ctx.value + 1).pause_for("go").to(lambda ctx: ctx.value)
    runner = get_runner(keel_runtime)
    execution = await runner.start(flow, 1)
    with anyio.fail_after(10):
        while not execution.get_pending_interrupts():  # type: ignore[attr-defined]
            await anyio.sleep(0.01)
    await execution.signal("go", "done")
    assert await execution.result() == "done"


class Recording:
    """A runner named "elsewhere" that records what it is asked to start (and runs it locally)."""

    started: list[tuple[str, Any, str]] = []

    @keel.hookimpl
    def keel_triggerflow_runners(self) -> Any:
        class Elsewhere(LocalRunner):
            name = "elsewhere"

            async def start(self, flow: Any, input: Any = None, *, tenant: str = "default", **options: Any) -> Any:
                Recording.started.append((flow.name, input, tenant))
                return await super().start(flow, input, tenant=tenant, **options)

        yield RunnerSpec(name="elsewhere", factory=lambda runtime, options: Elsewhere(runtime, options))


def _stack(tmp_path: Path, text: str) -> Stack:
    (tmp_path / "keel.toml").write_text(text)
    return keel.load_stack(tmp_path / "keel.toml")


async def test_runtime_start_and_flow_start_honour_the_stack_runner_line(tmp_path: Path) -> None:
    from keel_triggerflow import FlowError, TriggerFlow

    flow = TriggerFlow("plus-one")
    flow.to(lambda ctx: ctx.value + 1)
    Recording.started.clear()
    stack = _stack(tmp_path, 'store = "memory"\nrunner = "elsewhere"\n')
    async with Runtime(make_host(plugin, Recording()), stack) as runtime:
        execution = await runtime.start(flow, 1, tenant="acme")
        assert await execution.result() == 2
        assert await (await flow.start(5, runtime=runtime)).result() == 6
        with pytest.raises(FlowError, match=r"runner = 'elsewhere'.*runtime.start\(flow, input\)"):
            await flow.run(1, runtime=runtime)  # in process only: refused, not run past the runner line
    assert Recording.started == [("plus-one", 1, "acme"), ("plus-one", 5, "default")]


def test_cli_run_starts_on_the_stack_runner(tmp_path: Path) -> None:
    Recording.started.clear()
    (tmp_path / "greet.py").write_text(FLOW_FILE)
    cli = build_cli(make_host(plugin, Recording()), _stack(tmp_path, 'store = "memory"\nrunner = "elsewhere"\n'))
    result = CliRunner().invoke(cli, ["flow", "run", str(tmp_path / "greet.py"), "--input", '{"name": "Ada"}'])
    assert result.exit_code == 0, result.output
    assert Recording.started == [("greet", {"name": "Ada"}, "default")]
    assert "runner 'elsewhere'" in result.stderr and '"hello Ada"' in result.stdout


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


def test_cli_graph_prints_mermaid(tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(FLOW_FILE)
    result = CliRunner().invoke(build_cli(make_host(plugin), Stack()), ["flow", "graph", str(tmp_path / "greet.py")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("flowchart TD\n") and '["greet"]' in result.output


def test_cli_refuses_bad_input_json(tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(FLOW_FILE)
    cli = build_cli(make_host(plugin), Stack())
    result = CliRunner().invoke(cli, ["flow", "run", str(tmp_path / "greet.py"), "--input", "{nope"])
    assert result.exit_code != 0
    assert "must be JSON" in result.output


# ------------------------------------------------------------------------------------ retention


def test_parse_age_takes_seconds_or_a_unit_and_names_the_fix() -> None:
    from keel_triggerflow import FlowError, parse_age

    assert parse_age(90) == 90.0
    assert parse_age("90s") == 90.0
    assert parse_age("12h") == 12 * 3600
    assert parse_age(" 30d ") == 30 * 86400
    assert parse_age("2w") == 14 * 86400
    assert parse_age("1.5m") == 90.0
    for bad in ("", "ten days", "-1d", "nan", "3y", True):
        with pytest.raises(FlowError, match="give seconds .* '30d'"):
            parse_age(bad)  # type: ignore[arg-type]


def test_runner_retention_comes_from_the_stack_and_a_typo_is_an_error(tmp_path: Path) -> None:
    from keel import load_stack

    (tmp_path / "keel.toml").write_text('[runner]\ndriver = "local"\nretention = "30d"\n')
    runner = get_runner(Runtime(make_host(plugin), load_stack(tmp_path / "keel.toml")))
    assert isinstance(runner, LocalRunner) and runner.options.retention == 30 * 86400
    with pytest.raises(keel.StackError, match=r"runner 'local': invalid options \(retension: .*retention"):
        LocalRunner(Runtime(make_host(plugin)), {"retension": "30d"})
    with pytest.raises(keel.StackError, match=r"runner 'local': invalid options \(retention: .*invalid age 'soon'"):
        LocalRunner(Runtime(make_host(plugin)), {"retention": "soon"})


def an_hour_on() -> float:
    """A clock an hour ahead, named by the stack below."""
    import time

    return time.time() + 3600


async def test_runner_clock_comes_from_the_stack_and_a_bad_one_is_an_error(tmp_path: Path) -> None:
    """A wait's deadline is set on the stack's clock (default ``time.time``)."""
    import time

    from keel import load_stack
    from keel_triggerflow import TriggerFlow

    flow = TriggerFlow("minute")
    flow.to(lambda ctx: ctx.value).pause_for("go", timeout=60)
    (tmp_path / "keel.toml").write_text(f'[runner]\ndriver = "local"\nclock = "{__name__}:an_hour_on"\n')
    async with Runtime(make_host(plugin), load_stack(tmp_path / "keel.toml")) as runtime:
        execution = flow.create_execution(runtime)
        assert execution.clock is an_hour_on
        assert (await execution.run(None)).status == "waiting"
        [interrupt] = execution.get_pending_interrupts()
        assert interrupt.deadline is not None and interrupt.deadline > time.time() + 3600, "a minute on that clock"
    async with Runtime(make_host(plugin)) as runtime:
        assert flow.create_execution(runtime).clock is time.time
    for bad, why in (("nowhere:now", "there is no module 'nowhere'"), ("time:timezone", "names .*, not a function")):
        with pytest.raises(keel.StackError, match=rf"runner 'local': invalid options \(clock: .*{why}"):
            LocalRunner(Runtime(make_host(plugin)), {"clock": bad})


async def _two_executions(runtime: Runtime) -> tuple[str, str]:
    """One finished execution and one waiting for a signal, both in the runtime's store."""
    from keel_triggerflow import TriggerFlow

    done = TriggerFlow("done")
    done.to(lambda ctx: "ok")
    waits = TriggerFlow("waits")
    waits.to(lambda ctx: ctx.value).pause_for("go")
    first = done.create_execution(runtime)
    await first.run(None)
    second = waits.create_execution(runtime)
    await second.run(None)
    return first.id, second.id


async def test_purge_deletes_only_finished_executions_past_the_age(keel_runtime: Any) -> None:
    from keel_triggerflow import FlowError, expired_executions

    finished, waiting = await _two_executions(keel_runtime)
    runner = LocalRunner(keel_runtime)
    with pytest.raises(FlowError, match="no retention configured"):
        await runner.purge()
    assert await runner.purge("1h") == 0  # nothing is that old yet
    assert [r["id"] for r in await expired_executions(keel_runtime.store(), older_than=0)] == [finished]
    assert await runner.purge(0) == 1
    store = keel_runtime.store()
    assert await store.last_seq("default", f"triggerflow/{finished}") == 0
    assert await store.get("default", "triggerflow", f"exec:{finished}") is None
    assert await store.last_seq("default", f"triggerflow/{waiting}") > 0  # a waiting execution is kept


async def test_recover_applies_the_configured_retention(keel_runtime: Any) -> None:
    finished, waiting = await _two_executions(keel_runtime)
    runner = LocalRunner(keel_runtime, {"retention": 0})
    await runner.recover([])
    store = keel_runtime.store()
    assert await store.last_seq("default", f"triggerflow/{finished}") == 0
    assert await store.last_seq("default", f"triggerflow/{waiting}") > 0


def _cli_with_two_executions(tmp_path: Path, stack_toml: str) -> tuple[Any, str, str]:
    """A CLI over one in-memory store (shared by every runtime it opens) holding one finished and
    one waiting execution: (cli, finished id, waiting id)."""
    from keel import MemoryStore, load_stack

    store = MemoryStore()

    class Shared:
        @keel.hookimpl
        def keel_stores(self) -> Any:
            yield keel.StoreSpec(name="shared", durable=True, factory=lambda options: store)

    (tmp_path / "keel.toml").write_text('store = "shared"\n' + stack_toml)
    host, stack = make_host(plugin, Shared()), load_stack(tmp_path / "keel.toml")

    async def seed() -> tuple[str, str]:
        async with Runtime(host, stack) as runtime:
            return await _two_executions(runtime)

    finished, waiting = anyio.run(seed)
    return build_cli(host, stack), finished, waiting


def test_cli_purge_dry_run_then_delete(tmp_path: Path) -> None:
    cli, finished, waiting = _cli_with_two_executions(tmp_path, '[runner]\ndriver = "local"\nretention = 0\n')
    dry = CliRunner().invoke(cli, ["flow", "purge", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would delete 1 finished execution(s)" in dry.output and finished in dry.output
    assert waiting not in dry.output
    kept = CliRunner().invoke(cli, ["flow", "purge", "--older-than", "1d", "--json"])
    assert json.loads(kept.output) == {"older_than": 86400.0, "dry_run": False, "executions": []}
    done = CliRunner().invoke(cli, ["flow", "purge", "--json"])  # the stack's retention: 0 s
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["executions"] == [finished]
    again = CliRunner().invoke(cli, ["flow", "purge", "--json"])
    assert json.loads(again.output)["executions"] == []
    bad = CliRunner().invoke(cli, ["flow", "purge", "--older-than", "forever"])
    assert bad.exit_code != 0 and "invalid age 'forever'" in str(bad.exception)  # `keel` prints it as Error: ...


def test_cli_ls_filters_by_status_flow_and_recency(tmp_path: Path) -> None:
    cli, finished, waiting = _cli_with_two_executions(tmp_path, "")

    def ls(*args: str) -> list[str]:
        result = CliRunner().invoke(cli, ["flow", "ls", "--json", *args])
        assert result.exit_code == 0, result.output
        return [row["id"] for row in json.loads(result.output)]

    assert ls() == [finished, waiting]
    assert ls("--status", "waiting") == [waiting]
    assert ls("--status", "completed", "--status", "waiting") == [finished, waiting]
    assert ls("--flow", "done") == [finished]
    assert ls("--last", "1") == [waiting]
    text = CliRunner().invoke(cli, ["flow", "ls", "--status", "failed"]).output
    assert text.strip() == "no executions match"
    plain = CliRunner().invoke(cli, ["flow", "ls"]).output
    assert "waiting" in plain and " ago" in plain
    bad = CliRunner().invoke(cli, ["flow", "ls", "--status", "paused"])
    assert bad.exit_code != 0 and "'paused' is not one of" in bad.output


WAITING_FLOW = """
from keel_triggerflow import TriggerFlow

flow = TriggerFlow("waits")
flow.to(lambda ctx: ctx.value).pause_for("approve").to(lambda ctx: ctx.value)
"""


def test_cli_run_refuses_an_unknown_runner(tmp_path: Path) -> None:
    from keel import load_stack

    (tmp_path / "greet.py").write_text(FLOW_FILE)
    (tmp_path / "keel.toml").write_text('store = "memory"\nrunner = "celery"\n')
    cli = build_cli(make_host(plugin), load_stack(tmp_path / "keel.toml"))
    result = CliRunner().invoke(cli, ["flow", "run", str(tmp_path / "greet.py"), "--input", '{"name": "Ada"}'])
    assert isinstance(result.exception, DriverNotFoundError), result.output
    assert "unknown runner 'celery'" in str(result.exception) and "keel.toml" in str(result.exception)


def test_cli_run_warns_that_a_waiting_run_in_memory_is_not_durable(tmp_path: Path) -> None:
    (tmp_path / "waits.py").write_text(WAITING_FLOW)
    cli = build_cli(make_host(plugin), Stack())  # no keel-store-sqlite here: the in-memory fallback
    result = CliRunner().invoke(cli, ["flow", "run", str(tmp_path / "waits.py"), "--input", "1"])
    assert result.exit_code == 0, result.output
    assert "waiting for 'approve'" in result.stdout
    assert "keel flow signal" not in result.output, "no other process can answer a run kept in memory"
    assert "not durable" in result.stderr and "Install keel-store-sqlite" in result.stderr


def test_keel_plugins_does_not_import_the_engine(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys\nfrom keel.cli import main\ntry:\n    main(['plugins'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('keel_triggerflow')))"
    )
    env = {"PATH": "/usr/bin:/bin", "KEEL_LOAD_PLUGINS": "triggerflow"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    imported = done.stdout.strip().splitlines()[-1]
    assert "keel_triggerflow.plugin" in imported and "keel_triggerflow._engine" not in imported
    assert "keel_triggerflow.cli" not in imported, "`keel flow` is imported when it runs, not at start-up"


def test_cli_ls_lists_executions_indexed_before_the_status_keys(tmp_path: Path) -> None:
    """A store written before the status keys: `keel flow ls --status waiting` found nothing in it
    (issue 23); the command re-indexes the tenant first, once."""
    import anyio

    from keel import MemoryStore, load_stack
    from keel_triggerflow import _history

    store = MemoryStore()

    class Shared:
        @keel.hookimpl
        def keel_stores(self) -> Any:
            yield keel.StoreSpec(name="shared", durable=True, factory=lambda options: store)

    (tmp_path / "keel.toml").write_text('store = "shared"\n')
    host, stack = make_host(plugin, Shared()), load_stack(tmp_path / "keel.toml")

    async def seed() -> tuple[str, str]:
        async with Runtime(host, stack) as runtime:
            ids = await _two_executions(runtime)
        for key in await store.list_keys("default", "triggerflow"):  # what the older version wrote: rows only
            if key.startswith(("by:", "due:")) or key == "index":
                await store.delete("default", "triggerflow", key)
        return ids

    _finished, waiting = anyio.run(seed)
    _history._indexed.clear()  # a new process
    assert anyio.run(_history.rows_by_status, store, "default", "waiting") == []
    result = CliRunner().invoke(build_cli(host, stack), ["flow", "ls", "--json", "--status", "waiting"])
    assert result.exit_code == 0, result.output
    assert [row["id"] for row in json.loads(result.output)] == [waiting]
