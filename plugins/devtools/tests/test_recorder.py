"""The recorder: every event of every execution, keyed, priced, redacted, bounded, retained."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import FINAL, invoice_agent, lookup_vendor, scripted, tool_reply

import keel
from keel_devtools import PriceTable, Recorder, RecorderSettings, Retention, configure


async def run_invoice(host: keel.PluginHost, **runtime_options: Any) -> keel.Execution:
    async with keel.Runtime(host, keel.Stack(), **runtime_options) as runtime:
        runtime.actions.add(lookup_vendor)
        runtime.use_model(scripted(tool_reply(), FINAL))
        execution = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
        await execution.result()
    return execution


@pytest.mark.parametrize("process", [True, False], ids=["writer-process", "writer-thread"])
async def test_every_event_is_recorded_keyed_by_execution_step_and_sequence(
    host: keel.PluginHost, tmp_path: Path, process: bool
) -> None:
    prices = PriceTable({"scripted": {"input": 2.0, "output": 10.0}})  # the user's table extends the defaults
    recorder = configure(tmp_path / "r.db", prices=prices, process=process)
    try:
        await check_every_event_recorded(host, recorder)
    finally:
        recorder.close()


async def check_every_event_recorded(host: keel.PluginHost, recorder: Recorder) -> None:
    execution = await run_invoice(host)
    assert recorder.flush()
    own = [e async for e in execution.events()]
    rows = recorder.db.events(execution.id)
    assert [r["seq"] for r in rows] == [e.seq for e in own]
    assert [r["kind"] for r in rows] == [e.kind for e in own]
    steps = {r["kind"]: r["step"] for r in rows}
    assert steps["execution.started"] == "execution"
    assert steps["action.completed"] == "model-1/lookup_vendor-1"
    assert steps["output.parsed"] == "model-2/output"
    assert [r["step"] for r in rows if r["kind"] == "model.request"] == ["model-1", "model-2"]
    summary = recorder.db.execution(execution.id)
    assert summary is not None
    assert (summary["kind"], summary["runnable"], summary["status"]) == ("agent", "invoice", "completed")
    assert summary["input"] == "Invoice from Nordlys AS"
    assert summary["output"] == {"vendor": "Nordlys AS", "country": "NO"}
    assert summary["events"] == len(own) and summary["dropped"] == 0
    # tokens from the usage each answer reported, cost from the (extended) price table
    assert summary["input_tokens"] >= 1000 and summary["output_tokens"] >= 20
    expected = (summary["input_tokens"] * 2.0 + summary["output_tokens"] * 10.0) / 1e6
    assert abs(summary["cost"] - expected) < 1e-12
    priced = [r for r in rows if r["kind"] == "model.response"]
    assert abs(sum(r["cost"] for r in priced) - expected) < 1e-12
    # with no redactor of the user's, the writer masks the secret keys (the tool's api_key)
    raw = "\n".join(recorder.db.raw_events(execution.id))
    assert "sk-live-123" not in raw and '"api_key":"***"' in raw
    assert recorder.written == len(own) and recorder.failed == 0


async def test_secrets_are_masked_before_anything_is_written(host: keel.PluginHost, tmp_path: Path) -> None:
    def hide_vendor(event: dict[str, Any]) -> dict[str, Any]:
        text = event["payload"].get("text")
        if isinstance(text, str):
            event["payload"]["text"] = text.replace("Nordlys", "[vendor]")
        return event

    rec = configure(tmp_path / "r.db", redactors=[hide_vendor], redact_keys=["country"])
    try:
        execution = await run_invoice(host)
        assert rec.flush()
        raw = "\n".join(rec.db.raw_events(execution.id))
        assert "sk-live-123" not in raw and '"api_key":"***"' in raw
        assert '"country":"***"' in raw  # a key the user added
        response = next(
            r for r in rec.db.events(execution.id) if r["kind"] == "model.response" and r["event"]["payload"]["text"]
        )
        assert "[vendor]" in response["event"]["payload"]["text"]
        assert "Nordlys" not in response["event"]["payload"]["text"]
    finally:
        rec.close()
    # the file on disk holds no secret either (WAL included)
    for file in tmp_path.iterdir():
        assert b"sk-live-123" not in file.read_bytes()


async def test_a_stuck_writer_never_slows_an_execution_and_every_drop_is_counted(
    host: keel.PluginHost, tmp_path: Path
) -> None:
    gate = threading.Event()

    def stuck(event: dict[str, Any]) -> dict[str, Any]:
        gate.wait(30)  # a disk that does not answer
        return event

    rec = configure(tmp_path / "slow.db", redactors=[stuck], capacity=8, batch=1)
    try:
        executions = []
        async with keel.Runtime(host, keel.Stack()) as runtime:
            runtime.actions.add(lookup_vendor)
            for _ in range(3):
                runtime.use_model(scripted(tool_reply(), FINAL, chunks=2))
                execution = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
                await execution.result()  # completes while the writer is stuck
                executions.append(execution)
        assert rec.dropped > 0
        gate.set()
        assert rec.flush()
        total = await count_events(executions)
        assert rec.written + rec.dropped == total
        shown = sum(rec.db.execution(e.id)["dropped"] for e in executions)  # type: ignore[index]
        assert shown == rec.dropped == rec.db.dropped()
        recorded = sum(rec.db.execution(e.id)["events"] for e in executions)  # type: ignore[index]
        assert recorded + shown == total
    finally:
        gate.set()
        rec.close()


async def count_events(executions: list[keel.Execution]) -> int:
    return sum([len([e async for e in execution.events()]) for execution in executions])


async def record_thousand(host: keel.PluginHost, recorder: Recorder, **runtime_options: Any) -> dict[str, int]:
    executions: list[keel.Execution] = []
    async with keel.Runtime(host, keel.Stack(), **runtime_options) as runtime:
        runtime.use_model(scripted(*([FINAL] * 1000), chunks=4))
        agent = keel.Agent("load", "Extract.", output={"vendor": str, "country": str})
        async with anyio.create_task_group() as group:

            async def one() -> None:
                execution = await agent.start("text", runtime=runtime)
                executions.append(execution)
                await execution.result()

            for _ in range(1000):
                group.start_soon(one)
        bus_dropped = runtime.bus.dropped.get("observers", 0)
    assert recorder.flush(120)
    summaries = [recorder.db.execution(e.id) for e in executions]
    return {
        "total": await count_events(executions),
        "recorded": sum(s["events"] for s in summaries if s),
        "bus_dropped": bus_dropped,
        "recorder_dropped": recorder.dropped,
        "executions": sum(1 for s in summaries if s),
        "missing": sum(s["missing"] for s in summaries if s),
        "completed": sum(1 for s in summaries if s and s["status"] == "completed"),
    }


async def test_a_thousand_concurrent_executions_lose_no_event(host: keel.PluginHost, recorder: Recorder) -> None:
    counts = await record_thousand(host, recorder, buffer=65_536)
    assert counts["bus_dropped"] == counts["recorder_dropped"] == counts["missing"] == 0
    assert counts["recorded"] == counts["total"] and counts["completed"] == 1000


async def test_a_burst_beyond_the_bus_buffer_loses_nothing_the_recorder_is_inline(
    host: keel.PluginHost, recorder: Recorder
) -> None:
    # 1,000 executions at once outran a 256-event dispatcher buffer when the recorder was called by
    # the dispatcher task; as an inline observer (keel.inline_observer) it has each event from publish
    counts = await record_thousand(host, recorder, buffer=256)
    assert counts["bus_dropped"] == 0
    # the recorder counts what its own queue dropped: nothing else is lost
    assert counts["recorded"] + counts["recorder_dropped"] == counts["total"]
    assert counts["missing"] == counts["recorder_dropped"] == 0


async def test_retention_forgets_by_age_then_by_size(host: keel.PluginHost, recorder: Recorder) -> None:
    first = await run_invoice(host)
    second = await run_invoice(host)
    assert recorder.flush()
    db = recorder.db
    size = db.size()
    assert db.purge(max_bytes=size) == 0
    assert db.purge(max_bytes=size - 1) == 1  # the oldest goes first
    assert db.execution(first.id) is None and db.execution(second.id) is not None
    assert db.events(first.id) == []
    assert db.purge(max_age=3600) == 0
    assert db.purge(max_age=3600, now=db.execution(second.id)["started_at"] + 7200) == 1  # type: ignore[index]
    assert db.count() == 0


def test_retention_settings_are_validated(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(keel.KeelError, match="capacity"):
        configure(tmp_path / "x.db", capacity=0)
    settings = RecorderSettings(retention=Retention(max_age_days=1, max_megabytes=None))
    rec = Recorder(tmp_path / "y.db", settings=settings)
    rec.close()


def test_prices_match_by_prefix_and_say_when_a_model_is_unknown() -> None:
    import pytest

    table = PriceTable()
    assert table.cost("gpt-4o-mini-2024-07-18", {"input_tokens": 1_000_000, "output_tokens": 0}) == (0.15, True)
    assert table.cost("mystery-model", {"input_tokens": 10, "output_tokens": 10}) == (0.0, False)
    table.add("mystery-model", {"input": 1, "output": 1})
    assert table.cost("mystery-model", {"input_tokens": 500_000, "output_tokens": 500_000}) == (1.0, True)
    with pytest.raises(keel.KeelError, match="USD per million"):
        table.add("bad", {"input": -1, "output": 0})


def test_prices_changed_after_the_writer_started_are_refused_naming_the_fix(recorder: Recorder) -> None:
    with pytest.raises(keel.KeelError, match=r"prices=PriceTable"):
        recorder.db.prices.add("my-finetune", {"input": 1, "output": 1})


@pytest.mark.parametrize("process", [True, False], ids=["writer-process", "writer-thread"])
def test_a_value_json_cannot_hold_is_recorded_as_its_repr_and_the_rest_of_the_batch_goes_on(
    tmp_path: Path, process: bool
) -> None:
    # the shipper serializes a batch in one pass; one event it cannot serialize sends the whole
    # batch through the per-event path, where that event's odd value is recorded as its repr
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque handle>"

    rec = configure(tmp_path / "r.db", process=process, interval=5)  # one batch: no burst before the flush
    try:
        for seq, value in enumerate([1, Opaque(), 3], start=1):
            rec.observe(
                keel.RuntimeEvent(kind="custom.note", execution_id="exe_odd", seq=seq, payload={"value": value})
            )
        assert rec.flush()
        rows = rec.db.events("exe_odd")
        assert [r["event"]["payload"]["value"] for r in rows] == [1, "<opaque handle>", 3]
        assert rec.written == 3 and rec.failed == 0
    finally:
        rec.close()


async def test_a_runtime_bound_before_configure_records_into_the_recorder_in_force(
    host: keel.PluginHost, tmp_path: Path
) -> None:
    # the bus binds the recorder once per runtime: a configure() after that closes the old one,
    # and what the runtime publishes next goes to the new recorder, nothing dropped or lost
    first = configure(tmp_path / "first.db")
    assert not (tmp_path / "first.db").exists()  # a recorder starts on its first event, not before
    async with keel.Runtime(host, keel.Stack()) as runtime:
        runtime.actions.add(lookup_vendor)
        runtime.use_model(scripted(tool_reply(), FINAL))
        before = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
        await before.result()
        second = configure(tmp_path / "second.db")  # closes `first`, which had the runtime bound
        try:
            runtime.use_model(scripted(tool_reply(), FINAL))
            after = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
            await after.result()
            assert second.flush()
            assert first.closed and first.dropped == 0
            assert second.db.execution(after.id) is not None and second.dropped == 0
            assert second.db.execution(after.id)["events"] == len([e async for e in after.events()])
            assert second.db.execution(before.id) is None
        finally:
            second.close()
    reread = Recorder(tmp_path / "first.db")
    try:
        assert reread.db.execution(before.id) is not None and reread.db.execution(after.id) is None
    finally:
        reread.close()
