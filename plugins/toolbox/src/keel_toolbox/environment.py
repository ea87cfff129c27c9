"""The ``toolbox`` environment driver: an ``[environments.<name>]`` table whose options are the
toolbox settings, and whose actions are the toolbox's actions bound to them."""

from __future__ import annotations

from typing import Any

import keel
from keel.types import EnvironmentStatus
from keel_toolbox.actions import toolbox_actions
from keel_toolbox.settings import ToolboxSettings

__all__ = ["ToolboxEnvironment"]


class ToolboxEnvironment:
    def __init__(self, options: dict[str, Any] | None = None):
        options = dict(options or {})
        self.name = str(options.pop("name", "toolbox"))
        self.settings = ToolboxSettings.parse(options, f"[environments.{self.name}] options")
        self._specs: list[keel.ActionSpec] = []
        self._status: EnvironmentStatus = "stopped"

    @property
    def status(self) -> EnvironmentStatus:
        return self._status

    async def start(self) -> None:
        self._status = "starting"
        try:
            self._specs = toolbox_actions(self.settings)  # creates and checks the root folder
        except Exception:
            self._status = "failed"
            raise
        self._status = "ready"

    async def stop(self) -> None:
        self._specs = []
        self._status = "stopped"

    async def health(self) -> keel.Health:
        if self._status != "ready":
            return keel.Health(ok=False, detail=self._status)
        if self.settings.root is not None:
            from pathlib import Path

            if not Path(self.settings.root).is_dir():
                return keel.Health(ok=False, detail=f"root {self.settings.root!r} is gone")
        return keel.Health(
            ok=True, detail=f"{len(self._specs)} actions; hosts: {', '.join(self.settings.allow_hosts) or 'none'}"
        )

    async def actions(self) -> list[keel.ActionSpec]:
        return list(self._specs)
