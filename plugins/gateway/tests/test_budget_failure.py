"""An execution stopped by its budget is a ``budget`` failure for clients: the view's error (and the
``task.failed`` product event, through the same ``failure_code``) say so, with the safe message."""

from __future__ import annotations

import httpx

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel_gateway import create_app
from keel_gateway.product import FAILURE_TEXT, failure_code


@keel.action(risk="read")
def lookup(name: str) -> str:
    """Look a name up."""
    return name


async def test_a_budget_refusal_is_a_budget_failure() -> None:
    call = keel.ToolCall(id="c1", name="lookup", arguments={"name": "x"})
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel([Reply(tool_calls=[call]), "never sent"]))
        runtime.actions.add(lookup)
        runtime.add(keel.Agent("helper", "Help.", actions=["lookup"]))
        runtime.budgets.limit(runnable="helper", model_requests=1)
        app = create_app(runtime, {"api_keys": [{"key": "k", "tenant": "default"}]})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            done = await http.post("/v1/runnables/helper/executions?wait=true", json="go", headers={"X-API-Key": "k"})
            body = done.json()
            assert body["status"] == "failed", body
            assert body["error"] == {"code": "budget", "message": FAILURE_TEXT["budget"]}
            assert body["usage"]["model_requests"] == 1 and body["usage"]["limits"] == {"model_requests": 1}


def test_a_flow_step_failed_by_a_budget_is_a_budget_failure() -> None:
    refused = keel.BudgetExceeded(
        "tokens", 10, 12, scope="execution", source="[budgets]", execution_id="exe_1", call="a request"
    )
    try:
        try:
            raise refused
        except keel.BudgetExceeded as err:
            raise keel.KeelError("step 'triage' failed") from err
    except keel.KeelError as step_failed:
        assert failure_code(step_failed) == "budget"
    assert failure_code(keel.KeelError("other")) == "error"
