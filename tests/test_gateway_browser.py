"""The example page in headless Chromium (Debian's, driven by Playwright): start a task, see its
progress and partial fields live, answer the waiting state, see the final state."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def ensure_chromium() -> str:
    """Debian's chromium, installed by the suite itself when missing (bounded in time)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing and cannot be installed here: run `apt-get install -y chromium` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    result = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
    if result.returncode != 0:  # stale package lists: refresh once, then retry
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=300, env=env)
        result = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0 and os.path.exists(CHROMIUM), result.stderr[-3000:]
    return CHROMIUM


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("gateway_app", ROOT / "examples" / "gateway_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    from keel_gateway.testing import serve

    example = load_example()
    with serve(example.build_app(delay=0.03)) as url:
        yield url


def test_the_example_page_runs_a_task_end_to_end(page_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{page_url}/ui/")
            page.fill("#topic", "sea otters")
            page.click("#start")
            # partial fields appear while the answer streams, before the task waits or completes
            expect(page.locator("#field-title")).not_to_be_empty()
            expect(page.locator("#waiting")).to_be_visible()
            expect(page.locator("#waiting-message")).to_have_text("Publish this brief?")
            expect(page.locator("#progress-message")).to_have_text("draft ready")
            page.fill("#note", "ship it")
            page.click("#approve")
            expect(page.locator("#status")).to_have_text("completed")
            expect(page.locator("#waiting")).to_be_hidden()
            log = page.evaluate("window.keelLog")
            page.screenshot(path=str(tmp_path / "example.png"))
        finally:
            browser.close()
    types = [e["type"] for e in log]
    assert types[0] == "task.started" and types[-1] == "task.completed"
    titles = [e["data"]["value"] for e in log if e["type"] == "task.partial" and e["data"].get("field") == "title"]
    assert len(titles) > 2 and titles[-1] == "All about sea otters", "the title was seen growing, live"
    assert types.index("task.waiting") < len(types) - 1
    final = log[-1]["data"]
    assert final["approved"] is True and final["note"] == "ship it"
    assert final["brief"]["title"] == "All about sea otters"
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))


def test_the_built_in_console_drives_any_runnable(tmp_path: Path) -> None:
    """The console page keel-gateway ships (no static_dir): pick a runnable, start it with JSON, see
    its live fields, answer its wait with JSON, see the result."""
    from playwright.sync_api import expect, sync_playwright

    from keel_gateway.testing import serve

    executable = ensure_chromium()
    with serve(load_example().build_app(delay=0.03, page=False)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{url}/ui/")
            expect(page.locator("#runnable option")).to_have_count(2)
            page.select_option("#runnable", "review")
            expect(page.locator("#input")).to_have_value('{\n  "topic": ""\n}')
            page.fill("#input", '{"topic": "kelp"}')
            page.click("#start")
            expect(page.locator('dd[data-field="title"]')).to_have_text("All about kelp")
            expect(page.locator("#waiting")).to_be_visible()
            page.fill("#answer", "{not json")
            page.click("#send")
            expect(page.locator("#error")).to_contain_text("not JSON")
            page.fill("#answer", '{"approved": true, "note": "fine"}')
            page.click("#send")
            expect(page.locator("#status")).to_have_text("completed")
            log = page.evaluate("window.keelLog")
            page.screenshot(path=str(tmp_path / "console.png"))
        finally:
            browser.close()
    assert log[-1]["type"] == "task.completed" and log[-1]["data"]["note"] == "fine"
