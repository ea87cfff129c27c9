"""keel-sandbox: run scripts and commands under limits, as actions and as an environment driver.

    sandbox = Sandbox(SandboxConfig(memory_mb=256, wall_seconds=10))
    result = await sandbox.run_script("python", "print(6 * 7)")

Names load on first use, so that Keel's plugin discovery (which imports ``keel_sandbox.plugin``,
and with it this package) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_sandbox.actions import sandbox_actions
    from keel_sandbox.environment import SandboxEnvironment
    from keel_sandbox.runner import (
        LANGUAGES,
        Capabilities,
        ProducedFile,
        RunResult,
        Sandbox,
        SandboxConfig,
        capabilities,
    )

__all__ = [
    "LANGUAGES",
    "Capabilities",
    "ProducedFile",
    "RunResult",
    "Sandbox",
    "SandboxConfig",
    "SandboxEnvironment",
    "capabilities",
    "sandbox_actions",
]

_HOMES = {"sandbox_actions": "actions", "SandboxEnvironment": "environment"}


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), {name: f".{_HOMES.get(name, 'runner')}" for name in __all__})
