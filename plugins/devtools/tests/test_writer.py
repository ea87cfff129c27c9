"""The writer process: what it guarantees when either side stops, cleanly or not."""

from __future__ import annotations

import gc
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from conftest import FINAL, invoice_agent, lookup_vendor, scripted, tool_reply

import keel
from keel_devtools import RecordingDB, configure

SCRIPT = """
import os, sys, time, anyio, keel
from keel.testing import make_host
sys.path.insert(0, {tests!r})
from conftest import FINAL, invoice_agent, lookup_vendor, scripted, tool_reply
import keel_devtools
from keel_devtools import plugin

rec = keel_devtools.configure({db!r})

async def main():
    async with keel.Runtime(make_host(plugin), keel.Stack()) as runtime:
        runtime.actions.add(lookup_vendor)
        runtime.use_model(scripted(tool_reply(), FINAL))
        execution = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
        await execution.result()
        print(execution.id, len([e async for e in execution.events()]), flush=True)

anyio.run(main)
if {crash!r}:
    deadline = time.monotonic() + 30
    while (rec._queue or rec._shipping) and time.monotonic() < deadline:  # shipped, not confirmed
        rec._wake.set()
        time.sleep(0.01)
    os._exit(3)  # no atexit, no flush: what the writer process already has is all there is
"""


def run_script(tmp_path: Path, *, crash: bool) -> tuple[Path, str, int, int]:
    db = tmp_path / "rec.db"
    code = textwrap.dedent(SCRIPT).format(tests=str(Path(__file__).parent), db=str(db), crash=crash)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    execution_id, count = done.stdout.split()
    return db, execution_id, int(count), done.returncode


async def wait_for_events(db: Path, execution_id: str, count: int) -> dict:
    """The writer process finishes on its own after its input ends: wait for it (bounded)."""
    with anyio.fail_after(30):
        while True:
            if db.exists():
                summary = RecordingDB(db).execution(execution_id)
                if summary is not None and summary["events"] == count:
                    return summary
            await anyio.sleep(0.05)


async def test_a_clean_exit_writes_everything_without_a_close_call(tmp_path: Path) -> None:
    db, execution_id, count, code = run_script(tmp_path, crash=False)
    assert code == 0
    summary = RecordingDB(db).execution(execution_id)  # atexit flushed: written before the exit
    assert summary is not None and summary["events"] == count and summary["status"] == "completed"


async def test_what_was_shipped_is_written_when_the_executions_process_dies(tmp_path: Path) -> None:
    db, execution_id, count, code = run_script(tmp_path, crash=True)
    assert code == 3
    summary = await wait_for_events(db, execution_id, count)
    assert summary["status"] == "completed"


async def test_a_dead_writer_process_is_replaced_by_a_thread_and_its_loss_counted(tmp_path: Path) -> None:
    from keel.testing import make_host
    from keel_devtools import plugin

    rec = configure(tmp_path / "r.db")
    try:
        host = make_host(plugin)
        ids = []
        for kill in (False, True):
            if kill:
                rec._channel._proc.kill()  # type: ignore[attr-defined]
                rec._channel._proc.wait()  # type: ignore[attr-defined]
            async with keel.Runtime(host, keel.Stack()) as runtime:
                runtime.actions.add(lookup_vendor)
                runtime.use_model(scripted(tool_reply(), FINAL))
                execution = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
                await execution.result()
                ids.append((execution.id, len([e async for e in execution.events()])))
            assert rec.flush()
        assert rec._channel.cpu is None  # the thread writer took over
        # the first execution was confirmed before the kill; the second batch hit the dead pipe
        # and was counted as lost, or went to the thread: either way nothing vanished uncounted
        first, second = (rec.db.execution(i) for i, _ in ids)
        assert first is not None and first["events"] == ids[0][1]
        recorded_second = second["events"] if second else 0
        assert rec.written + rec.failed == rec.observed
        assert recorded_second + rec.failed == ids[1][1]
    finally:
        rec.close()


def test_the_writer_process_ends_with_its_input(tmp_path: Path) -> None:
    rec = configure(tmp_path / "r.db")
    assert rec._channel is None and not (tmp_path / "r.db").exists()  # nothing starts before an event
    rec.observe(keel.RuntimeEvent(kind="a", execution_id="exe_w", seq=1))
    proc = rec._channel._proc  # type: ignore[union-attr]
    rec.close()
    assert proc.poll() == 0  # ended with its input, not left behind


def test_the_writer_process_collects_garbage_itself_at_a_bounded_cadence(tmp_path: Path) -> None:
    # serve() in the writer process turns the automatic collector off (what it builds is acyclic:
    # reference counting frees it) and runs a full collection every `collect_every` events
    # handled, so garbage stays bounded by the work done; none of it outlives serve()
    from keel_devtools import packing, writer

    keel.RuntimeEvent.model_rebuild()
    to_json = keel.RuntimeEvent.__pydantic_serializer__.to_json
    events = [keel.RuntimeEvent(kind="model.delta", execution_id="exe_g", seq=i + 1, payload={"text": str(i)})
              for i in range(40)]  # fmt: skip
    pipe = io.BytesIO()
    pipe.write(writer.write_config(writer.SinkConfig(path=str(tmp_path / "g.db"), keys=[])))
    for start in range(0, 40, 10):
        data, _ = packing.encode(events[start : start + 10], to_json)
        pipe.write(b"M%d\n" % len(data) + data + b"E\n")
    full: list[bool] = []  # each full collection: whether the automatic collector was on

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(gc.isenabled())

    gc.callbacks.append(seen)
    try:
        writer.serve(io.BytesIO(pipe.getvalue()), io.BytesIO(), collect_every=15)
    finally:
        gc.callbacks.remove(seen)
    # each batch counts its 10 events and its end: 11, 22 (collect), 11, 22 (collect)
    assert full.count(False) == 2 and full[-2:] == [False, False]
    assert gc.isenabled() and gc.get_freeze_count() == 0  # the process's collector as it was
    summary = RecordingDB(tmp_path / "g.db").execution("exe_g")
    assert summary is not None and summary["events"] == 40


@pytest.mark.parametrize("process", [True, False], ids=["writer-process", "writer-thread"])
def test_recording_leaves_the_executions_process_collector_alone(tmp_path: Path, process: bool) -> None:
    rec = configure(tmp_path / "r.db", process=process)
    try:
        rec.observe(keel.RuntimeEvent(kind="a", execution_id="exe_c", seq=1))
        assert rec.flush() and rec.written == 1
        assert gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        rec.close()


def test_a_batch_that_cannot_be_read_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    # an orjson.Fragment of bad JSON in a payload is written raw into the batch (packing.py): the
    # writer process must not die of it, and the batch's events are counted as failed
    from keel_devtools import packing
    from keel_devtools.writer import SinkConfig, serve, write_config

    good = [keel.RuntimeEvent(kind="a", execution_id="exe_g", seq=i) for i in (1, 2)]
    data, count = packing.encode(good, lambda e: None)
    broken = b"[" + b"]]" + b"]"
    stream = io.BytesIO(
        write_config(SinkConfig(path=str(tmp_path / "w.db"), keys=[]))
        + b"M%d 7\n" % len(broken) + broken + b"E\n"
        + b"M%d %d\n" % (len(data), count) + data + b"E\nF1\n"
    )  # fmt: skip
    answers = io.BytesIO()
    serve(stream, answers)
    token, written, failed, _cpu = answers.getvalue().decode().split()
    assert (token, written, failed) == ("A1", "2", "7")
    db = RecordingDB(tmp_path / "w.db")
    try:
        assert db.execution("exe_g")["events"] == 2
    finally:
        db.close()


def test_a_bad_fragment_costs_its_batch_not_the_writer_process(tmp_path: Path) -> None:
    import orjson

    rec = configure(tmp_path / "r.db")
    try:
        rec.observe(keel.RuntimeEvent(kind="odd", execution_id="exe_f", seq=1, payload={"raw": orjson.Fragment(b"]]")}))
        assert rec.flush() and rec.failed == 1 and rec.written == 0
        rec.observe(keel.RuntimeEvent(kind="fine", execution_id="exe_f", seq=2))
        assert rec.flush() and rec.written == 1 and rec.failed == 1
        assert rec._channel.cpu is not None  # type: ignore[union-attr]  # still the writer process, not a thread
    finally:
        rec.close()
