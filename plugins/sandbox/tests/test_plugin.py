"""The sandbox as a plugin: conformance, the environment driver, its actions through policy and audit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

import keel
from keel.stack import load_stack
from keel.testing import make_host
from keel.testing.conformance import ActionConformance, EnvironmentConformance
from keel_sandbox import Sandbox, SandboxConfig, SandboxEnvironment, plugin, sandbox_actions


class TestRunPython(ActionConformance):
    @pytest.fixture
    def action_spec(self) -> keel.ActionSpec:
        (spec,) = sandbox_actions(Sandbox(SandboxConfig(languages=["python"], wall_seconds=10)))
        return spec

    @pytest.fixture
    def valid_arguments(self) -> dict[str, Any]:
        return {"code": "print(2 + 2)"}


class TestSandboxEnvironment(EnvironmentConformance):
    @pytest.fixture
    def environment_spec(self) -> keel.EnvironmentSpec:
        return make_host(plugin).environments()["sandbox"].spec

    @pytest.fixture
    def environment(self, environment_spec: keel.EnvironmentSpec) -> keel.Environment:
        return environment_spec.factory({"languages": ["python", "shell"]})


def test_entry_point_is_installed() -> None:
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="keel") if ep.name == "sandbox"]
    assert ep.load() is plugin


def test_bad_options_name_the_known_keys() -> None:
    with pytest.raises(keel.StackError, match=r"memroy_mb.*Valid options: network, env"):
        SandboxEnvironment({"memroy_mb": 10})
    with pytest.raises(keel.KeelError, match="write_paths is not supported"):
        Sandbox(SandboxConfig(write_paths=["/srv"]))


def test_risk_follows_the_network_permission() -> None:
    assert {s.risk for s in sandbox_actions(Sandbox(SandboxConfig()))} == {"write"}
    assert {s.risk for s in sandbox_actions(Sandbox(SandboxConfig(network=True)))} == {"irreversible"}
    assert [s.name for s in sandbox_actions(Sandbox(SandboxConfig(prefix="py_", languages=["python"])))] == [
        "py_run_python"
    ]


async def test_inputs_outputs_and_store_blobs(tmp_path: Path) -> None:
    store = keel.MemoryStore()
    sandbox = Sandbox(SandboxConfig(artifacts_dir=str(tmp_path / "out"), wall_seconds=10), store=store)
    code = "import sys, helper\ndata = helper.load('data/in.csv')\nopen('report.txt', 'w').write(data.upper())\nprint(sys.stdin.read())"
    result = await sandbox.run_script(
        "python",
        code,
        stdin="from stdin",
        files={"data/in.csv": "a,b\n", "helper.py": "def load(p):\n    return open(p).read()\n"},
    )
    assert result.ok and result.stdout == "from stdin\n"
    (report,) = result.files  # the unchanged inputs and the script itself are not products
    assert report.path == "report.txt" and report.size == 4 and report.blob is not None
    assert await store.get_blob("default", report.blob.sha256) == b"A,B\n"
    assert report.saved_to and Path(report.saved_to).read_bytes() == b"A,B\n"
    with pytest.raises(keel.ActionInputError, match="relative path"):
        await sandbox.run_script("python", "", files={"../x": "no"})


async def test_symlink_out_of_the_folder_is_not_collected() -> None:
    result = await Sandbox(SandboxConfig(wall_seconds=10)).run_script(
        "shell", "ln -s /etc/passwd stolen; ln /etc/passwd hard 2>/dev/null; echo hi > ok.txt"
    )
    assert result.ok, result
    assert [f.path for f in result.files] == ["ok.txt"]


async def test_missing_program_is_a_clear_result() -> None:
    result = await Sandbox(SandboxConfig(wall_seconds=10)).run(["no-such-program-xyz"])
    assert not result.ok and result.reason == "start_failed"
    assert "not on the sandbox PATH" in result.message


@pytest.mark.skipif(shutil.which("node", path="/usr/local/bin:/usr/bin:/bin") is None, reason="Node.js not installed")
async def test_node_runs_under_a_memory_limit() -> None:
    sandbox = Sandbox(SandboxConfig(memory_mb=256, wall_seconds=20))
    result = await sandbox.run_script("node", "console.log([1, 2, 3].map(x => x * 2).join(','))")
    assert result.ok and result.stdout == "2,4,6\n", result
    hog = await sandbox.run_script("node", "const a = []; while (true) { a.push(new Array(1e6).fill(1)); }")
    assert not hog.ok and hog.reason == "memory", hog


def runtime(tmp_path: Path, toml: str) -> keel.Runtime:
    (tmp_path / "keel.toml").write_text(toml)
    return keel.Runtime(make_host(plugin), load_stack(cwd=tmp_path))


STACK = """
[environments.py]
driver = "sandbox"
start = "eager"
network = false
memory_mb = 256
cpu_seconds = 2
wall_seconds = 5
languages = ["python"]
"""


async def test_stack_table_gives_a_bound_run_python(tmp_path: Path) -> None:
    rt = runtime(tmp_path, STACK)
    sub = rt.bus.subscribe(buffer=1000)
    async with rt:
        (state,) = rt.environments.status()
        assert state.status == "ready" and state.actions == ["run_python"], state
        assert rt.actions.source("run_python") == "environment:py"
        spec = rt.actions.get("run_python")
        assert spec.risk == "write" and "memory 256 MB" in spec.description
        ok = await rt.call_action("run_python", {"code": "print(sum(range(10)))"})
        assert ok.ok and ok.result["stdout"] == "45\n"
        hog = await rt.call_action("run_python", {"code": "x = bytearray(1 << 30)"})
        assert hog.ok and hog.result["reason"] == "memory", "a failed run is a result the model reads"
        bad = await rt.call_action("run_python", {"script": "print(1)"})
        assert not bad.ok and bad.error and bad.error["type"] == "invalid_arguments"
        health = await rt.environments.check("py")
        assert health.ok and "network isolation" in health.detail
    events = []
    while True:
        try:
            events.append(sub._receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    kinds = [e.kind for e in events]
    assert kinds.count("action.completed") == 2 and kinds.count("action.failed") == 1
    summaries = [e.payload["result"] for e in events if e.kind == "action.completed"]
    assert summaries[1].startswith('{"ok": false, "reason": "memory"'), "the audit record says how the run ended"
    assert "environment.ready" in kinds and kinds[-1] == "environment.stopped"


async def test_network_sandbox_needs_approval(tmp_path: Path) -> None:
    rt = runtime(tmp_path, STACK + '\n[environments.net]\ndriver = "sandbox"\nprefix = "net_"\nnetwork = true\n')
    async with rt:
        await rt.environments.ensure("net")
        denied = await rt.call_action("net_run_python", {"code": "print(1)"})
        assert not denied.ok and denied.verdict == "deny", "irreversible without an approver is never run"


def sandboxed_processes() -> list[int]:
    from keel_sandbox.runner import UID_RANGE

    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if fields.get("State", "").split()[:1] == ["Z"]:
            continue
        if UID_RANGE[0] <= int(fields["Uid"].split()[0]) < UID_RANGE[1]:
            found.append(int(status.parent.name))
    return found


async def test_no_run_outlives_its_stack(tmp_path: Path) -> None:
    rt = runtime(tmp_path, STACK.replace("wall_seconds = 5", "wall_seconds = 60"))
    outcomes: list[keel.ActionOutcome] = []
    async with rt, anyio.create_task_group() as tg:

        async def call() -> None:
            outcomes.append(await rt.call_action("run_python", {"code": "import time\ntime.sleep(600)"}))

        tg.start_soon(call)
        with anyio.fail_after(20):
            while not sandboxed_processes():
                await anyio.sleep(0.05)
        if not Sandbox(SandboxConfig()).capabilities.own_user:
            pytest.skip("without root the runs cannot be found by user id")
        await rt.environments.stop("py")
    (outcome,) = outcomes
    assert outcome.ok and outcome.result["reason"] == "killed", outcome
    assert "sandbox was stopped" in outcome.result["message"]
    assert sandboxed_processes() == []


async def test_a_cancelled_run_leaves_no_process() -> None:
    sandbox = Sandbox(SandboxConfig(wall_seconds=60))
    if not sandbox.capabilities.own_user:
        pytest.skip("without root the runs cannot be found by user id")
    with anyio.move_on_after(1.5) as scope:
        await sandbox.run_script("shell", "sleep 600 & sleep 600")
    assert scope.cancelled_caught
    assert sandboxed_processes() == []


async def test_a_base_folder_others_cannot_reach_is_a_clear_error(tmp_path: Path) -> None:
    sandbox = Sandbox(SandboxConfig(workdir_base=str(tmp_path / "private" / "runs")))
    if not sandbox.capabilities.own_user:
        pytest.skip("runs share the host's user id here")
    (tmp_path / "private").mkdir(mode=0o700)
    with pytest.raises(keel.KeelError, match="not reachable by other users"):
        await sandbox.run_script("python", "print(1)")


def test_entry_module_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, keel_sandbox.plugin; print('keel_sandbox.runner' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", "plugin discovery must not import the runner"


def test_keel_stack_checks_an_environment_table_naming_the_key(tmp_path: Path) -> None:
    # EnvironmentSpec.options: a typo is refused when the stack resolves, before any sandbox starts
    (tmp_path / "keel.toml").write_text(
        'store = "memory"\n[environments.py]\ndriver = "sandbox"\nstart = "eager"\nmemory = 256\n'
    )
    with pytest.raises(keel.StackError) as caught:
        load_stack(tmp_path / "keel.toml").check(make_host(plugin))
    message = str(caught.value)
    assert "[environments.py] of driver 'sandbox'" in message and "memory" in message and "memory_mb" in message
    (tmp_path / "keel.toml").write_text(
        'store = "memory"\n[environments.py]\ndriver = "sandbox"\nmemory_mb = 256\nlanguages = ["python"]\n'
    )
    rows = {r["slot"]: r for r in load_stack(tmp_path / "keel.toml").check(make_host(plugin))}
    assert rows["environments.py"]["status"] == "ok"
