"""Agent and AgentExecution on the scripted model: contracts, retries, streams, events, isolation."""

from __future__ import annotations

import json
import random
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import keel
from keel.testing import Reply, ScriptedModel, make_host

INVOICE = {
    "number": (str, "invoice number"),
    "vendor": (str, "who issued it"),
    "total_eur": (float, "total in EUR", {"ge": 0}),
    "lines": [{"item": (str, "what was sold"), "qty": (int, "how many")}],
}
ANSWER = {"number": "2024-117", "vendor": "Nordlys AS", "total_eur": 360.0, "lines": [{"item": "licence", "qty": 3}]}


def invoice_agent(**options: Any) -> keel.Agent:
    return keel.Agent("invoice", "Extract the invoice from the text.", output=INVOICE, **options)


def use(runtime: keel.Runtime, *replies: str | Reply, chunks: int | None = 5, **kwargs: Any) -> ScriptedModel:
    model = ScriptedModel(list(replies), chunks=chunks, **kwargs)
    runtime.use_model(model)
    return model


async def drain(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


# ------------------------------------------------------------------------------- the basics


async def test_get_data_returns_the_validated_model(keel_runtime: keel.Runtime) -> None:
    model = use(keel_runtime, json.dumps(ANSWER))
    execution = await invoice_agent().start("Invoice 2024-117 from Nordlys AS", runtime=keel_runtime)
    data = await execution.get_data()
    assert isinstance(data, BaseModel)
    assert data.model_dump() == ANSWER
    assert execution.status is keel.ExecutionStatus.COMPLETED
    request = model.requests[0]
    assert request.output_schema == invoice_agent().contract.json_schema  # type: ignore[union-attr]
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[1].content == "Invoice 2024-117 from Nordlys AS"
    # no native structured output: the schema is described in the prompt
    assert "It must match this JSON schema" in request.messages[0].content


async def test_native_structured_output_keeps_the_prompt_short(keel_runtime: keel.Runtime) -> None:
    model = use(keel_runtime, json.dumps(ANSWER), capabilities=keel.ModelCapabilities(json_schema=True))
    await invoice_agent().run("text", runtime=keel_runtime)
    request = model.requests[0]
    assert request.output_schema is not None and request.output_schema["required"]
    assert request.messages[0].content == "Extract the invoice from the text."


async def test_object_inputs_are_sent_as_json(keel_runtime: keel.Runtime) -> None:
    model = use(keel_runtime, json.dumps(ANSWER))
    await invoice_agent().run({"text": "Invoice 2024-117", "lang": "en"}, runtime=keel_runtime)
    assert json.loads(model.requests[0].messages[-1].content) == {"text": "Invoice 2024-117", "lang": "en"}


async def test_an_agent_without_contract_answers_text(keel_runtime: keel.Runtime) -> None:
    use(keel_runtime, "Hello there", chunks=4)
    agent = keel.Agent("greeter", "Greet.")
    execution = await agent.start("hi", runtime=keel_runtime)
    assert await execution.get_data() == "Hello there"
    events = await drain(execution.instant())
    assert [e.delta for e in events] == ["Hell", "o th", "ere", ""]
    assert events[-1].is_complete and events[-1].value == "Hello there"
    assert events[1].value == "Hello th"


async def test_it_is_a_runnable_and_its_execution_an_execution(keel_runtime: keel.Runtime) -> None:
    use(keel_runtime, json.dumps(ANSWER))
    agent = invoice_agent(description="Invoices from text")
    assert isinstance(agent, keel.Runnable)
    keel_runtime.add(agent)
    runnable = keel_runtime.runnables.get("invoice")
    assert runnable.kind == "agent" and runnable.description == "Invoices from text"
    assert runnable.output_schema()["properties"]["vendor"]["description"] == "who issued it"
    assert runnable.input_schema()["anyOf"]
    execution = await runnable.start("text", runtime=keel_runtime, tenant="acme")
    assert isinstance(execution, keel.Execution)
    assert keel_runtime.executions.get(execution.id, tenant="acme") is execution
    with pytest.raises(keel.NotFoundError):
        keel_runtime.executions.get(execution.id, tenant="other")
    assert (await execution.result()).vendor == "Nordlys AS"
    with pytest.raises(keel.KeelError, match="takes no signals"):
        await execution.signal("approve")


# ---------------------------------------------------------------------- the three consumers


async def test_three_consumers_on_one_execution_including_late_ones(keel_runtime: keel.Runtime) -> None:
    use(keel_runtime, json.dumps(ANSWER), chunks=3)
    execution = await invoice_agent().start("text", runtime=keel_runtime)
    early: dict[str, list[Any]] = {}

    async def collect(name: str, iterator: Any) -> None:
        early[name] = await drain(iterator)

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, "instant", execution.instant())
        tg.start_soon(collect, "events", execution.events())
        tg.start_soon(collect, "data", _data(execution))
    data = early["data"][0]
    # consumers that start after the end still see everything from the beginning
    assert await drain(execution.instant()) == early["instant"]
    assert await drain(execution.events()) == early["events"]
    assert [e.seq for e in await drain(execution.events(since=3))] == list(range(4, len(early["events"]) + 1))
    # the instant stream built the same object get_data validated
    root = [e for e in early["instant"] if e.path == "" and e.is_complete]
    assert len(root) == 1 and root[0].value == data.model_dump()
    complete = [e.path for e in early["instant"] if e.is_complete]
    assert complete == ["number", "vendor", "total_eur", "lines[0].item", "lines[0].qty", "lines[0]", "lines", ""]


async def _data(execution: keel.AgentExecution) -> Any:
    yield await execution.get_data()


async def test_runtime_events_carry_ids_and_tell_the_whole_story(keel_runtime: keel.Runtime) -> None:
    use(keel_runtime, json.dumps(ANSWER), chunks=20)
    subscription = keel_runtime.bus.subscribe()
    execution = await invoice_agent().start("text", runtime=keel_runtime)
    await execution.get_data()
    events = await drain(execution.events())
    kinds = [e.kind for e in events]
    deltas = kinds.count("model.delta")
    assert deltas == len(range(0, len(json.dumps(ANSWER)), 20))
    assert kinds == [
        "execution.started",
        "model.request",
        *["model.delta"] * deltas,
        "model.response",
        "output.parsed",
        "execution.completed",
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # events are built without validation on the hot path: each must equal a validated one
    # (payloads may hold the objects themselves, a request or the output: compare them as JSON too)
    assert events == [keel.RuntimeEvent.model_validate(dict(e.__dict__)) for e in events]
    dumped = [e.model_dump(mode="json") for e in events]
    assert dumped == [
        keel.RuntimeEvent.model_validate_json(e.model_dump_json()).model_dump(mode="json") for e in events
    ]
    assert len({e.id for e in events}) == len(events)
    events[0].level = "debug"  # a consumer may still treat events as ordinary models
    assert events[0].model_dump()["level"] == "debug"
    assert {e.execution_id for e in events} == {execution.id}
    assert {e.trace_id for e in events} == {execution.trace_id}
    model_events = [e for e in events if e.kind.startswith("model.")]
    assert len({e.span_id for e in model_events}) == 1
    assert {e.parent_span_id for e in model_events} == {execution.span_id}
    response = next(e for e in events if e.kind == "model.response")
    assert response.payload["usage"]["output_tokens"] > 0 and response.payload["latency_ms"] >= 0
    # the same events went out on the bus
    published = []
    with anyio.fail_after(5):
        async for event in subscription:
            published.append(event)
            if event.kind == "execution.completed":
                break
    subscription.close()
    assert [e.id for e in published] == [e.id for e in events]


class Stuck:
    """An observer that blocks until released."""

    def __init__(self) -> None:
        self.seen = 0
        self.gate = anyio.Event()

    @keel.hookimpl
    async def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        self.seen += 1
        await self.gate.wait()


class Broken:
    @keel.hookimpl
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        raise RuntimeError("observer bug")


async def test_a_stuck_observer_never_stalls_an_execution() -> None:
    stuck = Stuck()
    async with keel.Runtime(make_host(stuck), keel.Stack(), buffer=8) as runtime:
        use(runtime, json.dumps(ANSWER), chunks=1)
        execution = await invoice_agent().start("text", runtime=runtime)
        with anyio.fail_after(10):
            assert (await execution.get_data()).vendor == "Nordlys AS"
        assert stuck.seen == 1
        assert runtime.bus.dropped["observers"] > 0  # counted, not blocking
        last = (await drain(execution.events()))[-1]
        assert last.kind == "execution.completed" and last.payload["bus_dropped"] > 0
        stuck.gate.set()


async def test_a_failing_observer_never_fails_an_execution() -> None:
    async with keel.Runtime(make_host(Broken()), keel.Stack()) as runtime:
        use(runtime, json.dumps(ANSWER))
        assert (await invoice_agent().run("text", runtime=runtime)).vendor == "Nordlys AS"


# ------------------------------------------------------------------------ retries and repair


async def test_validation_errors_are_fed_back_and_the_retry_is_accepted(keel_runtime: keel.Runtime) -> None:
    wrong = {**ANSWER, "total_eur": "three hundred sixty"}
    model = use(keel_runtime, json.dumps(wrong), json.dumps(ANSWER), chunks=4)
    execution = await invoice_agent().start("text", runtime=keel_runtime)
    data = await execution.get_data()
    assert data.total_eur == 360.0
    retry = [e for e in await drain(execution.events()) if e.kind == "output.retry"]
    assert len(retry) == 1 and retry[0].payload["errors"][0].startswith("total_eur:")
    second = model.requests[1].messages
    assert [m.role for m in second] == ["system", "user", "assistant", "user"]
    assert second[2].content == json.dumps(wrong)
    assert "total_eur" in second[3].content
    assert len(model.requests[0].messages) == 2  # the first request was not changed afterwards
    assert [a["errors"] == [] for a in execution.attempts] == [False, True]


async def test_the_instant_stream_resets_an_abandoned_attempt(keel_runtime: keel.Runtime) -> None:
    wrong = {**ANSWER, "vendor": "WRONG", "total_eur": -1}
    use(keel_runtime, json.dumps(wrong), json.dumps(ANSWER), chunks=2)
    execution = await invoice_agent().start("text", runtime=keel_runtime)
    events = await drain(execution.instant())
    resets = [i for i, e in enumerate(events) if e.kind == "reset"]
    assert len(resets) == 1
    before, reset, after = events[: resets[0]], events[resets[0]], events[resets[0] + 1 :]
    assert reset.attempt == 0 and reset.delta == "output.retry"
    assert {e.attempt for e in before} == {0} and {e.attempt for e in after} == {1}
    assert any(e.path == "vendor" and e.value == "WRONG" for e in before)
    # what a UI keeps after honouring the reset is exactly the accepted answer
    shown = {e.path: e.value for e in after if e.is_complete}
    assert shown[""] == (await execution.get_data()).model_dump()


async def test_the_repair_path_needs_no_retry(keel_runtime: keel.Runtime) -> None:
    messy = "Here you go:\n```json\n" + json.dumps(ANSWER, indent=1).replace("3\n", "3,\n") + "\n```\nAnything else?"
    model = use(keel_runtime, messy, chunks=1)
    execution = await invoice_agent(max_retries=0).start("text", runtime=keel_runtime)
    assert (await execution.get_data()).model_dump() == ANSWER
    parsed = [e for e in await drain(execution.events()) if e.kind == "output.parsed"]
    assert parsed[0].payload == {"attempt": 0, "repaired": True}
    assert len(model.requests) == 1
    assert [e for e in await drain(execution.instant()) if e.is_complete][-1].value == ANSWER


async def test_ensure_keys_makes_an_empty_field_a_retry(keel_runtime: keel.Runtime) -> None:
    empty = {**ANSWER, "lines": [{"item": "", "qty": 3}]}
    model = use(keel_runtime, json.dumps(empty), json.dumps(ANSWER))
    agent = invoice_agent(ensure_keys=["lines[*].item"])
    assert (await agent.run("text", runtime=keel_runtime)).lines[0].item == "licence"
    assert "lines[0].item: must be present and not empty" in model.requests[1].messages[-1].content


async def test_when_retries_run_out_every_attempt_is_reported(keel_runtime: keel.Runtime) -> None:
    use(keel_runtime, "not json", '{"number": 1}', "```json\n{}\n```", chunks=3)
    execution = await invoice_agent(max_retries=2).start("text", runtime=keel_runtime)
    with pytest.raises(keel.OutputValidationError) as caught:
        await execution.get_data()
    error = caught.value
    assert [a["text"] for a in error.attempts] == ["not json", '{"number": 1}', "```json\n{}\n```"]
    assert all(a["errors"] for a in error.attempts)
    assert any("vendor: Field required" in e for e in error.attempts[1]["errors"])  # type: ignore[attr-defined]
    assert "after 3 attempt(s)" in str(error)
    assert execution.status is keel.ExecutionStatus.FAILED
    events = await drain(execution.events())
    assert [e.kind for e in events].count("output.retry") == 2
    assert events[-1].kind == "execution.failed" and "OutputValidationError" in events[-1].payload["error"]
    instant = await drain(execution.instant())
    assert [e.attempt for e in instant if e.kind == "reset"] == [1, 2]  # attempt 0 never showed a field
    assert instant[-1].kind == "reset"  # nothing of a failed execution stays on screen


TICKET = {"title": (str, "a title"), "tags": [str], "n": (int, "a count"), "meta": {"note": ("str?", "")}}


@settings(max_examples=40, deadline=None)
@given(
    answer=st.fixed_dictionaries(
        {
            "title": st.text(max_size=30),
            "tags": st.lists(st.text(max_size=8), max_size=4),
            "n": st.integers(),
            "meta": st.fixed_dictionaries({"note": st.none() | st.text(max_size=10)}),
        }
    ),
    chunks=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=5),
    indent=st.sampled_from([None, 2]),
)
def test_any_chunking_through_an_agent_gives_the_same_data_and_completions(
    answer: dict[str, Any], chunks: list[int], indent: int | None
) -> None:
    agent = keel.Agent("ticket", "Describe the ticket.", output=TICKET)
    text = json.dumps(answer, indent=indent)

    async def run(sizes: list[int]) -> tuple[Any, list[str]]:
        async with keel.Runtime(make_host(), keel.Stack()) as runtime:
            runtime.use_model(ScriptedModel([text], chunks=sizes))
            execution = await agent.start("t", runtime=runtime)
            paths = [e.path for e in await drain(execution.instant()) if e.is_complete]
            return (await execution.get_data()).model_dump(), paths

    whole = anyio.run(run, [len(text)])
    ones = anyio.run(run, [1])
    cut = anyio.run(run, chunks)
    assert whole == ones == cut
    data, paths = whole
    assert data == answer
    assert len(paths) == len(set(paths)) and paths[-1] == ""


# --------------------------------------------------------------------------- isolation


async def test_one_agent_shared_by_many_concurrent_executions_leaks_nothing(keel_runtime: keel.Runtime) -> None:
    rng = random.Random(7)

    async def respond(request: keel.ModelRequest) -> Reply:
        ask = json.loads(request.messages[1].content)
        first_try = len(request.messages) == 2
        await anyio.sleep(rng.random() / 100)
        if ask["n"] % 3 == 0 and first_try:  # every third execution needs a retry
            return Reply(text='{"number": "oops"}', chunks=rng.randint(1, 9), delay=0.001)
        answer = {**ANSWER, "number": f"N{ask['n']}", "lines": [{"item": f"item{ask['n']}", "qty": ask["n"]}]}
        return Reply(text=json.dumps(answer), chunks=rng.randint(1, 9), delay=0.0005)

    keel_runtime.use_model(ScriptedModel(respond))
    agent = invoice_agent()
    executions = [await agent.start({"n": n}, runtime=keel_runtime) for n in range(40)]
    results: dict[int, Any] = {}

    async def watch(n: int, execution: keel.AgentExecution) -> None:
        instant = await drain(execution.instant())
        results[n] = (await execution.get_data(), instant)

    async with anyio.create_task_group() as tg:
        for n, execution in enumerate(executions):
            tg.start_soon(watch, n, execution)
    for n, execution in enumerate(executions):
        data, instant = results[n]
        assert data.number == f"N{n}" and data.lines[0].qty == n
        accepted = [e for e in instant if e.attempt == len(execution.attempts) - 1 and e.path == "" and e.is_complete]
        assert accepted[-1].value["number"] == f"N{n}"
        assert len(execution.attempts) == (2 if n % 3 == 0 else 1)
        assert json.loads(execution.messages[1].content) == {"n": n}
        assert len(execution.messages) == (4 if n % 3 == 0 else 2)
        assert {e.execution_id for e in await drain(execution.events())} == {execution.id}
    assert agent._system == {False: executions[0].messages[0].content}  # the agent holds no run state


# ------------------------------------------------------------------ cancellation, timeouts


async def test_cancel_ends_the_streams_and_says_why(keel_runtime: keel.Runtime) -> None:
    use(keel_runtime, Reply(text=json.dumps(ANSWER), chunks=2, delay=0.05), chunks=None)
    execution = await invoice_agent().start("text", runtime=keel_runtime)
    seen: list[keel.InstantEvent] = []

    async def follow() -> None:
        async for event in execution.instant():
            seen.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        with anyio.fail_after(10):
            async for event in execution.instant():
                if event.path == "number" and not event.is_complete:
                    break
        await execution.cancel("user closed the page")
    assert execution.status is keel.ExecutionStatus.CANCELLED
    assert execution.reason == "user closed the page"
    with pytest.raises(keel.ExecutionCancelled, match="user closed the page"):
        await execution.get_data()
    events = await drain(execution.events())
    assert events[-1].kind == "execution.cancelled" and events[-1].payload["reason"] == "user closed the page"
    assert seen[-1].kind == "reset"
    await execution.cancel()  # cancelling a finished execution is a no-op


async def test_cancel_before_it_runs(keel_runtime: keel.Runtime) -> None:
    model = use(keel_runtime, json.dumps(ANSWER))
    execution = await invoice_agent().start("text", runtime=keel_runtime)
    await execution.cancel("changed my mind")
    assert execution.status is keel.ExecutionStatus.CANCELLED
    assert model.requests == []


async def test_a_timeout_fails_the_execution(keel_runtime: keel.Runtime) -> None:
    use(keel_runtime, Reply(text=json.dumps(ANSWER), chunks=1, delay=0.2), chunks=None)
    execution = await invoice_agent(timeout=0.1).start("text", runtime=keel_runtime)
    with pytest.raises(keel.AgentTimeoutError, match="did not finish within 0.1s"):
        await execution.get_data()
    assert execution.status is keel.ExecutionStatus.FAILED and execution.reason == "timeout after 0.1s"


async def test_closing_the_runtime_cancels_running_executions() -> None:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        use(runtime, Reply(text=json.dumps(ANSWER), chunks=1, delay=10), chunks=None)
        execution = await invoice_agent().start("text", runtime=runtime)
        await anyio.sleep(0.01)
        runtime.task_group.cancel_scope.cancel()
    assert execution.status is keel.ExecutionStatus.CANCELLED and execution.reason == "runtime closed"


async def test_a_failing_model_fails_the_execution_with_its_error(keel_runtime: keel.Runtime) -> None:
    use(keel_runtime)  # no replies: the scripted model raises
    execution = await invoice_agent().start("text", runtime=keel_runtime)
    with pytest.raises(keel.KeelError, match="ran out of replies"):
        await execution.get_data()
    assert execution.status is keel.ExecutionStatus.FAILED


async def test_starting_needs_a_started_runtime() -> None:
    runtime = keel.Runtime(make_host(), keel.Stack())
    runtime.use_model(ScriptedModel([json.dumps(ANSWER)]))
    with pytest.raises(keel.KeelError, match="not started"):
        await invoice_agent().start("text", runtime=runtime)


# ---------------------------------------------------------------------------- definitions


AGENT_TOML = """
[agent]
name = "invoice"
instructions = "Extract the invoice."
max_retries = 1
timeout = 30
ensure_keys = ["lines[*].item"]
actions = ["tag:billing"]
options = { temperature = 0 }

[agent.output]
number = ["str", "invoice number"]
vendor = ["str", "who issued it"]
total_eur = ["float", "total in EUR", { ge = 0 }]
status = ["str", "payment status", { enum = ["open", "paid"] }]
lines = [{ item = ["str", "what was sold"], qty = ["int", "how many"] }]
"""


def test_an_agent_file_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "invoice.toml"
    path.write_text(AGENT_TOML)
    agent = keel.Agent.from_file(path)
    assert (agent.name, agent.max_retries, agent.timeout, agent.actions) == ("invoice", 1, 30, ("tag:billing",))
    assert agent.options == {"temperature": 0}
    assert agent.contract is not None and agent.contract.ensure_keys == ("lines[*].item",)
    schema = agent.output_schema()
    assert schema["properties"]["status"]["enum"] == ["open", "paid"]
    assert schema["properties"]["total_eur"]["minimum"] == 0
    data = agent.run_sync("text", model=ScriptedModel([json.dumps({**ANSWER, "status": "paid"})]), runtime=_runtime())
    assert data.status == "paid"


def _runtime() -> keel.Runtime:
    return keel.Runtime(make_host(), keel.Stack())


def test_an_agent_file_may_name_a_pydantic_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_contracts.py").write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel

            class Answer(BaseModel):
                city: str
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "agent.toml"
    path.write_text('name = "geo"\ninstructions = "Name a city."\noutput_model = "my_contracts:Answer"\n')
    agent = keel.Agent.from_file(path)
    assert agent.run_sync("?", runtime=_runtime(), model=ScriptedModel(['{"city": "Oslo"}'])).city == "Oslo"
    sys.modules.pop("my_contracts", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nprompt = "typo"\n', r"unknown key\(s\) \['prompt'\]"),
        ('instructions = "no name"\n', "needs a name"),
        ('name = "x"\n[output]\na = ["strng", "typo"]\n', "unknown type name 'strng'"),
        ('name = "x"\noutput_model = "nowhere:Nothing"\n', "could not be loaded: there is no module 'nowhere'"),
        ("name = [", "not valid TOML"),
    ],
)
def test_a_bad_agent_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(keel.KeelError, match=message) as caught:
        keel.Agent.from_file(path)
    assert str(path) in str(caught.value)


def test_an_agent_file_in_yaml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "agent.yaml"
    path.write_text("name: invoice\ninstructions: Extract.\noutput:\n  vendor: [str, who issued it]\n")
    agent = keel.Agent.from_file(path)
    assert agent.output_schema()["required"] == ["vendor"]


async def test_run_sync_refuses_to_run_inside_an_event_loop() -> None:
    with pytest.raises(keel.KeelError, match="cannot run inside an event loop"):
        invoice_agent().run_sync("text", model=ScriptedModel([json.dumps(ANSWER)]))


def test_run_sync_builds_a_runtime_from_the_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("KEEL_LOAD_PLUGINS", "KEEL_STACK", "KEEL_STACK_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KEEL_LOAD_PLUGINS", "")  # only the kernel's built-ins
    (tmp_path / "keel.toml").write_text(
        'model = "canned"\nstore = "memory"\n[models.canned]\nprovider = "scripted"\nreplies = [\'{"vendor": "Nordlys AS"}\']\n'
    )
    agent = keel.Agent("v", "Who sent it?", output={"vendor": (str, "")})
    assert agent.run_sync("text").vendor == "Nordlys AS"
