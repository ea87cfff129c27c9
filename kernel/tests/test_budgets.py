"""Budgets: each limit refuses the call that would pass it, before it is made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel.testing.conformance import BudgetConformance, PriceConformance

ran: list[str] = []


@keel.action(risk="read")
def lookup(name: str) -> str:
    """Look a name up."""
    ran.append(name)
    return f"{name}: found"


def tool(name: str = "lookup", call_id: str = "c1", **arguments: Any) -> Reply:
    return Reply(tool_calls=[keel.ToolCall(id=call_id, name=name, arguments=arguments or {"name": "x"})])


def used(input_tokens: int, output_tokens: int, text: str = "", **kw: Any) -> Reply:
    return Reply(text=text, usage=keel.Usage(input_tokens=input_tokens, output_tokens=output_tokens), **kw)


def agent() -> keel.Agent:
    return keel.Agent("helper", "Help.", actions=["lookup"])


def setup(runtime: keel.Runtime, *replies: str | Reply) -> ScriptedModel:
    ran.clear()
    if "lookup" not in runtime.actions:
        runtime.actions.add(lookup)
    return runtime.use_model(ScriptedModel(list(replies)))  # type: ignore[return-value]


async def refused(execution: keel.Execution) -> keel.BudgetExceeded:
    with pytest.raises(keel.BudgetExceeded) as caught:
        await execution.result()
    assert execution.status is keel.ExecutionStatus.FAILED
    return caught.value


async def kinds(execution: keel.Execution) -> list[str]:
    return [e.kind async for e in execution.events()]


async def test_model_requests_stop_before_the_request_past_the_limit(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, tool(), "done", "never sent")
    keel_runtime.budgets.limit(model_requests=1)
    execution = await keel_runtime.start(agent(), "go")
    error = await refused(execution)
    assert (error.budget, error.limit, error.usage) == ("model_requests", 1, 1)
    assert len(model.requests) == 1  # the second request was never sent
    assert ran == ["x"]  # the tool call of the first answer ran
    assert (await kinds(execution)).count("model.request") == 1
    (event,) = [e async for e in execution.events() if e.kind == "budget.exceeded"]
    assert event.payload["budget"] == "model_requests" and event.payload["scope"] == "execution"
    assert "runtime.budgets.limit()" in str(error)


async def test_tokens_stop_when_the_next_prompt_alone_would_pass_the_limit(keel_runtime: keel.Runtime) -> None:
    # the next request repeats the whole conversation, so its input is at least the last one's
    model = setup(keel_runtime, used(60, 10, tool_calls=tool().tool_calls), "never sent")
    keel_runtime.budgets.limit(tokens=120)
    error = await refused(await keel_runtime.start(agent(), "go"))
    assert (error.budget, error.limit, error.usage) == ("tokens", 120, 70)
    assert len(model.requests) == 1


async def test_cost_comes_from_the_price_and_stops_the_next_request(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, used(1000, 1000, tool_calls=tool().tool_calls), "never sent")
    keel_runtime.budgets.price("scripted", input=100.0, output=400.0)  # per million tokens
    keel_runtime.budgets.limit(cost=0.55)
    execution = await keel_runtime.start(agent(), "go")
    error = await refused(execution)
    assert error.budget == "cost" and error.usage == pytest.approx(0.5)
    assert len(model.requests) == 1
    usage = await keel_runtime.budgets.usage(execution.id)
    assert usage is not None and usage["cost"] == pytest.approx(0.5) and usage["tokens"] == 2000


async def test_a_cost_limit_on_a_model_with_no_price_is_refused_not_guessed(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, "never sent")
    keel_runtime.use_model(model)
    keel_runtime.budgets.limit(cost=1.0)
    model.name = "unpriced-model"
    execution = await keel_runtime.start(agent(), "go")
    with pytest.raises(keel.BudgetError, match=r'budgets.prices."unpriced-model"'):
        await execution.result()
    assert model.requests == []


async def test_action_calls_stop_before_the_call_past_the_limit(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, tool(call_id="a"), tool(call_id="b"), "never sent")
    keel_runtime.budgets.limit(action_calls=1)
    execution = await keel_runtime.start(agent(), "go")
    error = await refused(execution)
    assert (error.budget, error.usage) == ("action_calls", 1)
    assert ran == ["x"]  # the second call never ran
    assert len(model.requests) == 2
    denied = [e async for e in execution.events() if e.kind == "action.denied"]
    assert len(denied) == 1 and denied[0].payload["policy"] == "budget"


async def test_parallel_calls_cannot_both_take_the_last_unit(keel_runtime: keel.Runtime) -> None:
    calls = [keel.ToolCall(id=f"c{i}", name="lookup", arguments={"name": str(i)}) for i in range(4)]
    setup(keel_runtime, Reply(tool_calls=calls), "never sent")
    keel_runtime.budgets.limit(action_calls=2)
    error = await refused(await keel_runtime.start(agent(), "go"))
    assert error.budget == "action_calls" and len(ran) == 2


async def test_wall_time_is_read_from_the_injected_clock(keel_runtime: keel.Runtime) -> None:
    now = [1000.0]

    def answer(request: keel.ModelRequest) -> Reply:
        now[0] += 30  # the model took 30 s, on the injected clock
        return tool()

    model = setup(keel_runtime)
    model._respond = answer
    keel_runtime.budgets.clock = lambda: now[0]
    keel_runtime.budgets.limit(wall_time=50)
    error = await refused(await keel_runtime.start(agent(), "go"))
    assert (error.budget, error.limit, error.usage) == ("wall_time", 50, 60)
    assert len(model.requests) == 2  # at 30 s the second went out; at 60 s the third did not


async def test_a_runnable_budget_applies_to_that_runnable_only(keel_runtime: keel.Runtime) -> None:
    setup(keel_runtime, "one", tool(), "two")
    keel_runtime.budgets.limit(runnable="strict", model_requests=1)
    assert await (await keel_runtime.start(agent(), "go")).result() == "one"
    strict = keel.Agent("strict", "Help.", actions=["lookup"])
    error = await refused(await keel_runtime.start(strict, "go"))
    assert error.source == "runtime.budgets.limit(runnable='strict')"


async def test_a_budget_given_to_start_is_that_execution_s_only(keel_runtime: keel.Runtime) -> None:
    setup(keel_runtime, tool(), "a", tool(), "b")
    error = await refused(await keel_runtime.start(agent(), "go", budget=keel.Budget(model_requests=1)))
    assert error.source == "runtime.start(..., budget=...)"
    setup(keel_runtime, tool(), "done")
    assert await (await keel_runtime.start(agent(), "again")).result() == "done"


async def test_a_tenant_budget_counts_every_execution_of_the_tenant(keel_runtime: keel.Runtime) -> None:
    setup(keel_runtime, "1", "2", "3", "4")
    keel_runtime.budgets.limit(tenant="acme", model_requests=2, period="day")
    for text in ("1", "2"):
        assert await (await keel_runtime.start(agent(), "go", tenant="acme")).result() == text
    error = await refused(await keel_runtime.start(agent(), "go", tenant="acme"))
    assert error.budget == "model_requests" and error.scope.startswith("tenant 'acme'")
    assert await (await keel_runtime.start(agent(), "go", tenant="other")).result() == "3"
    assert (await keel_runtime.budgets.tenant_usage("acme"))["model_requests"] == 2


async def test_a_tenant_period_starts_again(keel_runtime: keel.Runtime) -> None:
    now = [86_400.0 * 10]
    keel_runtime.budgets.clock = lambda: now[0]
    setup(keel_runtime, "1", "2")
    keel_runtime.budgets.limit(tenant="acme", model_requests=1, period="day")
    await (await keel_runtime.start(agent(), "go", tenant="acme")).result()
    await refused(await keel_runtime.start(agent(), "go", tenant="acme"))
    now[0] += 86_400
    assert await (await keel_runtime.start(agent(), "go", tenant="acme")).result() == "2"


async def test_an_agent_started_by_an_action_counts_against_its_caller(keel_runtime: keel.Runtime) -> None:
    inner = keel.Agent("inner", "Answer.")

    @keel.action(risk="read")
    async def ask_inner(question: str) -> str:
        """Ask the inner agent."""
        return str(await inner.run(question, runtime=keel_runtime))

    keel_runtime.actions.add(ask_inner)
    model = setup(keel_runtime, tool("ask_inner", question="q"), "inner answer", "never sent")
    outer = keel.Agent("outer", "Help.", actions=["ask_inner"])
    execution = await keel_runtime.start(outer, "go", budget=keel.Budget(model_requests=2))
    error = await refused(execution)
    assert error.usage == 2 and len(model.requests) == 2  # the inner agent's request counted here


async def test_usage_is_visible_per_execution(keel_runtime: keel.Runtime) -> None:
    setup(keel_runtime, used(5, 3, tool_calls=tool().tool_calls), used(9, 2, text="done"))
    execution = await keel_runtime.start(agent(), "go")
    assert await execution.result() == "done"
    usage = await keel_runtime.budgets.usage(execution.id)
    assert usage is not None
    assert (usage["tokens"], usage["model_requests"], usage["action_calls"]) == (19, 2, 1)
    assert usage["limits"] == {} and usage["unpriced"] == []
    assert await keel_runtime.budgets.usage("exe_nope") is None


# ------------------------------------------------------------------------------------ declarations


def write_stack(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keel.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_the_stack_declares_budgets_and_prices(tmp_path: Path) -> None:
    path = write_stack(
        tmp_path,
        """
[budgets]
model_requests = 5
[budgets.runnables.helper]
model_requests = 1
[budgets.tenants.acme]
cost = 2.5
period = "month"
[budgets.prices."scripted"]
input = 1.0
output = 2.0
""",
    )
    stack = keel.load_stack(path)
    async with keel.Runtime(make_host(), stack) as runtime:
        limits = runtime.budgets.limits_for("helper")
        assert limits["model_requests"] == (1, f"[budgets.runnables.helper] in {path}")
        assert runtime.budgets.limits_for("other")["model_requests"][0] == 5
        assert runtime.budgets.price_of("scripted-2") == keel.ModelPrice(input=1.0, output=2.0)
        model = setup(runtime, tool(), "never sent")
        error = await refused(await runtime.start(agent(), "go"))
        assert str(path) in str(error) and len(model.requests) == 1


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("[budgets.runnables.helper]\ntokenz = 3", "budgets.runnables.helper.tokenz"),
        ("[budgets]\ntokens = -1", "budgets.tokens"),
        ("[budgets.tenants.acme]\nwall_time = 3", "wall_time is per execution"),
        ("[budgets.tenants.acme]\nperiod = 'week'", "budgets.tenants.acme.period"),
    ],
)
def test_a_bad_declaration_names_the_file_and_the_key(tmp_path: Path, table: str, problem: str) -> None:
    path = write_stack(tmp_path, table)
    with pytest.raises(keel.StackError) as caught:
        keel.load_stack(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_a_bad_limit_in_code_is_a_budget_error() -> None:
    runtime = keel.Runtime(make_host())
    with pytest.raises(keel.BudgetError, match="valid limits"):
        runtime.budgets.limit(tokenz=3)


class PricingPlugin:
    def __init__(self, price: float) -> None:
        self.price = price

    @keel.hookimpl
    def keel_model_prices(self) -> dict[str, Any]:
        return {"acme-large": {"input": self.price, "output": 1.0}}


def test_plugins_price_models_and_a_disagreement_names_both() -> None:
    host = make_host()
    host.pm.register(PricingPlugin(1.0), name="one")
    runtime = keel.Runtime(host)
    assert runtime.budgets.price_of("acme-large") == keel.ModelPrice(input=1.0, output=1.0)
    host.pm.register(PricingPlugin(2.0), name="two")
    runtime = keel.Runtime(host)
    with pytest.raises(keel.BudgetError, match="'one'.*'two'|'two'.*'one'"):
        runtime.budgets.price_of("acme-large")
    runtime.budgets.config = keel.budgets.BudgetsConfig(prices={"acme-large": keel.ModelPrice(input=3, output=3)})
    runtime.budgets._plugin_prices = None
    assert runtime.budgets.price_of("acme-large") == keel.ModelPrice(input=3, output=3)


def test_the_budget_error_says_what_how_much_and_where() -> None:
    error = keel.BudgetExceeded(
        "tokens", 100, 98, scope="execution", source="[budgets] in keel.toml", execution_id="exe_1", call="a request"
    )
    assert isinstance(error, keel.KeelError)
    text = str(error)
    assert "'tokens'" in text and "limit 100" in text and "used 98" in text and "[budgets] in keel.toml" in text
    assert json.dumps({"budget": error.budget, "limit": error.limit, "usage": error.usage})


# ----------------------------------------------------------------------------------- conformance


class TestAgentsHonourBudgets(BudgetConformance):
    @pytest.fixture
    def budget_case(self) -> tuple[Any, Any, Any]:
        ran.clear()
        agent = keel.Agent("helper", "Help.", actions=["lookup"])
        return agent, "go", ScriptedModel([tool(), "done", "never sent"])

    @pytest.fixture
    def budget_host(self) -> Any:
        class Lookup:
            @keel.hookimpl
            def keel_actions(self) -> list[keel.ActionSpec]:
                return [lookup]

        return make_host(Lookup())


class TestTheKernelsOwnPrices(PriceConformance):
    @pytest.fixture
    def price_plugin(self) -> Any:
        return PricingPlugin(0.5)
