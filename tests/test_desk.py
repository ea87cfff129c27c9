"""The reference service (examples/desk, what `make demo` runs) end to end, as separate processes
talk to it: a signed webhook into its intake, the real `kb` MCP server and the sandbox, SQLite, the
page in headless Chromium answering the refund approval, the webhook channel's receiver, DevTools'
recording and replay, and doctor. Once on the scripted model with the page, once on the real
local model unattended (no terminal: the walk answers through the page's HTTP route)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import ROOT, clean_env
from test_gateway_browser import FLAGS, ensure_chromium

DESK = ROOT / "examples" / "desk"
STAGES = ["stage 9 ", "stage 1-3", "stage 4 ", "stage 5 ", "stage 7 ", "stage 6 ", "stage 8 ", "stage 10", "stage 11"]


class Running:
    """`python examples/desk ...` with its stdout read line by line in a thread."""

    def __init__(self, state: Path, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, str(DESK), "--state", str(state), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=clean_env(),
        )  # fmt: skip
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float = 180) -> str:
        while True:
            line = self._queue.get(timeout=timeout)
            assert line is not None, f"the desk ended before {prefix!r}:\n" + "\n".join(self.lines)
            if line.startswith(prefix):
                return line

    def finish(self, timeout: float = 180) -> str:
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        output = "\n".join(self.lines)
        assert self.process.returncode == 0, output
        return output


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(timeout=30)


def assert_walked(output: str, approved_by: str) -> dict[str, object]:
    for stage in STAGES:
        assert any(line.startswith(stage) for line in output.splitlines()), f"no {stage!r} line:\n{output}"
    result = json.loads(next(line for line in output.splitlines() if line.startswith("result ")).split(None, 1)[1])
    assert result["refunded"] is True and result["refund_eur"] == 240.0 and result["approved_by"] == approved_by
    assert "intake: 202" in output and "again: 200, the same job" in output  # one delivery, one job
    assert "the scheduled SLA check sent a reminder" in output
    # through the signed webhook channel, each event once, from one sender (the worker that runs the
    # job): the job's start, its wait, the SLA check's reminder, its end
    delivered = "stage 8    the webhook channel delivered (signed, verified by the receiver): "
    assert f"{delivered}task.started, task.waiting, task.progress, task.completed" in output, output
    assert "no divergence" in output
    # doctor on the live runtime: every row passes, `proactive` too: the worker runs in a process of
    # its own, and the gateway follows its flows there
    assert "doctor     15 pass, 0 warn, 0 fail" in output, output
    assert " warn " not in output, output
    assert "action_calls 4/8" in output  # the ticket's budgets: kb lookup, kb search, policy script, refund
    return dict(result)


def worker_pid(output: str) -> int:
    """The desk's worker process, as the desk printed it (``worker:    process N ...``)."""
    line = next(line for line in output.splitlines() if line.startswith("worker:    process "))
    return int(line.split()[2])


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped yet has ended: it is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def assert_gone(pid: int, timeout: float = 60) -> None:
    async def gone() -> None:
        with anyio.fail_after(timeout):  # a worker that outlives the desk fails here
            while is_running(pid):
                await anyio.sleep(0.1)

    anyio.run(gone)


@pytest.mark.parametrize("how", ["ctrl-c", "killed"])
def test_the_worker_process_stops_with_the_desk(tmp_path: Path, running: list[Running], how: str) -> None:
    """Ctrl-C (SIGINT) stops the desk, which stops its worker; a desk killed outright (SIGKILL: no
    code of it runs) closes the worker's stdin by dying, and the worker stops by itself."""
    desk = Running(tmp_path / "state", "--scripted", "--answer", "page")  # it waits for the page: no end
    running.append(desk)
    pid = int(desk.wait_for("worker:    process ").split()[2])
    desk.wait_for("page:")
    assert is_running(pid)
    desk.process.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    desk.process.wait(timeout=60)
    assert_gone(pid)
    if how == "ctrl-c":
        assert desk.process.returncode == 130, "\n".join(desk.lines)


FAILING = """
import sys, anyio
sys.path.insert(0, {desk!r})
from pathlib import Path
from service import open_desk

async def main():
    async with open_desk(Path({state!r}), scripted=True) as desk:
        print("worker:    process", desk.worker_pid, flush=True)
        raise RuntimeError("the walk failed")

anyio.run(main)
"""


def test_the_worker_process_stops_when_the_service_fails(tmp_path: Path) -> None:
    """An error inside ``open_desk`` (the walk failing, say) stops the worker process on the way out."""
    script = FAILING.format(desk=str(DESK), state=str(tmp_path / "state"))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=clean_env(), timeout=300, cwd=tmp_path
    )
    assert done.returncode == 1 and "RuntimeError: the walk failed" in done.stderr, done.stdout + done.stderr
    pid = worker_pid(done.stdout)
    assert not is_running(pid)  # stopped (and reaped) before open_desk returned


def doctor_from_the_command_line(state: Path) -> dict[str, str]:
    """`keel doctor --json` on the stack the desk wrote, as its README runs it: every row's status."""
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "--stack-file", str(state / "keel.toml"), "doctor", "--json"],
        capture_output=True, text=True, cwd=state, env=clean_env(PYTHONPATH=str(DESK)), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout, done.stdout + done.stderr
    rows = json.loads(done.stdout)["rows"]
    statuses = {row["row"]: row["status"] for row in rows}
    assert len(statuses) == 15 and set(statuses.values()) == {"pass"}, json.dumps(rows, indent=1)
    return statuses


def test_doctor_passes_every_row_on_the_desks_stack_from_the_command_line(tmp_path: Path) -> None:
    # the stack alone (nothing started): the approver is the stack's, so the refund can be approved
    sys.path.insert(0, str(DESK))
    try:
        from desk_service import stack_toml
    finally:
        sys.path.remove(str(DESK))
    (tmp_path / "keel.toml").write_text(stack_toml(tmp_path), encoding="utf-8")
    doctor_from_the_command_line(tmp_path)


def test_the_desk_walks_a_ticket_with_its_approval_answered_from_the_page(
    tmp_path: Path, running: list[Running]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = ensure_chromium()
    desk = Running(tmp_path / "state", "--scripted", "--answer", "page")
    running.append(desk)
    url = desk.wait_for("page:").split()[1]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # a loaded 2-core machine; restored below
            page.goto(url)
            # the ticket arrives by webhook; the inbox lists it and the page follows its flow
            expect(page.locator("tr.ticket")).to_have_count(1)
            expect(page.locator("#ticket-id")).to_have_text(page.locator("tr.ticket td").first.inner_text())
            # the classifier's fields (its own execution's task.partial / task.completed)
            expect(page.locator("#field-category")).to_have_text("refund")
            expect(page.locator("#field-summary")).not_to_be_empty()
            # the flow waits for a person: the question comes from task.waiting
            expect(page.locator("#waiting")).to_be_visible()
            expect(page.locator("#waiting-message")).to_contain_text("Refund 240.00 EUR to Ada Lovelace")
            expect(page.locator("#stages li")).not_to_have_count(0)
            # stage 8 and 9 while it waits: what the signed webhook channel's receiver got, on the page
            expect(page.locator("#notifications li", has_text="task.waiting")).to_have_count(1)
            expect(page.locator("#notifications li", has_text="SLA: ticket")).to_have_count(1)
            page.fill("#approver", "Grace (desk lead)")
            page.click("#approve")
            expect(page.locator("#status")).to_have_text("completed")
            expect(page.locator("#result")).to_contain_text('"refunded": true')
            expect(page.locator("#result")).to_contain_text("Grace (desk lead)")
            product = page.evaluate("window.deskLog.map((e) => e.type)")
            assert "task.partial" in product or "task.completed" in product
            assert not any("model." in t or "flow." in t for t in product)  # product events only
        except AssertionError as err:  # say what the service printed meanwhile
            raise AssertionError(f"{err}\n--- the desk printed:\n" + "\n".join(desk.lines)) from None
        finally:
            expect.set_options(timeout=5_000)  # Playwright's default, for the tests after this one
            browser.close()
    output = desk.finish()
    assert_walked(output, "Grace (desk lead)")
    assert_gone(worker_pid(output))  # the desk stopped its worker process on its way out
    for dataset in (
        "evals/desk.yaml: 3 of 3",
        "desk/evals/classifier.yaml: 2 of 2",
        "desk/evals/sla_reminder.yaml: 1 of 1",
    ):
        assert f"eval {dataset} cases pass" in output, output
    assert "waiting for the page's answer" in output
    doctor_from_the_command_line(tmp_path / "state")  # with the eval reports the walk saved


def test_make_demo_walks_a_ticket_on_the_real_local_model(tmp_path: Path, running: list[Running]) -> None:
    # what `make demo` does without a terminal: the embedded local model, the walk answers itself
    desk = Running(tmp_path / "state")
    running.append(desk)
    output = desk.finish(timeout=540)
    assert "model:     local:" in output and "eval evals/desk.yaml: 1 of 1 cases pass" in output
    result = assert_walked(output, "demo script")
    assert result["category"] in ("refund", "bug", "question")
    assert (tmp_path / "state" / "devtools.db").is_file() and (tmp_path / "state" / "keel.toml").is_file()
