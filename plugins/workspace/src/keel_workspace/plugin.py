"""The entry point ``workspace`` (group ``keel``): adds ``keel workspace``. Cheap to import."""

from __future__ import annotations

from typing import Any

import keel


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    from keel_workspace.cli import workspace

    cli.add_command(workspace)
