"""Docs match the code: the hook reference is generated, and every python block on every page runs."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, clean_env

from keel import hookspecs

PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_hook_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "hookdoc.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_hook_is_in_the_reference() -> None:
    page = (ROOT / "docs" / "hooks.md").read_text()
    for name, fn in vars(hookspecs).items():
        if hasattr(fn, "keel_spec"):
            assert f"## `{name}(" in page, f"{name} is not documented in docs/hooks.md"


async def _exercise(name: str, host: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Use what one hook's example registered, as Keel would."""
    from click.testing import CliRunner

    import keel
    from keel.cli import build_cli

    if name == "keel_models":
        model = host.models()["echo"].spec.factory(keel.ModelConfig(provider="echo"))
        request = keel.ModelRequest(messages=[keel.Message(role="user", content="hi")])
        events = [event async for event in model.stream(request)]
        assert events == [keel.TextDelta(text="hi"), keel.ModelDone()]
    elif name == "keel_stores":
        store = host.stores()["scratch"].spec.factory({})
        await store.put("t", "ns", "k", {"v": 1})
        assert (await store.get("t", "ns", "k")).value == {"v": 1}
    elif name == "keel_environments":
        env = host.environments()["scratch"].spec.factory({})
        await env.start()
        assert (await env.health()).ok and env.status == "ready"
        await env.stop()
        assert not (await env.health()).ok
    elif name == "keel_channels":
        channel = host.channels()["print"].spec.factory({})
        await channel.send(keel.ProductEvent(type="task.started", task_id="t1", execution_id="e1", message="go"))
        assert "[task.started] t1: go" in capsys.readouterr().out
    elif name == "keel_evaluators":
        evaluate = host.evaluators()["exact"].spec.evaluate
        assert evaluate(keel.EvalSample(output=1, expected=1)).passed
        assert not evaluate(keel.EvalSample(output=1, expected=2)).passed
    elif name == "keel_actions":
        assert await keel.invoke_action(host.actions()["word_count"].spec, {"text": "a b c"}) == 3
    elif name == "keel_on_runtime_event":
        event = keel.RuntimeEvent(kind="execution.failed", execution_id="ex_1", payload={"error": "boom"})
        host.pm.hook.keel_on_runtime_event(event=event, runtime=keel.Runtime(host))
        assert "ex_1" in capsys.readouterr().out
    elif name == "keel_check_action":
        decision = host.check_action(keel.ActionCall(action="drop_table"), keel.ActionContext())
        assert decision.verdict == "deny" and decision.policy == "dba"
    elif name == "keel_commands":
        cli = build_cli(host, keel.Stack())
        listed = CliRunner().invoke(cli, ["--help"]).output
        assert re.search(r"report +Print the weekly report\.", listed), "listed from the help it was added with"
        assert CliRunner().invoke(cli, ["hello"]).output == "hello\n"
    elif name == "keel_doctor_checks":
        from keel.doctor import DoctorContext, run_doctor

        (report,) = run_doctor(DoctorContext.from_runtime(keel.Runtime(host)), ["state"])
        (mine,) = [c for c in report.checks if c.name == "acme-store.migrated"]
        assert mine.status == "fail" and report.status == "fail" and "acme-store migrate" in mine.fix
    elif name == "keel_stack_slots":
        rows = {row["slot"]: row for row in keel.Stack().check(host)}
        assert rows["runner"]["status"] == "ok" and rows["runner"]["plugin"] == "acme-flows"
        stack_file = tmp_path / "keel.toml"
        stack_file.write_text('runner = "temporal"\n')
        with pytest.raises(keel.DriverNotFoundError, match="Available: 'local'"):
            keel.load_stack(stack_file).check(host)
    elif name == "keel_model_prices":
        assert keel.Runtime(host).budgets.price_of("acme-large-2") == keel.ModelPrice(input=1.0, output=4.0)
    elif name == "keel_addhooks":
        assert host.pm.hook.my_plugin_formats.has_spec()
    elif name == "keel_find_execution":
        runtime = keel.Runtime(host)
        runtime.use_store(keel.MemoryStore())
        await runtime.store().put("acme", "jobs", "job_1", {"status": "completed", "result": 42})
        found = await runtime.find_execution("job_1", "acme")
        assert found.status is keel.ExecutionStatus.COMPLETED and await found.result() == 42
        assert await runtime.find_execution("job_1", "acme") is found
        with pytest.raises(keel.NotFoundError):
            await runtime.find_execution("job_1", "globex")  # another tenant's: not found
    elif name == "keel_adopt_executions":
        import anyio

        runtime = keel.Runtime(host)
        store = runtime.use_store(keel.MemoryStore())
        await store.put("default", "jobs", "job_1", {"status": "running"})
        async with runtime:
            await runtime.adopt_executions()
            with anyio.fail_after(5):
                while (await store.get("default", "jobs", "job_1")).value["status"] != "completed":
                    await anyio.sleep(0.01)


@pytest.mark.parametrize("name", [n for n, f in vars(hookspecs).items() if hasattr(f, "keel_spec")])
async def test_hook_examples_run(name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Each hook's example runs on its own (it defines everything it uses), registers as a plugin
    with no problem, and does what it shows."""
    from keel.testing import make_host

    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    found = re.search(r"^Example[^\n]*::\n", doc, re.M)
    assert found, f"{name} has no Example:: in its docstring"
    module = types.ModuleType(f"example_{name}")
    exec(compile(inspect.cleandoc(doc[found.end() :]), f"<{name} example>", "exec"), module.__dict__)
    host = make_host(module)
    assert not host.problems, host.problems
    await _exercise(name, host, capsys, tmp_path)


def _run_blocks(page: Path, tmp_path: Path, **env: str) -> None:
    code = "\n\n".join(BLOCK.findall(page.read_text()))
    script = tmp_path / f"{page.stem}.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=clean_env(**env)
    )
    assert result.returncode == 0, f"{page.relative_to(ROOT)}: a python block failed\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("page", [p for p in PAGES if BLOCK.search(p.read_text())], ids=lambda p: p.name)
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    """A page's python blocks run in order, as one script, in an empty folder."""
    _run_blocks(page, tmp_path)


README_PAGES = sorted(
    [ROOT / "kernel" / "README.md", *ROOT.glob("plugins/*/README.md"), *ROOT.glob("contrib/*/README.md")]
)


@pytest.mark.parametrize(
    "readme",
    [p for p in README_PAGES if BLOCK.search(p.read_text())],
    ids=lambda p: str(p.parent.relative_to(ROOT)),
)
def test_readme_python_blocks_run(readme: Path, tmp_path: Path) -> None:
    """A package README's minimal example runs as written, like a docs page's blocks (issue 17),
    with the package's own src on the path (the plugin template is not installed in the workspace).
    Examples that need a server use the machine's own on 127.0.0.1 (NATS on 4222; PostgreSQL
    through KEEL_POSTGRES_DSN, a database of this test's own)."""
    env = {"PYTHONPATH": str(readme.parent / "src")}
    if "KEEL_POSTGRES_DSN" not in readme.read_text():
        _run_blocks(readme, tmp_path, **env)
        return
    from keel.testing.postgres import local_postgres, temporary_database

    with temporary_database(local_postgres()) as dsn:
        _run_blocks(readme, tmp_path, KEEL_POSTGRES_DSN=dsn, **env)


def test_index_links_resolve() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _workspace_distributions() -> set[str]:
    import tomllib

    pyprojects = [
        ROOT / "kernel" / "pyproject.toml",
        *ROOT.glob("plugins/*/pyproject.toml"),
        *ROOT.glob("contrib/*/pyproject.toml"),
    ]
    return {tomllib.loads(p.read_text())["project"]["name"] for p in pyprojects}


INSTALL_LINE = re.compile(r"(?:pip install|uv pip install|uv add)\s+([^`\n]*)")


def test_install_lines_name_real_packages() -> None:
    """Every keel-* distribution an install line names (README, docs, package READMEs) is in the workspace."""
    known = _workspace_distributions()
    pages = [ROOT / "README.md", *PAGES, *ROOT.glob("plugins/*/README.md"), *ROOT.glob("contrib/*/README.md")]
    named = 0
    for page in pages:
        for line in INSTALL_LINE.findall(page.read_text()):
            for name in re.findall(r"(?<![\w/.-])(keel-[a-z0-9-]+)", line):
                named += 1
                assert name in known, (
                    f"{page.relative_to(ROOT)}: `{line.strip()}` names {name}, which no package here is"
                )
    assert named > 5, "the install lines were not found: has the pattern gone stale?"
