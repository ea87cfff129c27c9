"""The entry module (``keel`` group, name ``toolbox``).

The toolbox's actions need settings (a folder, allowed hosts) and ``keel_actions()`` takes no
arguments, so this module registers no actions by itself. It registers the ``toolbox``
environment driver; applications that prefer ``[settings.toolbox]`` call
``keel_toolbox.install(runtime)``. Cheap to import: httpx loads on the first fetch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keel
from keel_toolbox.settings import ToolboxSettings


def _factory(options: dict[str, Any]) -> keel.Environment:
    from keel_toolbox.environment import ToolboxEnvironment

    return ToolboxEnvironment(options)


@keel.hookimpl
def keel_environments() -> Iterator[keel.EnvironmentSpec]:
    yield keel.EnvironmentSpec(
        name="toolbox", kind="actions", factory=_factory,
        permissions=keel.Permissions(network=True),
        restart=keel.RestartPolicy(mode="never"),
        description="http_fetch (allow-listed hosts), read_file and write_file (confined to a folder)",
        options=ToolboxSettings,  # `keel stack` checks each [environments.<name>] table, naming the key
    )  # fmt: skip
