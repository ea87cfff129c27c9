"""Issue 23: a client retrying one answer (same request id) while the execution's owner is dead.

Each repeat must not become another inbox entry that the adopting process applies (or stumbles
on) again: the answer is applied once, the history holds one answer record, and the execution
completes. The same request id with another payload is a ConflictError to its caller."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from triggerflow_support import approval, process

from keel import ConflictError, ExecutionStatus
from keel_store_sqlite import SqliteStore
from keel_triggerflow._history import inbox_name, stream_name


async def _dead_owner_waiting(a: Any, flow: Any) -> Any:
    """Start the execution in runtime ``a`` and let its owner 'die' at the wait: no heartbeat,
    no inbox reader, and its lease (short TTL) left un-released."""
    execution = flow.create_execution(a)

    async def no_heartbeat() -> None:
        return None

    execution._journal.heartbeat = no_heartbeat
    execution._journal.start_inbox = lambda: None
    await execution.start("t")
    with anyio.fail_after(10):
        while execution.status is not ExecutionStatus.WAITING:
            await anyio.sleep(0.01)
    return execution


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-after-another", "at-once"])
async def test_repeats_of_one_answer_to_an_orphaned_execution_apply_once(tmp_path: Path, concurrent: bool) -> None:
    db = tmp_path / "flows.db"
    flow = approval()
    flow.lease_ttl = 0.5
    async with process(SqliteStore(str(db)), tmp_path, flow) as a:
        dead = await _dead_owner_waiting(a, flow)
        store_b = SqliteStore(str(db))
        async with process(store_b, tmp_path, flow) as b:
            await b.adopt_executions()  # b serves: it takes the execution over once the lease expires
            found = await b.find_execution(dead.id)
            assert found.status is ExecutionStatus.WAITING

            async def send() -> None:
                await found.signal("approve", "yes", request_id="r1")

            with anyio.fail_after(10):
                if concurrent:
                    async with anyio.create_task_group() as tg:
                        for _ in range(6):
                            tg.start_soon(send)
                else:
                    for _ in range(6):
                        await send()
            with pytest.raises(ConflictError, match="'r1' was already used with another payload"):
                await found.signal("approve", "no", request_id="r1")
            with anyio.fail_after(10):
                assert await found.result() == "yes"
            assert found.status is ExecutionStatus.COMPLETED
            # the repeats after the end are no-ops too, and the conflict is still told
            await found.signal("approve", "yes", request_id="r1")
            with pytest.raises(ConflictError):
                await found.signal("approve", "no", request_id="r1")
            history = [r.data for r in await store_b.read("default", stream_name(dead.id))]
            inbox = [r.data for r in await store_b.read("default", inbox_name(dead.id))]
    kinds = [r["t"] for r in history]
    assert kinds.count("sig") == 1, (history, inbox)
    assert kinds[-1] == "end" and history[-1]["status"] == "completed", history[-1]
    assert len(history) <= 8, kinds  # does not grow per repeat
    assert len(inbox) == 1, inbox  # de-duplicated when written


async def test_a_repeat_another_process_wrote_to_the_inbox_is_applied_once(tmp_path: Path) -> None:
    """Two processes checked the inbox at once and both wrote the answer: the adopter applies the
    request id once and reads past the second copy."""
    db = tmp_path / "flows.db"
    flow = approval()
    flow.lease_ttl = 0.5
    async with process(SqliteStore(str(db)), tmp_path, flow) as a:
        dead = await _dead_owner_waiting(a, flow)
        store_b = SqliteStore(str(db))
        async with process(store_b, tmp_path, flow) as b:
            await b.adopt_executions()
            found = await b.find_execution(dead.id)
            interrupt = found.get_pending_interrupts()[0].id
            copy = {"i": interrupt, "r": "r1", "v": "yes"}
            await store_b.append("default", inbox_name(dead.id), [copy, copy])
            await found.signal("approve", "yes", request_id="r1")  # seen in the inbox: nothing more written
            with anyio.fail_after(10):
                assert await found.result() == "yes"
            history = [r.data for r in await store_b.read("default", stream_name(dead.id))]
            assert len(await store_b.read("default", inbox_name(dead.id))) == 2
            assert found._replay.inbox_after == 2  # read past the repeat: nothing left to adopt for
    kinds = [r["t"] for r in history]
    assert kinds.count("sig") == 1 and kinds[-1] == "end", kinds


async def test_a_direct_answer_and_its_inbox_copy_at_once_apply_once(tmp_path: Path) -> None:
    """The owner applies a caller's answer while the same answer (one request id) arrives through
    its inbox, written earlier by a process that did not own it then: one answer record (the PG
    serve drill saw two when the inbox copy was read while the direct answer's commit awaited)."""
    store = SqliteStore(str(tmp_path / "flows.db"))
    flow = approval()
    async with process(store, tmp_path, flow) as runtime:
        execution = flow.create_execution(runtime)
        await execution.start("t")
        with anyio.fail_after(10):
            while execution.status is not ExecutionStatus.WAITING:
                await anyio.sleep(0.01)
        interrupt = execution.get_pending_interrupts()[0].id
        inbox_copy_arrived = anyio.Event()
        answer, commit = execution.continue_with, execution._journal.commit_answer

        async def continue_with(*args: Any, **kwargs: Any) -> None:
            if kwargs.get("_inbox") is not None:
                inbox_copy_arrived.set()
            await answer(*args, **kwargs)

        async def commit_when_the_copy_arrived(record: Any) -> None:
            await inbox_copy_arrived.wait()  # the direct answer's commit is in flight meanwhile
            await commit(record)

        execution.continue_with = continue_with  # type: ignore[method-assign]
        execution._journal.commit_answer = commit_when_the_copy_arrived  # type: ignore[method-assign]
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(execution.signal, "approve", "yes", request_id="r1"))
                await store.append("default", inbox_name(execution.id), [{"i": interrupt, "r": "r1", "v": "yes"}])
            assert await execution.result() == "yes"
        history = [r.data for r in await store.read("default", stream_name(execution.id))]
    kinds = [r["t"] for r in history]
    assert kinds.count("sig") == 1 and kinds[-1] == "end", history
