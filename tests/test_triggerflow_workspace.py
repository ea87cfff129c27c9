"""Multi-role topology across two plugins that never import each other: TriggerFlow gives each role
sub-flow its own child of the Workspace passed as the "workspace" resource (keel-workspace over the
SQLite store); the parent reads every role's evidence, and flow state keeps only small data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keel
from keel_store_sqlite import SqliteStore
from keel_triggerflow import TriggerFlow
from keel_workspace import Workspace


async def test_each_role_writes_to_its_own_child_workspace(tmp_path: Path) -> None:
    store = SqliteStore(path=str(tmp_path / "keel.db"))
    try:

        async def research(ctx: Any) -> int:
            workspace = ctx.resource("workspace")
            await workspace.observe(f"{ctx.value} looks promising", source="web", tags=["finding"])
            return len(ctx.value)

        roles = {name: TriggerFlow(f"research-{name}") for name in ("markets", "risks", "costs")}
        for role in roles.values():
            role.to(research)

        async def review(ctx: Any) -> dict[str, Any]:
            team: Workspace = ctx.resource("workspace")
            findings = await team.entries(kinds=["observation"], include_children=True)
            await team.decide("publish", by="reviewer", why=f"{len(findings)} findings")
            return {"findings": len(findings), "scopes": sorted({e.scope for e in findings})}

        flow = TriggerFlow("team")
        flow.batch(*[(name, role) for name, role in roles.items()]).to(review)
        team = Workspace(store, "task-7")
        execution = flow.create_execution(resources={"workspace": team})
        snapshot = await execution.run("tides")
        assert snapshot.status == keel.ExecutionStatus.COMPLETED, snapshot
        result = snapshot.result

        assert result["findings"] == 3
        assert len(result["scopes"]) == 3 and all(s.startswith("task-7/") for s in result["scopes"])
        assert [e.kind for e in await team.entries()] == ["decision"], "the parent's own log holds only its decision"
    finally:
        await store.aclose()
