"""TriggerFlow for Keel: durable, event-driven workflows.

    flow = TriggerFlow("greet")
    flow.to(fetch).to(shout)
    result = await flow.run("Ada")

See ``docs/flows.md`` (stage 6) and ``docs/collaboration.md`` (stage 7). Names load on first use,
so that Keel's plugin discovery (which imports ``keel_triggerflow.plugin``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_triggerflow._context import Context
    from keel_triggerflow._engine import FlowExecution
    from keel_triggerflow._history import expired_executions, parse_age, purge_executions
    from keel_triggerflow.flow import Chain, Reducer, TriggerFlow
    from keel_triggerflow.plan import FlowPlan, PlanNode
    from keel_triggerflow.steps import (
        ChunkContext,
        StepContext,
        StepOutcome,
        call_chunk,
        decide,
        pause_payload,
        reduce_state,
        run_step,
    )
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
    "FlowPlan": "plan",
    "PlanNode": "plan",
    **{
        name: "steps"
        for name in (
            "ChunkContext",
            "StepContext",
            "StepOutcome",
            "call_chunk",
            "decide",
            "pause_payload",
            "reduce_state",
            "run_step",
        )
    },
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
    "ChunkContext",
    "CloseSnapshot",
    "Context",
    "Durability",
    "FlowDefinitionError",
    "FlowError",
    "FlowExecution",
    "FlowPlan",
    "Interrupt",
    "LeaseError",
    "MissingResourceError",
    "PlanNode",
    "Reducer",
    "StepContext",
    "StepFailed",
    "StepOutcome",
    "TriggerFlow",
    "WaitTimeout",
    "call_chunk",
    "decide",
    "expired_executions",
    "parse_age",
    "pause_payload",
    "purge_executions",
    "reduce_state",
    "run_step",
]


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), {name: f".{home}" for name, home in _WHERE.items()})
