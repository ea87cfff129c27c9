"""keel-workspace: observations, artifacts, decisions and checkpoints over any :class:`keel.Store`,
and :class:`ContextPack`, a bounded context for prompts.

    ws = Workspace(runtime.store(), "task-42")
    ref = await ws.put_artifact(pdf_bytes, name="report.pdf")
    await ws.decide("approve", by="reviewer", why="totals match", evidence=[ref])
    pack = await ContextPack.build(ws, budget_tokens=1000)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_workspace.context import ContextPack, PackedItem, estimate_tokens, render_entry
    from keel_workspace.workspace import (
        ArtifactEntry,
        ArtifactRef,
        CheckpointEntry,
        DecisionEntry,
        Entry,
        Kind,
        Limits,
        ObservationEntry,
        TooLargeError,
        Visibility,
        Workspace,
        check_small,
        list_scopes,
        select,
    )

__all__ = [
    "ArtifactEntry",
    "ArtifactRef",
    "CheckpointEntry",
    "ContextPack",
    "DecisionEntry",
    "Entry",
    "Kind",
    "Limits",
    "ObservationEntry",
    "PackedItem",
    "TooLargeError",
    "Visibility",
    "Workspace",
    "check_small",
    "estimate_tokens",
    "list_scopes",
    "render_entry",
    "select",
]

_MODULES = {"ContextPack": "context", "PackedItem": "context", "estimate_tokens": "context", "render_entry": "context"}


def __getattr__(name: str) -> Any:
    """Load on first use: the plugin's entry module stays cheap to import."""
    return _lazy(name)


_lazy = lazy_exports(globals(), {name: f".{_MODULES.get(name, 'workspace')}" for name in __all__})
