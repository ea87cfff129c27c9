"""The DevTools UI in headless Chromium (Debian's, driven by Playwright): list, filter, open an
execution, inspect an event, compare two executions, follow a running one live. Screenshots are
kept in tests/artifacts/devtools/ (ignored by git)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio
from conftest import ROOT
from test_gateway_browser import FLAGS, ensure_chromium

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel_devtools import PriceTable, configure, plugin
from keel_devtools.web import serve

ARTIFACTS = ROOT / "tests" / "artifacts" / "devtools"
ANSWER = json.dumps({"vendor": "Nordlys AS", "country": "NO"})


@keel.action(risk="read")
def lookup_vendor(name: str) -> dict[str, str]:
    """Find a vendor's registered country."""
    return {"name": name, "country": "NO"}


def agent() -> keel.Agent:
    return keel.Agent("invoice", "Extract the vendor and its country.", output={"vendor": str, "country": str},
                      actions=["lookup_vendor"])  # fmt: skip


def tool_call() -> Reply:
    call = keel.ToolCall(id="c1", name="lookup_vendor", arguments={"name": "Nordlys AS"})
    return Reply(tool_calls=[call], usage=keel.Usage(input_tokens=120, output_tokens=8))


async def record(texts: list[str]) -> list[str]:
    ids = []
    async with keel.Runtime(make_host(plugin), keel.Stack()) as runtime:
        runtime.actions.add(lookup_vendor)
        for text in texts:
            runtime.use_model(ScriptedModel([tool_call(), ANSWER], chunks=5))
            execution = await agent().start(text, runtime=runtime)
            await execution.result()
            ids.append(execution.id)
    return ids


def test_the_devtools_ui_lists_opens_compares_and_follows_live(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    recorder = configure(tmp_path / "devtools.db", prices=PriceTable({"scripted": {"input": 3.0, "output": 15.0}}))
    first, second = anyio.run(record, ["Invoice from Nordlys AS", "Faktura fra Nordlys AS, Tromsø"])
    assert recorder.flush()
    gate = threading.Event()
    live: dict[str, Any] = {}

    async def held(request: keel.ModelRequest) -> str:
        await anyio.to_thread.run_sync(gate.wait, 60)
        return ANSWER

    async def running() -> None:
        async with keel.Runtime(make_host(plugin), keel.Stack()) as runtime:
            runtime.use_model(ScriptedModel(held, chunks=3))
            execution = await agent().start("Invoice, slowly", runtime=runtime)
            live["id"] = execution.id
            await execution.result()

    worker = threading.Thread(target=anyio.run, args=(running,), daemon=True)
    executable = ensure_chromium()
    try:
        with serve(recorder.db.path) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.set_default_timeout(30_000)
                external: list[str] = []
                page.on("request", lambda r: None if r.url.startswith(url) else external.append(r.url))
                # the list, then filtered
                page.goto(url + "/")
                expect(page.locator("#total")).to_have_text("2")
                expect(page.locator(f"tr[data-id='{first}']")).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / "list.png"), full_page=True)
                page.select_option("#f-status", "failed")
                page.click("#apply")
                expect(page.locator("#total")).to_have_text("0")
                page.goto(url + "/")
                # an execution: timeline, steps, tokens and cost, the event inspector
                page.click(f"a[href='/executions/{first}']")
                expect(page.locator("#status")).to_have_text("completed")
                expect(page.locator("#waterfall .bar.model")).to_have_count(2)
                expect(page.locator("#waterfall .bar.action")).to_have_count(1)
                expect(page.locator("#steps")).to_contain_text("lookup_vendor-1")
                expect(page.locator("#cost")).not_to_have_text("$0.000000")
                page.click("#events tr[data-seq='2']")
                expect(page.locator("#inspector")).to_contain_text('"kind": "model.request"')
                expect(page.locator("#inspector")).to_contain_text("Invoice from Nordlys AS")
                page.screenshot(path=str(ARTIFACTS / "execution.png"), full_page=True)
                # compare the two: aligned by step, the first divergence highlighted
                page.goto(url + "/")
                page.check(f".pick[value='{first}']")
                page.check(f".pick[value='{second}']")
                page.click("#compare")
                expect(page.locator("#divergence-step")).to_have_text("model-1")
                expect(page.locator("tr#step-first")).to_be_visible()
                expect(page.locator("tr#step-first .diff")).to_contain_text("Tromsø")
                page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
                # live follow: open a running execution, let it finish, watch the page catch up
                worker.start()
                with anyio.from_thread.start_blocking_portal() as portal:
                    portal.call(_wait_for_running, recorder, live)
                page.goto(f"{url}/executions/{live['id']}")
                expect(page.locator("#status")).to_have_text("running")
                before = page.locator("#events tbody tr").count()
                page.screenshot(path=str(ARTIFACTS / "live-running.png"), full_page=True)
                gate.set()
                expect(page.locator("#status")).to_have_text("completed")
                expect(page.locator("#output")).to_contain_text("Nordlys AS")
                assert page.locator("#events tbody tr").count() > before
                page.screenshot(path=str(ARTIFACTS / "live-completed.png"), full_page=True)
                assert external == []  # no external assets, no telemetry
            finally:
                browser.close()
    finally:
        gate.set()
        worker.join(30) if worker.is_alive() else None
        recorder.close()


async def _wait_for_running(recorder: Any, live: dict[str, Any]) -> None:
    with anyio.fail_after(30):
        while True:
            if "id" in live:
                recorder.flush()
                summary = recorder.db.execution(live["id"])
                if summary is not None and summary["status"] == "running":
                    return
            await anyio.sleep(0.05)


async def record_flows() -> list[str]:
    """Two runs of one flow with a condition: one takes the 'big' branch, the other the else."""
    from keel_triggerflow import TriggerFlow
    from keel_triggerflow import plugin as triggerflow_plugin

    def measure(ctx: Any) -> int:
        return int(ctx.value)

    def approve(ctx: Any) -> str:
        return "needs approval"

    def accept(ctx: Any) -> str:
        return "accepted"

    def is_big(value: Any) -> bool:
        return int(value) > 100

    flow = TriggerFlow("refund")
    flow.to(measure).if_condition(is_big).to(approve).else_condition().to(accept).end_condition()
    ids = []
    async with keel.Runtime(make_host(plugin, triggerflow_plugin), keel.Stack()) as runtime:
        for amount in (500, 20):
            execution = flow.create_execution(runtime)
            assert (await execution.run(amount)).status == "completed"
            ids.append(execution.id)
    return ids


def test_a_flow_execution_shows_its_drawing_with_the_path_taken(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    recorder = configure(tmp_path / "flows.db")
    big, small = anyio.run(record_flows)
    assert recorder.flush()
    executable = ensure_chromium()
    try:
        with serve(recorder.db.path) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.set_default_timeout(30_000)
                for execution_id, taken, not_taken in ((big, "approve", "accept"), (small, "accept", "approve")):
                    page.goto(f"{url}/executions/{execution_id}")
                    drawing = page.locator("#flow-drawing")
                    expect(drawing).to_be_visible()
                    expect(drawing.locator("g.node.ran", has_text="measure")).to_have_count(1)
                    expect(drawing.locator("g.node.ran", has_text=taken)).to_have_count(1)
                    expect(drawing.locator("g.node.not-taken", has_text=not_taken)).to_have_count(1)
                    expect(drawing.locator("g.node.passed", has_text="done")).to_have_count(1)
                    page.screenshot(path=str(ARTIFACTS / f"flow-{taken}.png"), full_page=True)
            finally:
                browser.close()
    finally:
        recorder.close()
