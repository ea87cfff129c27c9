"""The writer process: what it guarantees when either side stops, cleanly or not."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
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
