"""TriggerFlow for Keel: durable, event-driven workflows.

    flow = TriggerFlow("greet")
    flow.to(fetch).to(shout)
    result = await flow.run("Ada")

See ``docs/flows.md`` (stage 6) and ``docs/collaboration.md`` (stage 7). Names load on first use,
so that Keel's plugin discovery (which imports ``keel_triggerflow.plugin``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel_triggerflow._context import Context
    from keel_triggerflow._engine import FlowExecution
    from keel_triggerflow._history import expired_executions, parse_age, purge_executions
    from keel_triggerflow.flow import Chain, Reducer, TriggerFlow
    from keel_triggerflow.types import (
        BranchError,
        CloseSnapshot,
        Durability,
        FlowDefinitionError,
        FlowError,
        Interrupt,
        LeaseError,
        MissingResourceError,
        StepFailed,
        WaitTimeout,
    )

_WHERE = {
    "Context": "_context",
    "FlowExecution": "_engine",
    "expired_executions": "_history",
    "parse_age": "_history",
    "purge_executions": "_history",
    "Chain": "flow",
    "Reducer": "flow",
    "TriggerFlow": "flow",
    **{
        name: "types"
        for name in (
            "BranchError",
            "CloseSnapshot",
            "Durability",
            "FlowDefinitionError",
            "FlowError",
            "Interrupt",
            "LeaseError",
            "MissingResourceError",
            "StepFailed",
            "WaitTimeout",
        )
    },
}

__all__ = [
    "BranchError",
    "Chain",
    "CloseSnapshot",
    "Context",
    "Durability",
    "FlowDefinitionError",
    "FlowError",
    "FlowExecution",
    "Interrupt",
    "LeaseError",
    "MissingResourceError",
    "Reducer",
    "StepFailed",
    "TriggerFlow",
    "WaitTimeout",
    "expired_executions",
    "parse_age",
    "purge_executions",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'keel_triggerflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keel_triggerflow.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
