"""The ``sandbox`` environment driver: a stack table becomes a sandbox and its actions.

[environments.py]
driver = "sandbox"
start = "eager"
network = false
memory_mb = 256
cpu_seconds = 5
wall_seconds = 20
languages = ["python"]
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio

import keel
from keel.types import EnvironmentStatus
from keel_sandbox.actions import sandbox_actions
from keel_sandbox.runner import MINIMAL_PATH, Sandbox, SandboxConfig, capabilities

__all__ = ["SandboxEnvironment"]


class SandboxEnvironment:
    """A sandbox with a lifecycle: ``start`` checks this machine can run it, ``actions`` offers
    ``run_*`` bound to its limits, ``stop`` ends every run still going."""

    def __init__(self, options: dict[str, Any] | None = None, *, store: keel.Store | None = None):
        options = dict(options or {})
        self.name = str(options.pop("name", "sandbox"))
        self.config = keel.parse_options(SandboxConfig, options, where=f"keel-sandbox: environment {self.name!r}")
        self.permissions = self.config.permissions()
        self.store = store
        self.sandbox: Sandbox | None = None
        self._status: EnvironmentStatus = "stopped"

    @property
    def status(self) -> EnvironmentStatus:
        return self._status

    async def start(self) -> None:
        self._status = "starting"
        try:
            await anyio.to_thread.run_sync(capabilities)  # the probe runs a process: not on the event loop
            sandbox = Sandbox(self.config, store=self.store)
            missing = [lang for lang in self.config.languages if not _available(self._binary(lang))]
            if missing:
                raise keel.KeelError(
                    f"keel-sandbox: environment {self.name!r} enables {', '.join(missing)} but "
                    f"{', '.join(self._binary(m) for m in missing)} is not on the sandbox PATH; "
                    "install it or remove it from `languages`"
                )
            base = Path(self.config.workdir_base) if self.config.workdir_base else None
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
        except Exception:
            self._status = "failed"
            raise
        self.sandbox = sandbox
        self._status = "ready"

    async def stop(self) -> None:
        """Stop: every run still going is killed (no sandboxed process outlives its stack)."""
        if self.sandbox is not None:
            await anyio.to_thread.run_sync(self.sandbox.kill_all)
        self.sandbox = None
        self._status = "stopped"

    async def health(self) -> keel.Health:
        if self.sandbox is None:
            return keel.Health(ok=False, detail="not started")
        caps = self.sandbox.capabilities
        isolated = "enforced" if caps.network_isolation else "NOT enforced"
        user = "own user id per run" if caps.own_user and self.config.own_user else "writes outside NOT prevented"
        return keel.Health(ok=True, detail=f"network isolation {isolated}; {user}")

    async def actions(self) -> list[keel.ActionSpec]:
        if self.sandbox is None:
            return []
        return sandbox_actions(self.sandbox)

    def _binary(self, language: str) -> str:
        return {"python": self.config.python, "node": self.config.node, "shell": self.config.shell}[language]


def _available(binary: str) -> bool:
    return shutil.which(binary, path=MINIMAL_PATH) is not None
