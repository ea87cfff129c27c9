"""The entry module (``keel`` group, name ``sandbox``): registers the ``sandbox`` environment driver.

Cheap to import: the runner (anyio, subprocess) loads only when a sandbox is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keel
from keel_sandbox.config import SandboxConfig


def _factory(options: dict[str, Any]) -> keel.Environment:
    from keel_sandbox.environment import SandboxEnvironment

    return SandboxEnvironment(options)


@keel.hookimpl
def keel_environments() -> Iterator[keel.EnvironmentSpec]:
    yield keel.EnvironmentSpec(
        name="sandbox", kind="sandbox", factory=_factory,
        permissions=keel.Permissions(network=False, cpu_seconds=10.0, memory_mb=512, wall_seconds=30.0),
        restart=keel.RestartPolicy(mode="on-failure", max_restarts=2, backoff_seconds=0.5),
        description="run Python, shell and Node.js scripts under rlimits, a wall clock, a scrubbed "
        "environment and no network where the OS allows it; offers run_python, run_shell, run_node",
        options=SandboxConfig,  # `keel stack` checks each [environments.<name>] table, naming the key
    )  # fmt: skip
