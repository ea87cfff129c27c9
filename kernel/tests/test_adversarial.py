"""One hostile model answer never stalls the runtime, exhausts its memory, or escapes as a plain
Python error: bounded parsing, repair and memory (issue 15). Speed itself is measured under
bench/adversarial.py; these tests check behaviour, and memory by allocation counts."""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, model_validator

import keel
from keel.instant import InstantParser, OutputLimits
from keel.testing import Reply, ScriptedModel, make_host

RAISED = OutputLimits(max_chars=10**8, max_depth=10**6, max_string_chars=10**8)
TICKET = {"title": (str, "a short title"), "tags": [str], "score": ("float?", "", {"ge": 0})}


def ticket_agent(**options: Any) -> keel.Agent:
    return keel.Agent("ticket", "Summarise.", output=TICKET, **options)


def feed(text: str, size: int, parser: InstantParser) -> list[keel.InstantEvent]:
    out: list[keel.InstantEvent] = []
    for start in range(0, len(text), size):
        out += parser.feed(text[start : start + size])
    return out + parser.finish()


# ------------------------------------------------------------------------------ the parser


def test_whitespace_in_one_chunk_or_many_gives_the_same_events() -> None:
    text = '{"a": 1' + " " * 200_000 + ', "b"' + "\n" * 100_000 + ": [2 ," + "\t" * 50_000 + "3]}"
    for size in (len(text), 64, 7):
        parser = InstantParser()
        events = feed(text, size, parser)
        assert parser.done and parser.root == {"a": 1, "b": [2, 3]}
        assert [e.path for e in events if e.is_complete] == ["a", "b[0]", "b[1]", "b", ""]


def test_nesting_past_the_depth_limit_is_a_typed_error() -> None:
    parser = InstantParser()
    with pytest.raises(keel.OutputLimitExceeded) as caught:
        parser.feed("[" * 10_000)
    assert caught.value.limit == "max_depth" and caught.value.maximum == 100
    assert isinstance(caught.value, keel.KeelError) and "limits=" in str(caught.value)
    assert parser.failed and parser.feed("]") == []


def peak_bytes(depth: int) -> int:
    tracemalloc.start()
    try:
        parser = InstantParser(limits=RAISED)
        events = parser.feed('{"k": ' + "[" * depth + "]" * depth + "}")
        assert parser.done and len(events) == 2 * depth + 2
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_linearly_with_the_depth() -> None:
    small, big = peak_bytes(2_000), peak_bytes(8_000)
    # a full path per level (the old parser) grows with depth squared: 16x here
    assert big / small < 6, (small, big)
    assert big < 8_000 * 1_000  # well under a kilobyte per level


def test_paths_of_deep_values_are_built_when_read() -> None:
    parser = InstantParser(limits=RAISED)
    events = parser.feed('{"a b": [[{"x": "deep"}]]}')
    assert [e.path for e in events if e.is_complete] == [
        '["a b"][0][0].x',
        '["a b"][0][0]',
        '["a b"][0]',
        '["a b"]',
        "",
    ]


def test_numbers_and_strings_past_their_limits_are_typed_errors() -> None:
    with pytest.raises(keel.OutputLimitExceeded, match="max_number_chars"):
        InstantParser().feed('{"n": ' + "7" * 5_000)
    limits = OutputLimits(max_string_chars=1_000)
    for text, size in (('{"s": "' + "x" * 2_000, 2_000), ('{"s": "' + "x" * 2_000 + '"}', 10), ('{"' + "k" * 2_000, 1)):
        with pytest.raises(keel.OutputLimitExceeded, match="max_string_chars"):
            feed(text, size, InstantParser(limits=limits))
    with pytest.raises(keel.OutputLimitExceeded, match="max_chars"):
        feed('{"s": "' + "x" * 3_000, 100, InstantParser(limits=OutputLimits(max_chars=2_000)))


def test_limits_are_checked_when_declared() -> None:
    with pytest.raises(keel.KeelError, match="at most 4300"):
        OutputLimits(max_number_chars=100_000)
    with pytest.raises(keel.KeelError, match="positive integer"):
        OutputLimits(max_depth=0)
    with pytest.raises(keel.KeelError, match="unknown setting"):
        OutputLimits.of({"max_dept": 5})
    assert OutputLimits.of({"max_depth": 5}).max_depth == 5 and OutputLimits.of(None) == OutputLimits()


def test_nan_and_infinity_are_not_json_for_the_instant_stream() -> None:
    for token in ("NaN", "Infinity", "-Infinity"):
        parser = InstantParser()
        events = feed('{"a": 1, "x": ' + token + "}", 3, parser)
        assert parser.failed and [e.path for e in events if e.is_complete] == ["a"]


def test_brackets_in_prose_do_not_start_the_instant_stream() -> None:
    text = 'Use the form {name} (see [1], [the docs]) like this: {"title": "real", "tags": ["a"]} ok?'
    for size in (1, 5, len(text)):
        parser = InstantParser(root="object")
        events = feed(text, size, parser)
        assert parser.done and parser.root == {"title": "real", "tags": ["a"]}
        assert events[0].path == "" and not events[0].is_complete
    loose = InstantParser()  # any root: "[1]" is JSON, "[the docs]" is not
    feed("see [the docs] then [1, 2]", 4, loose)
    assert loose.root == [1, 2]


# ------------------------------------------------------------------------------ final parse


def test_a_truncated_answer_is_repaired_in_one_linear_pass() -> None:
    contract = keel.OutputContract.of(TICKET)
    text = 'Here: {"title": "Printer on fire", "tags": ["hardware", "urg'
    check = contract.check(text)
    assert check.ok and check.repaired
    assert check.data is not None and check.data.model_dump() == {
        "title": "Printer on fire",
        "tags": ["hardware", "urg"],
        "score": None,
    }


def test_prose_braces_do_not_become_the_answer() -> None:
    contract = keel.OutputContract.of({"a": ("str?", ""), "b": ("int?", "")})
    check = contract.check('Use the form {name} like: {"a": "real"}')
    assert check.ok and check.data is not None and check.data.model_dump() == {"a": "real", "b": None}


def test_an_example_in_prose_that_misses_required_keys_is_not_the_answer() -> None:
    contract = keel.OutputContract.of(TICKET)
    text = 'Format: {"title": "example"}. And {"tags": 1} is wrong. The answer: {"title": "real", "tags": ["a"]}'
    check = contract.check(text)
    assert check.ok and check.data is not None and check.data.model_dump()["title"] == "real"
    only_examples = contract.check('Format: {"title": "example"} or {"title": "other"}')
    assert not only_examples.ok and only_examples.errors == ["tags: Field required"]  # the first one's errors


def test_nan_and_infinity_are_refused_by_number_fields() -> None:
    contract = keel.OutputContract.of({"x": (float, ""), "y": ("float?", "", {"ge": 0})})
    for text in ('{"x": NaN}', '{"x": Infinity}', '{"x": 1, "y": Infinity}', '{"x": 1e999}'):
        check = contract.check(text)
        assert not check.ok and any("finite" in e for e in check.errors), (text, check.errors)
    assert contract.check('{"x": 1.5, "y": 0}').ok


def test_unknown_keys_are_refused_unless_the_agent_ignores_them() -> None:
    strict = keel.OutputContract.of(TICKET)
    check = strict.check('{"title": "t", "tags": [], "titel": "typo"}')
    assert not check.ok and check.errors == ["titel: Extra inputs are not permitted"]
    loose = keel.OutputContract.of(TICKET, extra="ignore")
    assert loose.check('{"title": "t", "tags": [], "titel": "typo"}').ok
    assert ticket_agent(output_extra="ignore").contract.check('{"title": "t", "tags": [], "x": 1}').ok  # type: ignore[union-attr]
    with pytest.raises(keel.KeelError, match="forbid"):
        keel.OutputContract.of(TICKET, extra="allow")  # type: ignore[arg-type]


def test_repair_failures_are_errors_of_the_answer_not_crashes() -> None:
    contract = keel.OutputContract.of(TICKET)
    hostile = [
        "prose " + "[" * 5_000,  # json-repair recurses
        '{"title": "t", "tags": [], "score": ' + "9" * 5_000 + "}",  # past the number limit
        "x" * 40_000 + "{'title': 1",  # too long for json-repair, and no JSON to find
        '\ud800{"title": "\udfff"',
    ]
    for text in hostile:
        try:
            check = contract.check(text)
        except keel.KeelError:
            continue
        assert not check.ok and check.errors


# ------------------------------------------------------------------- no plain Python errors

HOSTILE = st.sampled_from(
    [
        "{",
        "[",
        "}",
        "]",
        '"',
        "\\",
        "\\u12",
        "\\ud800",
        ":",
        ",",
        " " * 50,
        "NaN",
        "-Infinity",
        "9" * 60,
        "1e99999",
        '{"title": ',
        '"tags": [',
        "```json\n",
        "[" * 300,
        "{" * 120,
        "null",
        "true",
    ]
)
TEXTS = st.lists(st.text() | HOSTILE, max_size=12).map("".join) | st.binary(max_size=300).map(
    lambda b: b.decode("utf-8", "surrogateescape")
)
SMALL = OutputLimits(max_chars=4_000, max_depth=50, max_number_chars=50, max_string_chars=500, repair_max_chars=2_000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5), with_contract=st.booleans())
def test_any_text_in_any_chunking_gives_data_or_a_keel_error(text: str, sizes: list[int], with_contract: bool) -> None:
    async def main() -> None:
        async with keel.Runtime(make_host(), keel.Stack()) as runtime:
            runtime.use_model(ScriptedModel([Reply(text, chunks=sizes)] * 2))
            output = TICKET if with_contract else None
            agent = keel.Agent("fuzz", "x", output=output, max_retries=1, limits=SMALL)
            execution = await agent.start("go", runtime=runtime)
            with anyio.fail_after(20):
                async for event in execution.instant():
                    event.to_dict()
                try:
                    await execution.get_data()
                except keel.KeelError:
                    assert execution.status is keel.ExecutionStatus.FAILED
                async for runtime_event in execution.events():
                    runtime_event.model_dump()

    anyio.run(main)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS)
def test_check_returns_a_verdict_or_raises_a_keel_error(text: str) -> None:
    contract = keel.OutputContract.of(TICKET, limits=SMALL)
    try:
        contract.check(text)
    except keel.KeelError:
        pass


# ------------------------------------------------------------------------- the agent


async def test_an_answer_past_a_limit_fails_the_execution_with_the_typed_error(keel_runtime: keel.Runtime) -> None:
    keel_runtime.use_model(ScriptedModel(['{"title": "' + "x" * 5_000 + '", "tags": []}'], chunks=100))
    agent = ticket_agent(limits={"max_string_chars": 1_000})
    execution = await agent.start("go", runtime=keel_runtime)
    with pytest.raises(keel.OutputLimitExceeded, match="agent 'ticket'.*max_string_chars") as caught:
        await execution.get_data()
    assert caught.value.limit == "max_string_chars"
    assert execution.status is keel.ExecutionStatus.FAILED
    instant = [e async for e in execution.instant()]
    assert instant[-1].kind == "reset"
    requests = [e for e in await drain(execution.events()) if e.kind == "model.request"]
    assert len(requests) == 1  # not retried: a limit is not something the model is asked to fix


async def test_a_free_text_answer_is_bounded_too(keel_runtime: keel.Runtime) -> None:
    keel_runtime.use_model(ScriptedModel(["y" * 5_000], chunks=500))
    execution = await keel.Agent("chat", "x", limits={"max_chars": 1_000}).start("go", runtime=keel_runtime)
    with pytest.raises(keel.OutputLimitExceeded, match="max_chars"):
        await execution.get_data()


async def drain(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


class Slow(BaseModel):
    title: str
    tags: list[str]

    @model_validator(mode="after")
    def slow(self) -> Slow:
        time.sleep(1.5)  # a costly check of the user's, as slow as repairing a huge answer once was
        return self


async def test_the_timeout_covers_parsing_and_validation(keel_runtime: keel.Runtime) -> None:
    truncated = json.dumps({"title": "t", "tags": ["word"] * 40_000})[:300_000]
    keel_runtime.use_model(ScriptedModel([truncated], chunks=len(truncated)))
    agent = keel.Agent("slow", "x", output=Slow, timeout=0.5, max_retries=0)
    execution = await agent.start("go", runtime=keel_runtime)
    with anyio.fail_after(1.4):  # before the validator could have returned
        with pytest.raises(keel.AgentTimeoutError):
            await execution.get_data()
    assert execution.status is keel.ExecutionStatus.FAILED and execution.reason.startswith("timeout")


async def test_a_hostile_answer_in_one_chunk_lets_other_executions_stream(keel_runtime: keel.Runtime) -> None:
    hostile = '{"title": "' + "x\\n" * 150_000 + '", "tags": [' + "1, " * 100_000
    steady = json.dumps({"title": "steady", "tags": ["a"] * 50})
    keel_runtime.use_model(
        ScriptedModel(
            lambda r: (
                Reply(hostile, chunks=len(hostile))
                if "hostile" in r.messages[-1].content
                else Reply(steady, chunks=4, delay=0.001)
            )
        )
    )
    agent = ticket_agent(max_retries=0)
    first = await agent.start("hostile", runtime=keel_runtime)
    second = await agent.start("steady", runtime=keel_runtime)
    order: list[str] = []

    async def watch(name: str, execution: keel.AgentExecution) -> None:
        async for _ in execution.instant():
            order.append(name)

    async with anyio.create_task_group() as group:
        group.start_soon(watch, "hostile", first)
        group.start_soon(watch, "steady", second)
    # the steady execution's events interleave with the hostile one's: it was never starved
    hostile_span = [i for i, name in enumerate(order) if name == "hostile"]
    assert any(name == "steady" for name in order[hostile_span[0] : hostile_span[-1]])
    with pytest.raises(keel.OutputValidationError):
        await first.get_data()  # the tags are numbers
    assert (await second.get_data()).title == "steady"


# --------------------------------------------------------------------------- tool rounds


@keel.action(risk="read")
def look_up(name: str) -> str:
    """Look something up."""
    return f"found {name}"


def tool_call(call_id: str = "c1") -> keel.ToolCall:
    return keel.ToolCall(id=call_id, name="look_up", arguments={"name": "x"})


async def test_attempt_numbers_increase_across_tool_rounds(keel_runtime: keel.Runtime) -> None:
    keel_runtime.actions.add(look_up)
    final = json.dumps({"title": "t", "tags": ["a"]})
    keel_runtime.use_model(
        ScriptedModel(
            [Reply('{"title": "gue', [tool_call()]), Reply('{"title": "again', [tool_call()]), final], chunks=4
        )
    )
    execution = await ticket_agent(actions=["look_up"]).start("go", runtime=keel_runtime)
    instant = [e async for e in execution.instant()]
    await execution.get_data()
    resets = [e.attempt for e in instant if e.kind == "reset"]
    accepted = {e.attempt for e in instant if e.kind == "field"} - set(resets)
    assert resets == [0, 1] and accepted == {2}  # the accepted attempt is never reset
    parsed = [e for e in await drain(execution.events()) if e.kind == "output.parsed"]
    # RuntimeEvents count answers: both tool rounds and the answer belong to the first one
    assert parsed[0].payload["attempt"] == 0 and execution.attempts[-1]["attempt"] == 0


async def test_tool_loop_limits_are_typed(keel_runtime: keel.Runtime) -> None:
    keel_runtime.actions.add(look_up)
    keel_runtime.use_model(ScriptedModel([Reply(tool_calls=[tool_call(f"c{i}") for i in range(2_000)])]))
    execution = await ticket_agent(actions=["look_up"]).start("go", runtime=keel_runtime)
    with pytest.raises(keel.ToolLoopLimit, match="more than 32 tool calls") as caught:
        await execution.get_data()
    assert caught.value.limit == "max_tool_calls"
    assert not [e for e in await drain(execution.events()) if e.kind.startswith("action.")]  # none ran

    loop = Reply(tool_calls=[tool_call()])
    keel_runtime.use_model(ScriptedModel([loop, loop, loop]))
    execution = await ticket_agent(actions=["look_up"], max_tool_steps=2).start("go", runtime=keel_runtime)
    with pytest.raises(keel.ToolLoopLimit, match="limit of 2 tool-call rounds") as caught:
        await execution.get_data()
    assert caught.value.limit == "max_tool_steps"


# ------------------------------------------------------------------------ finished footprint


async def test_a_finished_execution_keeps_a_coalesced_stream(keel_runtime: keel.Runtime) -> None:
    answer = json.dumps({"title": "x" * 5_000, "tags": ["a", "b"]})
    keel_runtime.use_model(ScriptedModel([answer], chunks=4))
    execution = await ticket_agent().start("go", runtime=keel_runtime)
    live = execution.instant()  # a reader from the start: every chunk
    seen = await drain(live)
    await execution.get_data()
    assert len([e for e in seen if e.path == "title"]) > 256
    late = await drain(execution.instant())  # after the end: one event per string field
    assert [(e.path, e.is_complete) for e in late if e.path == "title"] == [("title", True)]
    assert [e.delta for e in late if e.path == "title"] == ["x" * 5_000]
    assert [e.path for e in late if e.is_complete] == [e.path for e in seen if e.is_complete]
    events = await drain(execution.events())
    (delta,) = [e for e in events if e.kind == "model.delta"]
    assert delta.payload["text"] == answer and delta.payload["chunks"] > 256
    assert [e.kind for e in await drain(execution.events(since=delta.seq or 0))] == [
        "model.response",
        "output.parsed",
        "execution.completed",
    ]
    assert 5_000 < execution.footprint < 40_000


async def test_a_model_streaming_single_characters_costs_events_per_batch(keel_runtime: keel.Runtime) -> None:
    answer = json.dumps({"title": "y" * 30_000, "tags": ["a"] * 1_000})
    keel_runtime.use_model(ScriptedModel([answer], chunks=1))
    execution = await ticket_agent().start("go", runtime=keel_runtime)
    live_events, live_instant = execution.events(), execution.instant()
    events, instant = await drain(live_events), await drain(live_instant)
    data = await execution.get_data()
    deltas = [e for e in events if e.kind == "model.delta"]
    assert 256 < len(deltas) < 2_000 < len(answer)  # the first 256 one by one, then batches
    assert "".join(e.payload["text"] for e in deltas) == answer
    assert len(instant) < 4_000 and data.title == "y" * 30_000
    assert [e.path for e in instant if e.is_complete][-1] == ""  # the laws hold whatever the batching


async def test_the_registry_is_bounded_by_bytes(keel_runtime: keel.Runtime) -> None:
    answer = json.dumps({"title": "x" * 4_000, "tags": []})
    keel_runtime.use_model(ScriptedModel(lambda r: answer, chunks=64))
    registry = keel_runtime.executions
    registry.keep_finished_bytes = 400_000
    executions = []
    for _ in range(30):
        execution = await ticket_agent().start("go", runtime=keel_runtime)
        await execution.get_data()
        executions.append(execution)
    kept = registry.list()
    assert 3 <= len(kept) < 30 and registry.finished_bytes <= 400_000
    assert kept == executions[-len(kept) :]  # the oldest were forgotten first
    with pytest.raises(keel.NotFoundError):
        registry.get(executions[0].id)


async def test_the_footprint_estimate_is_close_to_the_memory_kept(keel_runtime: keel.Runtime) -> None:
    answer = json.dumps({"title": "x" * 4_000, "tags": ["a"] * 50})
    agent = ticket_agent()
    for chunks in (8, 64, len(answer)):
        keel_runtime.use_model(ScriptedModel(lambda r: answer, chunks=chunks))
        await (await agent.start("go", runtime=keel_runtime)).get_data()  # warm-up: caches of the agent
        kept = []
        tracemalloc.start()
        try:
            for _ in range(20):
                execution = await agent.start("go", runtime=keel_runtime)
                await execution.get_data()
                kept.append(execution)
            used = tracemalloc.get_traced_memory()[0] / 20
        finally:
            tracemalloc.stop()
        estimate = kept[-1].footprint
        assert used / 2 < estimate < used * 2, (chunks, used, estimate)


def test_agent_files_declare_limits_and_the_extra_switch(tmp_path: Any) -> None:
    path = tmp_path / "ticket.toml"
    path.write_text(
        '[agent]\nname = "ticket"\noutput_extra = "ignore"\nmax_tool_calls = 4\n'
        '[agent.output]\ntitle = ["str", "a title"]\n'
        "[agent.limits]\nmax_depth = 12\nmax_chars = 50000\n"
    )
    agent = keel.Agent.from_file(path)
    assert (agent.limits.max_depth, agent.limits.max_chars, agent.limits.max_string_chars) == (12, 50_000, 1_000_000)
    assert agent.max_tool_calls == 4 and agent.contract is not None
    assert agent.contract.check('{"title": "t", "extra": 1}').ok
    path.write_text('[agent]\nname = "ticket"\n[agent.limits]\nmax_dpth = 12\n')
    with pytest.raises(keel.KeelError, match="unknown setting"):
        keel.Agent.from_file(path)
