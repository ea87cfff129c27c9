"""The kernel's own defaults, registered through the same hooks as any plugin.

- store ``memory``: complete store semantics, nothing kept across restarts;
- model ``scripted``: :class:`keel.testing.ScriptedModel`, a test double that answers from a script
  (priced at zero, so cost budgets work with it);
- the kernel's ``keel doctor`` checks (:func:`keel.doctor_rows.kernel_checks`);
- the kernel's own sub-commands (``version``, ``plugins``, ``stacks``, ``stack``, ``env``,
  ``actions``, ``doctor``), added by reference as any plugin adds its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from keel.hookspecs import hookimpl
from keel.types import DoctorCheck, ModelCapabilities, ModelConfig, ModelSpec, StoreSpec


class MemoryStoreOptions(BaseModel):
    """``store = "memory"`` takes no options: any key in its ``[store]`` table is a typo."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


def _memory_store(options: dict[str, Any]) -> Any:
    from keel.store import MemoryStore

    return MemoryStore()


def _scripted_model(config: ModelConfig) -> Any:
    from keel.testing.scripted import scripted_factory

    return scripted_factory(config)


@hookimpl
def keel_stores() -> Iterator[StoreSpec]:
    yield StoreSpec(
        name="memory",
        description="in-process store; nothing survives a restart",
        durable=False,
        factory=_memory_store,
        options=MemoryStoreOptions,
    )


@hookimpl
def keel_models() -> Iterator[ModelSpec]:
    yield ModelSpec(
        name="scripted",
        description="test double answering from a script (keel.testing.ScriptedModel)",
        factory=_scripted_model,
        capabilities=ModelCapabilities(streaming=True, tools=True, json_schema=False),
    )


@hookimpl
def keel_model_prices() -> dict[str, dict[str, float]]:
    return {"scripted": {"input": 0.0, "output": 0.0}}  # a test double costs nothing, and is priced


@hookimpl
def keel_doctor_checks() -> list[DoctorCheck]:
    from keel.doctor_checks import governance_checks  # imported when doctor runs, not at discovery
    from keel.doctor_rows import kernel_checks

    return kernel_checks() + governance_checks()


#: the kernel's sub-commands: name -> (reference, the line `keel --help` shows)
COMMANDS = {
    "version": ("keel.commands:version", "Print the kernel's version."),
    "plugins": ("keel.commands:plugins", "List installed plugins, what they implement and what they registered."),
    "stacks": (
        "keel.commands:stacks",
        "List the named stacks installed packages ship (entry-point group keel.stacks).",
    ),
    "stack": ("keel.commands:stack", "Show the resolved stack: each slot, its driver, and where the choice came from."),
    "actions": ("keel.commands:actions", "List every action of the stack with its scope and risk."),
    "env": (
        "keel.env_commands:env_group",
        "Environments of the stack: MCP servers, sandboxes, anything with a lifecycle.",
    ),
    "doctor": ("keel.doctor:doctor_command", "Check the stack against the pre-launch checklist."),
}


@hookimpl
def keel_commands(cli: Any) -> None:
    for name, (target, help) in COMMANDS.items():
        cli.add_lazy_command(name, target, help=help)
