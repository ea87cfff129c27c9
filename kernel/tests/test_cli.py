"""The keel command, run as a user runs it: a subprocess, with plugins installed on its path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BROKEN_PLUGIN, GOOD_PLUGIN

DUPLICATE = GOOD_PLUGIN  # registers model "echo" too

COMMANDS_PLUGIN = """
import click
import keel

@keel.hookimpl
def keel_commands(cli):
    @cli.command()
    @click.argument("name")
    def greet(name):
        "Greet someone."
        click.echo(f"hello {name}")
"""


def keel_cli(site: Path | None, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    if site is not None:
        clean["PYTHONPATH"] = str(site)
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args], capture_output=True, text=True, cwd=cwd, env=clean, timeout=60
    )


@pytest.fixture
def site(fake_site: Callable[..., Path]) -> Path:
    return fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})


def test_plugins_json_lists_installed_plugins(site: Path, tmp_path: Path) -> None:
    result = keel_cli(site, "plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["echo"]["status"] == "loaded"
    assert plugins["echo"]["distribution"] == "keel-echo"
    assert plugins["echo"]["registered"] == {"model": ["echo"]}
    assert plugins["keel.builtins"]["registered"] == {"model": ["scripted"], "store": ["memory"]}


def test_load_plugins_empty_lists_none(site: Path, tmp_path: Path) -> None:
    result = keel_cli(site, "plugins", "--json", cwd=tmp_path, KEEL_LOAD_PLUGINS="")
    loaded = [p["name"] for p in json.loads(result.stdout) if p["status"] == "loaded"]
    assert loaded == []


def test_broken_plugin_warns_then_strict_exits_nonzero(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    site = fake_site(
        "keel-broken", entry_points={"keel": {"broken": "keel_broken"}}, modules={"keel_broken": BROKEN_PLUGIN}
    )
    relaxed = keel_cli(site, "plugins", cwd=tmp_path)
    assert relaxed.returncode == 0
    assert "plugin 'broken'" in relaxed.stderr and "boom: missing native library" in relaxed.stderr
    assert "keel-broken" in relaxed.stderr
    strict = keel_cli(site, "plugins", cwd=tmp_path, KEEL_STRICT_PLUGINS="1")
    assert strict.returncode == 1, "strict: listed, then an error"
    assert "plugin 'broken'" in strict.stdout and "boom" in strict.stdout
    assert "Traceback" not in strict.stderr
    used = keel_cli(site, "stack", cwd=tmp_path, KEEL_STRICT_PLUGINS="1")
    assert used.returncode == 1 and "plugin 'broken'" in used.stderr and "Traceback" not in used.stderr


def test_duplicate_model_names_are_listed_then_fail_where_used(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    site = fake_site("keel-echo2", entry_points={"keel": {"echo2": "keel_echo2"}}, modules={"keel_echo2": DUPLICATE})
    listed = keel_cli(site, "plugins", cwd=tmp_path)
    assert listed.returncode == 0, "the diagnostic command must show what to uninstall"
    problem = listed.stdout.split("problem:")[-1]
    assert "model name 'echo' is registered twice" in problem
    assert "distribution keel-echo)" in problem and "distribution keel-echo2)" in problem
    (tmp_path / "keel.toml").write_text('model = "echo"\n')
    used = keel_cli(site, "stack", cwd=tmp_path)
    assert used.returncode == 1 and "registered twice" in used.stderr and "keel-echo2" in used.stderr
    strict = keel_cli(site, "plugins", cwd=tmp_path, KEEL_STRICT_PLUGINS="1")
    assert strict.returncode == 1 and "registered twice" in strict.stdout, "strict: listed, then an error"


def test_unknown_store_prints_available_and_fails(site: Path, tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('store = "casandra"\n')
    result = keel_cli(site, "stack", cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown store 'casandra'" in result.stderr and "Available: 'memory'" in result.stderr


def test_stack_json_shows_sources(site: Path, tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('model = "echo"\n')
    result = keel_cli(site, "stack", "--json", cwd=tmp_path, KEEL_LOAD_PLUGINS="echo")
    assert result.returncode == 0, result.stderr
    slots = {row["slot"]: row for row in json.loads(result.stdout)["slots"]}
    assert slots["model"]["plugin"] == "echo" and slots["model"]["source"].endswith("keel.toml")
    assert slots["store"]["source"] == "built-in fallback"


def test_named_stack_option(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    site = fake_site(
        "acme",
        entry_points={"keel.stacks": {"prod": "acme_stack:prod"}},
        modules={"acme_stack": 'prod = {"store": "nope"}'},
    )
    result = keel_cli(site, "--stack", "prod", "stack", cwd=tmp_path)
    assert result.returncode == 1 and "stack:prod" in result.stderr
    result = keel_cli(site, "stack", cwd=tmp_path, KEEL_STACK="missing")
    assert result.returncode == 1 and "Available: prod" in result.stderr


def test_plugins_add_subcommands(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    site = fake_site(
        "keel-greet", entry_points={"keel": {"greet": "keel_greet"}}, modules={"keel_greet": COMMANDS_PLUGIN}
    )
    result = keel_cli(site, "greet", "Ada", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello Ada"
    assert "greet" in keel_cli(site, "--help", cwd=tmp_path).stdout


def test_version_and_usage_errors(tmp_path: Path) -> None:
    assert keel_cli(None, "version", cwd=tmp_path).stdout.startswith("keel-kernel ")
    bad = keel_cli(None, "no-such-command", cwd=tmp_path)
    assert bad.returncode == 2 and "No such command" in bad.stderr


ENV_PLUGIN = """
import sys, anyio, keel

class Proc:
    def __init__(self, options):
        self.name = "proc"
        self.code = options["code"]
        self.process = None
        self._status = "stopped"

    @property
    def status(self):
        return self._status

    async def start(self):
        self.process = await anyio.open_process([sys.executable, "-c", self.code])
        self._status = "ready"

    async def stop(self):
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
        self._status = "stopped"

    async def health(self):
        return keel.Health(ok=self.process.returncode is None)

@keel.hookimpl
def keel_environments():
    yield keel.EnvironmentSpec(name="process", kind="process", factory=Proc)
"""


def processes_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_env_status_json_and_nothing_left_running(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    site = fake_site("keel-proc", entry_points={"keel": {"proc": "keel_proc"}}, modules={"keel_proc": ENV_PLUGIN})
    marker = f"keel-env-marker-{tmp_path.name}"
    (tmp_path / "keel.toml").write_text(
        f'[environments.worker]\ndriver = "process"\nstart = "eager"\ncode = "import time; time.sleep(600)  # {marker}"\n'
        '[environments.later]\ndriver = "process"\ncode = "pass"\n'
    )
    listed = keel_cli(site, "env", "list", "--json", cwd=tmp_path)
    assert [r["status"] for r in json.loads(listed.stdout)] == ["stopped", "stopped"]
    result = keel_cli(site, "env", "status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["worker"]["status"] == "ready" and rows["worker"]["last_health"]["ok"] is True
    assert rows["worker"]["restarts"] == 0
    assert rows["later"]["status"] == "stopped" and rows["later"]["last_health"] is None
    assert processes_with(marker) == [], "an environment process outlived the command"


ACTIONS_PLUGIN = """
import keel

@keel.action(risk="irreversible", tags=["ops"], visible_to=["ops-bot"])
def restart_service(name: str) -> str:
    "Restart a service."
    return name

@keel.action
def ping() -> str:
    "Answer pong."
    return "pong"

@keel.hookimpl
def keel_actions():
    yield restart_service
    yield ping
"""


def test_actions_lists_scope_risk_and_source(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    site = fake_site("keel-ops", entry_points={"keel": {"ops": "keel_ops"}}, modules={"keel_ops": ACTIONS_PLUGIN})
    result = keel_cli(site, "actions", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["restart_service"]["risk"] == "irreversible"
    assert rows["restart_service"]["scope"] == ["ops-bot"] and rows["restart_service"]["source"] == "ops"
    assert rows["ping"]["scope"] == "every agent" and rows["ping"]["parameters"]["type"] == "object"
    as_other = json.loads(keel_cli(site, "actions", "--json", "--agent", "assistant", cwd=tmp_path).stdout)
    assert [r["name"] for r in as_other] == ["ping"], "an agent outside the scope does not see the action"


def test_env_stop_ends_a_held_environment(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    site = fake_site("keel-proc", entry_points={"keel": {"proc": "keel_proc"}}, modules={"keel_proc": ENV_PLUGIN})
    marker = f"keel-held-marker-{tmp_path.name}"
    (tmp_path / "keel.toml").write_text(
        f'[environments.worker]\ndriver = "process"\ncode = "import time; time.sleep(600)  # {marker}"\n'
    )
    nothing = keel_cli(site, "env", "stop", "worker", cwd=tmp_path)
    assert nothing.returncode == 1 and "not held by a running `keel env start worker --hold`" in nothing.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["PYTHONPATH"] = str(site)
    holder = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "env", "start", "worker", "--hold"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pidfile = tmp_path / ".keel" / "env" / "worker.pid"
        deadline = time.monotonic() + 60
        while not pidfile.exists() and time.monotonic() < deadline and holder.poll() is None:
            time.sleep(0.05)
        assert pidfile.exists(), holder.stderr.read() if holder.poll() is not None else "no pidfile"
        assert processes_with(marker), "the held environment is running"
        stopped = keel_cli(site, "env", "stop", "worker", cwd=tmp_path)
        assert stopped.returncode == 0 and "worker: stopped" in stopped.stdout, stopped.stderr
        assert holder.wait(timeout=30) is not None
        assert processes_with(marker) == [] and not pidfile.exists()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_stacks_lists_named_stacks_with_their_problems(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    fake_site("acme-stacks", entry_points={"keel.stacks": {"prod": "acme_a:prod", "dev": "acme_a:dev"}},
              modules={"acme_a": 'prod = {"store": "memory"}\ndev = {"extends": "prod"}'})  # fmt: skip
    fake_site("other-stacks", entry_points={"keel.stacks": {"prod": "other_b:prod"}}, modules={"other_b": "prod = {}"})
    site = fake_site("bad-stacks", entry_points={"keel.stacks": {"broken": "bad_c:broken"}}, modules={"bad_c": "1/0"})
    result = keel_cli(site, "stacks", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {(r["name"], r["distribution"]): r for r in json.loads(result.stdout)}
    assert rows["dev", "acme-stacks"]["status"] == "ok" and rows["dev", "acme-stacks"]["extends"] == "prod"
    assert rows["prod", "acme-stacks"]["status"] == rows["prod", "other-stacks"]["status"] == "conflict"
    assert "other-stacks ships a stack of the same name" in rows["prod", "acme-stacks"]["error"]
    assert rows["broken", "bad-stacks"]["status"] == "failed"
    assert "ZeroDivisionError" in rows["broken", "bad-stacks"]["error"]
    assert keel_cli(site, "stacks", cwd=tmp_path, KEEL_STRICT_PLUGINS="1").returncode == 1
    chosen = keel_cli(site, "--stack", "broken", "plugins", cwd=tmp_path)
    assert chosen.returncode == 0 and "from distribution bad-stacks" in chosen.stdout, "keel plugins always lists"
    used = keel_cli(site, "--stack", "prod", "stack", cwd=tmp_path)
    assert used.returncode == 1 and "shipped twice" in used.stderr


def test_stack_names_the_file_and_key_of_an_unknown_store_option(site: Path, tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('[store]\ndriver = "memory"\npaht = "x"\n')
    result = keel_cli(site, "stack", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "keel.toml: [store] of store 'memory': invalid options (paht: Extra inputs" in result.stderr


LAZY_PLUGIN = """
import keel

@keel.hookimpl
def keel_commands(cli):
    cli.add_lazy_command("report", "keel_lazy_cli:report", help="Print the weekly report.")
    cli.add_lazy_command("gone", "keel_lazy_missing:gone", help="Imports a module that is not installed.")
"""

LAZY_CLI = """
import click
print("IMPORTED keel_lazy_cli")

@click.command()
def report():
    "Print the weekly report (long help)."
    click.echo("report: 3 runs")
"""


def test_lazy_commands_import_only_when_they_run(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    site = fake_site(
        "keel-lazy",
        entry_points={"keel": {"lazy": "keel_lazy"}},
        modules={"keel_lazy": LAZY_PLUGIN, "keel_lazy_cli": LAZY_CLI},
    )
    listed = keel_cli(site, "--help", cwd=tmp_path)
    assert "report" in listed.stdout and "Print the weekly report." in listed.stdout
    assert "IMPORTED" not in listed.stdout, "listing a lazy command must not import it"
    assert "IMPORTED" not in keel_cli(site, "plugins", cwd=tmp_path).stdout
    ran = keel_cli(site, "report", cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout.splitlines() == ["IMPORTED keel_lazy_cli", "report: 3 runs"]
    broken = keel_cli(site, "gone", cwd=tmp_path)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "command 'gone' of plugin 'lazy' 'keel_lazy_missing:gone' could not be loaded" in broken.stderr


def test_import_keel_builds_no_pydantic_model(tmp_path: Path) -> None:
    # every kernel model is defer_build=True and no class body instantiates one: building validators
    # at import is what made `import keel` (and every `keel` start) slow
    probe = (
        "import keel\nfrom pydantic import BaseModel\n"
        "def subs(c):\n    for s in c.__subclasses__():\n        yield s\n        yield from subs(s)\n"
        "print(sorted(f'{s.__module__}.{s.__qualname__}' for s in set(subs(BaseModel))"
        " if s.__module__.startswith('keel') and s.__pydantic_complete__))"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"built at `import keel`: {done.stdout.strip()}"


def test_the_kernels_commands_come_through_keel_commands_like_any_plugins() -> None:
    from click.testing import CliRunner

    import keel
    from keel.builtins import COMMANDS
    from keel.cli import build_cli

    with_builtins = build_cli(keel.PluginHost(trace=False), keel.Stack())
    assert set(COMMANDS) <= set(with_builtins.list_commands(None))  # type: ignore[arg-type]
    assert not {"plugins", "env"} & set(with_builtins.commands), "added by reference, imported when run"
    listed = CliRunner().invoke(with_builtins, ["--help"]).output
    for name, (target, help) in COMMANDS.items():
        assert f"{name} " in listed
        command = keel.load_ref(target)
        assert command.help.startswith(help.rstrip(".")), f"{name}: the listed help is the command's own"
    bare = build_cli(keel.PluginHost(builtins=False, trace=False), keel.Stack())
    assert bare.list_commands(None) == []  # type: ignore[arg-type]
