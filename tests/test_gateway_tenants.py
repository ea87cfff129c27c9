"""Tenant isolation as a property: whatever the tenants and ids, no cross-tenant read, stream,
signal or cancel (404, like an id that does not exist), over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gateway_support import auth, build_runtime, running, token, write_stack

import keel

tenants = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=40)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    runtime, task = build_runtime(write_stack(tmp_path_factory.mktemp("stack")))
    with running(runtime) as url:
        yield url, task


def ws_close_code(url: str, execution_id: str, credential: str) -> int | None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def run() -> int | None:
        async with asyncio.timeout(20):
            try:
                async with connect(
                    f"{url.replace('http', 'ws', 1)}/v1/executions/{execution_id}/ws",
                    additional_headers=auth(credential),
                ) as ws:
                    await ws.recv()
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    return asyncio.run(run())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(owner=tenants, other=tenants, stranger_id=ids)
def test_no_cross_tenant_access(server: tuple[str, Any], owner: str, other: str, stranger_id: str) -> None:
    url, task = server
    if owner == other:
        other = other + "x"
    mine, theirs = auth(token(owner)), auth(token(other))
    with httpx.Client(base_url=url, timeout=30) as http:
        started = http.post("/v1/runnables/approval/executions", json={"topic": "t"}, headers=mine)
        assert started.status_code == 202, started.text
        eid = started.json()["id"]
        for execution_id in (eid, stranger_id):
            base = f"/v1/executions/{execution_id}"
            probes = [
                http.get(base, headers=theirs),
                http.get(f"{base}/events", headers=theirs),
                http.post(
                    f"{base}/signals/approve", json={"payload": {"approved": True}, "request_id": "x"}, headers=theirs
                ),
                http.post(f"{base}/cancel", headers=theirs),
            ]
            for probe in probes:
                assert probe.status_code == 404, (probe.request.method, probe.request.url, probe.text)
                assert probe.json()["error"]["code"] == "not_found"
            assert ws_close_code(url, execution_id, token(other)) == 4404
        # the stranger id is unknown to the owner as well, and the owner's own execution is intact
        assert http.get(f"/v1/executions/{stranger_id}", headers=mine).status_code == 404
        execution = next(e for e in task.started if e.id == eid)
        assert execution.delivered == [] and execution.status is keel.ExecutionStatus.WAITING
        assert http.get(f"/v1/executions/{eid}", headers=mine).json()["status"] == "waiting"
        assert http.post(f"/v1/executions/{eid}/cancel", headers=mine).json()["status"] == "cancelled"
