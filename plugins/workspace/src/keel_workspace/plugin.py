"""The entry point ``workspace`` (group ``keel``): adds ``keel workspace``. Cheap to import."""

from __future__ import annotations

from typing import Any

import keel


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    cli.add_lazy_command(
        "workspace",
        "keel_workspace.cli:workspace",
        help="Inspect workspaces: observations, artifacts, decisions, checkpoints.",
    )
