"""The EnvironmentManager: owns every hosted environment of a stack (MCP servers, sandboxes...).

An environment is declared in the stack::

    [environments.time]
    driver = "mcp"                 # an EnvironmentSpec name registered through keel_environments()
                                   # (its factory receives the options below plus "name")
    start = "eager"                # or "lazy" (the default): on first use of a declared action
    health_interval = 5.0          # seconds between health checks
    command = ["mcp-server-time"]  # everything else goes to the driver's factory
    actions = { time_now = "read" }  # optional: the actions it will offer, each with its risk

``actions`` lets ``keel doctor`` know, without starting anything, which actions an environment will
add (its ``[calls.actions.<name>]`` are then not typos). Declared, it is a contract checked at each
start: an offered action that is not declared, or has another risk, or a declared one that is not
offered, fails the start, naming it.

The manager starts it (at runtime start-up, or on first use: ``Runtime.ensure_actions``), checks its health on an interval,
restarts it by its restart policy with exponential backoff, gives up after the maximum and says so,
and stops every environment when the runtime closes — normally, on an exception or on Ctrl-C.
Each transition is a RuntimeEvent ``environment.starting|ready|unhealthy|restarting|stopped|failed``.

An environment that offers actions (an MCP server's tools) implements ``async def actions()``
returning :class:`keel.ActionSpec` objects; the manager adds them to the runtime's actions under
the source ``environment:<name>`` once the environment is ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import ValidationError

from keel.errors import DriverNotFoundError, KeelError, StackError
from keel.types import Environment, EnvironmentSpec, Health, RestartPolicy

if TYPE_CHECKING:
    from keel.actions import ActionRegistry
    from keel.plugins import Registered

__all__ = ["EnvironmentManager", "EnvironmentState"]

MANAGER_KEYS = {"driver", "start", "health_interval", "restart", "owner", "actions"}  # owner: who answers (doctor)
RISKS = ("read", "write", "irreversible")


@dataclass
class EnvironmentState:
    """What ``keel env status`` shows for one environment."""

    name: str
    driver: str
    kind: str
    status: str = "stopped"
    restarts: int = 0
    last_health: Health | None = None
    error: str = ""
    started_at: float | None = None
    actions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "driver": self.driver,
            "kind": self.kind,
            "status": self.status,
            "restarts": self.restarts,
            "last_health": self.last_health.model_dump() if self.last_health else None,
            "error": self.error,
            "started_at": self.started_at,
            "actions": self.actions,
        }


class _Managed:
    def __init__(self, name: str, spec: EnvironmentSpec, options: dict[str, Any], config: Mapping[str, Any]):
        self.name = name
        self.spec = spec
        self.options = options
        self.eager = config.get("start", "lazy") == "eager"
        self.health_interval = float(config.get("health_interval", 5.0))
        self.restart = RestartPolicy.model_validate({**spec.restart.model_dump(), **dict(config.get("restart", {}))})
        self.declared = _declared_actions(name, config.get("actions"))
        self.env: Environment | None = None
        self.state = EnvironmentState(name, spec.name, spec.kind)
        self.lock = anyio.Lock()
        self.supervised = False
        self.scope: anyio.CancelScope | None = None


def _declared_actions(name: str, table: Any) -> dict[str, str]:
    """``actions = { <action> = "<risk>", ... }`` of ``[environments.<name>]``, checked."""
    if table is None:
        return {}
    where = f"[environments.{name}] actions"
    if not isinstance(table, Mapping):
        raise StackError(f'{where} must be a table of action = risk, e.g. actions = {{ lookup = "read" }}')
    for action, risk in table.items():
        if risk not in RISKS:
            raise StackError(f"{where}: {action} = {risk!r} is not a risk; use one of {', '.join(RISKS)}")
    return {str(k): str(v) for k, v in table.items()}


Emit = Callable[[str, dict[str, Any]], Any]


class EnvironmentManager:
    """Starts, watches, restarts and stops the environments a stack declares."""

    def __init__(
        self,
        specs: Mapping[str, Registered[EnvironmentSpec]],
        declared: Mapping[str, Mapping[str, Any]],
        *,
        emit: Emit | None = None,
        actions: ActionRegistry | None = None,
    ):
        self._emit = emit or (lambda kind, payload: None)
        self._actions = actions
        self._items: dict[str, _Managed] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        for name, config in declared.items():
            driver = str(config.get("driver", ""))
            if driver not in specs:
                raise DriverNotFoundError(
                    "environment driver", driver or "(none)", specs, f"[environments.{name}]",
                    "set driver = one of the available names, or install the plugin that provides it",
                )  # fmt: skip
            options = {k: v for k, v in config.items() if k not in MANAGER_KEYS}
            self._items[name] = _Managed(name, specs[driver].spec, options, config)

    def names(self) -> list[str]:
        return sorted(self._items)

    def declared_actions(self) -> dict[str, tuple[str, str]]:
        """Each action the environments declare they will offer: name -> (risk, environment)."""
        return {a: (risk, n) for n in self.names() for a, risk in self._items[n].declared.items()}

    def status(self) -> list[EnvironmentState]:
        return [self._items[n].state for n in self.names()]

    def status_of(self, name: str) -> EnvironmentState:
        return self._get(name).state

    def _get(self, name: str) -> _Managed:
        try:
            return self._items[name]
        except KeyError:
            raise KeelError(f"no environment named {name!r}; declared: {', '.join(self.names()) or 'none'}") from None

    def _set(self, item: _Managed, status: str, **payload: Any) -> None:
        item.state.status = status
        self._emit(f"environment.{status}", {"name": item.name, "driver": item.spec.name, **payload})

    # ---------------------------------------------------------------------------- lifecycle

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start the eager environments and supervise them in ``task_group``."""
        self._task_group = task_group
        for item in self._items.values():
            if item.eager:
                await self._start(item)

    async def ensure(self, name: str) -> Environment:
        """The running environment, started now if it is lazy and not yet running."""
        item = self._get(name)
        if item.state.status == "failed":
            raise KeelError(
                f"environment {name!r} is not available: it failed and was given up after "
                f"{item.state.restarts} restart(s) ({item.state.error}); start it again with `keel env start {name}`"
            )
        if item.env is None or item.state.status not in ("ready", "unhealthy"):
            await self._start(item)
        if item.env is None or item.state.status == "failed":
            raise KeelError(f"environment {name!r} is not available: {item.state.error or item.state.status}")
        return item.env

    async def _start(self, item: _Managed) -> None:
        async with item.lock:
            if item.state.status == "ready":
                return
            attempt = 0
            while True:
                self._set(item, "starting", attempt=attempt)
                try:
                    item.env = item.spec.factory({**item.options, "name": item.name})
                except (StackError, ValidationError, TypeError, ValueError) as err:
                    # bad options: retrying cannot help, so fail at once and say where to look
                    item.state.error = f"[environments.{item.name}] is invalid: {err}"
                    self._set(item, "failed", error=item.state.error, restarts=item.state.restarts)
                    return
                try:
                    await item.env.start()
                    await self._register_actions(item)  # an actions() that fails is a failed start
                except Exception as err:
                    item.state.error = f"{type(err).__name__}: {err}"
                    await self._quietly_stop(item)
                    if not self._may_restart(item, attempt):
                        self._set(item, "failed", error=item.state.error, restarts=item.state.restarts)
                        return
                    attempt += 1
                    item.state.restarts += 1
                    self._set(item, "restarting", error=item.state.error, restarts=item.state.restarts)
                    await anyio.sleep(self._backoff(item, attempt))
                    continue
                break
            item.state.error = ""
            item.state.started_at = time.time()
            self._set(item, "ready", restarts=item.state.restarts)
        if self._task_group is not None and not item.supervised:
            item.supervised = True
            item.scope = anyio.CancelScope()  # before the task runs, so stop_all can always cancel it
            self._task_group.start_soon(self._supervise, item)

    def _may_restart(self, item: _Managed, attempt: int) -> bool:
        return item.restart.mode == "on-failure" and item.state.restarts < item.restart.max_restarts

    def _backoff(self, item: _Managed, attempt: int) -> float:
        return float(min(item.restart.backoff_seconds * 2 ** max(attempt - 1, 0), 30.0))

    async def _register_actions(self, item: _Managed) -> None:
        provider = getattr(item.env, "actions", None)
        if self._actions is None or provider is None:
            return
        specs = await provider()
        if item.declared:
            _check_offered(item, {spec.name: spec.risk for spec in specs})
        source = f"environment:{item.name}"
        self._actions.remove_source(source)  # a tool the restarted server no longer has is gone
        item.state.actions = [spec.name for spec in specs]
        for spec in specs:
            self._actions.replace(spec, source=source)

    async def _supervise(self, item: _Managed) -> None:
        assert item.scope is not None
        with item.scope:
            await self._watch(item)

    async def _watch(self, item: _Managed) -> None:
        while True:
            await anyio.sleep(item.health_interval)
            if item.state.status in ("stopped", "failed") or item.env is None:
                item.supervised = False
                return
            health = await self.check(item.name)
            if health.ok:
                continue
            if not self._may_restart(item, 0):
                self._set(item, "failed", error=health.detail, restarts=item.state.restarts)
                await self._quietly_stop(item)
                item.supervised = False
                return
            item.state.restarts += 1
            self._set(item, "restarting", error=health.detail, restarts=item.state.restarts)
            await self._quietly_stop(item)
            await anyio.sleep(self._backoff(item, item.state.restarts))
            item.state.status = "stopped"
            item.supervised = True  # this loop keeps supervising after the restart
            await self._start(item)

    async def check(self, name: str) -> Health:
        """Run one health check now and record it."""
        item = self._get(name)
        if item.env is None:
            health = Health(ok=False, detail="not started")
        else:
            limit = max(item.health_interval, 1.0)
            try:
                with anyio.fail_after(limit):
                    health = await item.env.health()
            except TimeoutError as err:
                why = str(err) or f"no answer within {limit}s"
                health = Health(ok=False, detail=f"health check failed: TimeoutError: {why}")
            except Exception as err:
                why = str(err) or repr(err)
                health = Health(ok=False, detail=f"health check failed: {type(err).__name__}: {why}")
        item.state.last_health = health
        if not health.ok and item.state.status == "ready":
            self._set(item, "unhealthy", detail=health.detail)
        return health

    async def start(self, name: str) -> Environment:
        """Start (or restart) an environment explicitly; a failed one gets a fresh restart budget."""
        item = self._get(name)
        if item.state.status == "failed":
            item.state.restarts = 0
            item.state.status = "stopped"
        return await self.ensure(name)

    async def stop(self, name: str) -> None:
        item = self._get(name)
        async with item.lock:
            running = item.env is not None
            await self._quietly_stop(item)
            if running:
                self._set(item, "stopped")

    async def stop_all(self) -> None:
        """Stop everything; shielded so that cancellation (Ctrl-C) cannot leave a process behind."""
        with anyio.CancelScope(shield=True):
            for name in reversed(self.names()):
                item = self._items[name]
                if item.scope is not None:
                    item.scope.cancel()
                await self.stop(name)

    async def _quietly_stop(self, item: _Managed) -> None:
        if item.env is None:
            return
        env, item.env = item.env, None
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await env.stop()
        except Exception as err:
            item.state.error = f"stop failed: {type(err).__name__}: {err}"


def _check_offered(item: _Managed, offered: Mapping[str, str]) -> None:
    """What the environment offers must be what its ``actions`` table declares (fail closed)."""
    wrong = [f"{a} (offered, not declared)" for a in sorted(set(offered) - set(item.declared))]
    wrong += [f"{a} (declared, not offered)" for a in sorted(set(item.declared) - set(offered))]
    wrong += [
        f"{a} (risk {offered[a]!r}, declared {item.declared[a]!r})"
        for a in sorted(set(offered) & set(item.declared))
        if offered[a] != item.declared[a]
    ]
    if wrong:
        raise StackError(
            f"[environments.{item.name}] actions does not match what it offers: {'; '.join(wrong)}; "
            "fix the actions table (or the environment)"
        )
