"""The EnvironmentManager owns lifecycles: start, health, restart with backoff, give up, stop all."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

import keel
from keel.stack import load_stack
from keel.testing import make_host


class ProcessEnvironment:
    """A long-lived child process: healthy while it runs."""

    def __init__(self, options: dict[str, Any]):
        self.name = options.get("name", "proc")
        self.command = [sys.executable, "-c", options.get("code", "import time; time.sleep(600)")]
        self.process: Process | None = None
        self._status = "stopped"
        self.offers = options.get("offers")

    @property
    def status(self) -> str:  # type: ignore[override]
        return self._status

    async def start(self) -> None:
        self._status = "starting"
        self.process = await anyio.open_process(self.command)
        await anyio.sleep(0.2)
        if self.process.returncode is not None:
            code = self.process.returncode
            self.process = None
            self._status = "failed"
            raise RuntimeError(f"exited at start with code {code}")
        self._status = "ready"

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with anyio.move_on_after(5):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        self.process = None
        self._status = "stopped"

    async def health(self) -> keel.Health:
        alive = self.process is not None and self.process.returncode is None
        return keel.Health(ok=alive, detail="" if alive else "process is not running")

    async def actions(self) -> list[keel.ActionSpec]:
        if not self.offers:
            return []
        pid = self.process.pid if self.process else None

        @keel.action(name=self.offers)
        def whoami() -> int:
            """The serving process id."""
            return pid or 0

        return [whoami]


class Plugin:
    @keel.hookimpl
    def keel_environments(self) -> list[keel.EnvironmentSpec]:
        return [
            keel.EnvironmentSpec(
                name="process", kind="process", factory=ProcessEnvironment,
                restart=keel.RestartPolicy(max_restarts=2, backoff_seconds=0.05),
            )
        ]  # fmt: skip


def runtime(tmp_path: Path, toml: str) -> keel.Runtime:
    (tmp_path / "keel.toml").write_text(toml)
    return keel.Runtime(make_host(Plugin()), load_stack(cwd=tmp_path))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Events:
    def __init__(self, rt: keel.Runtime):
        self.sub = rt.bus.subscribe(buffer=1000)

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while True:
            try:
                event = self.sub._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return out
            out.append((event.kind, event.payload))


EAGER = '[environments.worker]\ndriver = "process"\nstart = "eager"\nhealth_interval = 0.1\noffers = "whoami"\n'


async def test_eager_start_ready_then_stopped_with_the_runtime(tmp_path: Path) -> None:
    rt = runtime(tmp_path, EAGER)
    events = Events(rt)
    async with rt:
        (state,) = rt.environments.status()
        assert state.status == "ready" and state.actions == ["whoami"]
        env = await rt.environments.ensure("worker")
        pid = env.process.pid  # type: ignore[attr-defined]
        assert alive(pid)
        outcome = await rt.call_action("whoami", {})
        assert outcome.ok and outcome.result == pid
        assert rt.actions.source("whoami") == "environment:worker"
    assert not alive(pid), "no environment process outlives its runtime"
    kinds = [k for k, _ in events.drain() if k.startswith("environment.")]
    assert kinds == ["environment.starting", "environment.ready", "environment.stopped"]


async def test_killed_process_is_restarted(tmp_path: Path) -> None:
    rt = runtime(tmp_path, EAGER)
    events = Events(rt)
    async with rt:
        first = (await rt.environments.ensure("worker")).process.pid  # type: ignore[attr-defined]
        os.kill(first, signal.SIGKILL)
        with anyio.fail_after(10):
            while rt.environments.status()[0].restarts == 0 or rt.environments.status()[0].status != "ready":
                await anyio.sleep(0.05)
        second = (await rt.environments.ensure("worker")).process.pid  # type: ignore[attr-defined]
        assert second != first and alive(second)
        assert (await rt.call_action("whoami", {})).result == second, "actions are re-registered after a restart"
    kinds = [k for k, _ in events.drain()]
    assert "environment.unhealthy" in kinds and "environment.restarting" in kinds
    assert not alive(second)


async def test_a_server_that_exits_at_start_is_given_up_and_reported(tmp_path: Path) -> None:
    rt = runtime(tmp_path, EAGER + 'code = "raise SystemExit(3)"\n')
    events = Events(rt)
    async with rt:
        (state,) = rt.environments.status()
        assert state.status == "failed" and state.restarts == 2
        assert "exited at start with code 3" in state.error
        with pytest.raises(keel.KeelError, match="given up after 2 restart"):
            await rt.environments.ensure("worker")
    kinds = [k for k, _ in events.drain()]
    assert kinds.count("environment.restarting") == 2 and kinds[-1] == "environment.failed"


async def test_lazy_environments_start_on_first_use(tmp_path: Path) -> None:
    rt = runtime(tmp_path, '[environments.worker]\ndriver = "process"\n')
    async with rt:
        assert rt.environments.status()[0].status == "stopped"
        env = await rt.environments.ensure("worker")
        assert rt.environments.status()[0].status == "ready"
        pid = env.process.pid  # type: ignore[attr-defined]
    assert not alive(pid)


async def test_no_process_outlives_an_exception(tmp_path: Path) -> None:
    rt = runtime(tmp_path, EAGER)
    pid = 0
    with pytest.raises(ZeroDivisionError):
        async with rt:
            pid = (await rt.environments.ensure("worker")).process.pid  # type: ignore[attr-defined]
            1 / 0  # noqa: B018
    assert pid and not alive(pid)


def test_unknown_driver_lists_the_available_ones(tmp_path: Path) -> None:
    rt = runtime(tmp_path, '[environments.x]\ndriver = "docker"\n')
    with pytest.raises(keel.DriverNotFoundError, match=r"'docker'.*Available: 'process'"):
        rt.environments  # noqa: B018


async def test_bad_options_fail_at_once_without_retries(tmp_path: Path) -> None:
    class Strict:
        @keel.hookimpl
        def keel_environments(self) -> list[keel.EnvironmentSpec]:
            def factory(options: dict[str, Any]) -> ProcessEnvironment:
                if "colour" in options:
                    raise keel.StackError("unknown option 'colour'")
                return ProcessEnvironment(options)

            return [keel.EnvironmentSpec(name="strict", kind="process", factory=factory)]

    (tmp_path / "keel.toml").write_text('[environments.w]\ndriver = "strict"\nstart = "eager"\ncolour = "red"\n')
    async with keel.Runtime(make_host(Strict()), load_stack(cwd=tmp_path)) as rt:
        (state,) = rt.environments.status()
    assert state.status == "failed" and state.restarts == 0
    assert "[environments.w] is invalid: unknown option 'colour'" in state.error


async def test_the_factory_receives_the_environment_name(tmp_path: Path) -> None:
    rt = runtime(tmp_path, '[environments.named]\ndriver = "process"\n')
    async with rt:
        env = await rt.environments.ensure("named")
        assert env.name == "named"


async def test_an_actions_listing_that_fails_is_a_failed_start(tmp_path: Path) -> None:
    class Broken(ProcessEnvironment):
        async def actions(self) -> list[keel.ActionSpec]:
            raise RuntimeError("tools/list timed out")

    class Plugin2:
        @keel.hookimpl
        def keel_environments(self) -> list[keel.EnvironmentSpec]:
            return [
                keel.EnvironmentSpec(
                    name="broken",
                    kind="process",
                    factory=Broken,
                    restart=keel.RestartPolicy(max_restarts=1, backoff_seconds=0.01),
                )
            ]

    (tmp_path / "keel.toml").write_text('[environments.b]\ndriver = "broken"\nstart = "eager"\n')
    async with keel.Runtime(make_host(Plugin2()), load_stack(cwd=tmp_path)) as rt:
        (state,) = rt.environments.status()
        assert state.status == "failed" and "tools/list timed out" in state.error
    assert state.restarts == 1


async def test_a_health_check_that_fails_says_why(tmp_path: Path) -> None:
    rt = runtime(tmp_path, '[environments.worker]\ndriver = "process"\nstart = "lazy"\nhealth_interval = 1\n')
    async with rt:
        env = await rt.environments.ensure("worker")

        async def hang() -> keel.Health:
            await anyio.sleep_forever()
            raise AssertionError

        async def bare() -> keel.Health:
            raise RuntimeError

        env.health = hang  # type: ignore[method-assign]
        with anyio.fail_after(10):
            hung = await rt.environments.check("worker")
        assert hung.detail == "health check failed: TimeoutError: no answer within 1.0s"
        env.health = bare  # type: ignore[method-assign]
        assert (await rt.environments.check("worker")).detail == "health check failed: RuntimeError: RuntimeError()"


async def test_declared_actions_are_a_contract_checked_at_start(tmp_path: Path) -> None:
    good = EAGER + 'actions = { whoami = "read" }\n'
    async with runtime(tmp_path, good) as rt:
        assert rt.environments.status_of("worker").status == "ready"
        assert rt.environments.declared_actions() == {"whoami": ("read", "worker")}
        assert rt.actions.get("whoami").risk == "read"
    bad = EAGER.replace("health_interval", 'restart = { mode = "never" }\nhealth_interval') + (
        'actions = { whoami = "write", lookup = "read" }\n'
    )
    async with runtime(tmp_path, bad) as rt:
        state = rt.environments.status_of("worker")
        assert state.status == "failed"
        assert "lookup (declared, not offered)" in state.error
        assert "whoami (risk 'read', declared 'write')" in state.error


def test_a_declared_action_with_no_risk_is_refused_at_once(tmp_path: Path) -> None:
    rt = runtime(tmp_path, EAGER + 'actions = { whoami = "safe" }\n')
    with pytest.raises(keel.StackError, match=r"\[environments.worker\] actions: whoami = 'safe' is not a risk"):
        rt.environments.names()


async def test_a_lazy_environment_starts_on_the_first_use_of_an_action_it_declares(tmp_path: Path) -> None:
    lazy = EAGER.replace('start = "eager"', 'start = "lazy"') + 'actions = { whoami = "read" }\n'
    async with runtime(tmp_path, lazy) as rt:
        assert rt.environments.status_of("worker").status != "ready"  # nothing asked for it yet
        outcome = await rt.call_action("whoami", {})
        assert outcome.ok and outcome.result > 0, outcome
        assert rt.environments.status_of("worker").status == "ready"
        # an action no environment declares is still an unknown action, and starts nothing
        assert not (await rt.call_action("nobody", {})).ok
    undeclared = EAGER.replace('start = "eager"', 'start = "lazy"')  # offers whoami, declares nothing
    async with runtime(tmp_path, undeclared) as rt:
        assert not (await rt.call_action("whoami", {})).ok  # only `keel env start` / ensure() start it
        assert rt.environments.status_of("worker").status != "ready"


async def test_an_agent_starts_the_lazy_environment_that_declares_its_actions(tmp_path: Path) -> None:
    from keel.testing import Reply, ScriptedModel

    lazy = EAGER.replace('start = "eager"', 'start = "lazy"') + 'actions = { whoami = "read" }\n'
    async with runtime(tmp_path, lazy) as rt:
        call = keel.ToolCall(id="c1", name="whoami", arguments={})
        rt.use_model(ScriptedModel([Reply(tool_calls=[call]), "done"]))
        agent = keel.Agent("ops", "Say which process serves you.", actions=["whoami"])
        with anyio.fail_after(30):
            execution = await agent.start("who?", runtime=rt)
            assert await execution.get_data() == "done"
        assert rt.environments.status_of("worker").status == "ready"
        completed = [e async for e in execution.events() if e.kind == "action.completed"]
        assert len(completed) == 1, [e.kind async for e in execution.events()]
