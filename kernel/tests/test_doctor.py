"""keel doctor: each kernel check has a stack that fails it and one that passes it; the runner
turns uncovered rows into "not checked yet" and a broken contributor into a fail."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import keel
from keel.doctor import ROWS, DoctorContext, parse_rows, run_doctor
from keel.stack import load_stack


class Ticket(BaseModel):
    category: str


class Flow:
    """A runnable that is not an agent (it may wait), as a TriggerFlow is."""

    kind = "flow"
    description = "a flow"

    def __init__(self, name: str, schema: dict[str, Any] | None = None):
        self.name = name
        self._schema = schema or {}

    def input_schema(self) -> dict[str, Any]:
        return {}

    def output_schema(self) -> dict[str, Any]:
        return self._schema

    async def start(self, input: Any, *, runtime: Any, tenant: str = "default") -> Any:
        raise AssertionError("doctor must start nothing")


def runtime_for(tmp_path: Path, toml: str = "", *plugins: object, approver: Any = None) -> keel.Runtime:
    (tmp_path / "keel.toml").write_text(toml)
    host = keel.PluginHost()
    for i, plugin in enumerate(plugins):
        host.register(plugin, name=f"p{i}")
    return keel.Runtime(host, load_stack(tmp_path / "keel.toml"), approver=approver)


def row(runtime: keel.Runtime, name: str, check_name: str | None = None) -> tuple[str, list[str], str]:
    """One check's verdict in a row: ``check_name``'s, or the row's first (the kernel's original one)."""
    (report,) = run_doctor(DoctorContext.from_runtime(runtime), [name])
    checks = {c.name: c for c in report.checks}
    check = checks[check_name] if check_name is not None else report.checks[0]
    return check.status, check.evidence, check.fix


# ------------------------------------------------------------------------------ output contract


def test_output_contract_fails_on_free_text_and_missing_schema(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    runtime.add(keel.Agent("chatty", "talk"))
    runtime.add(Flow("intake"))
    status, evidence, fix = row(runtime, "output-contract")
    assert status == "fail"
    assert any("agent 'chatty': returns free text" in line for line in evidence)
    assert any("flow 'intake': no output schema" in line for line in evidence)
    assert "output contract" in fix


def test_output_contract_passes_with_structured_outputs(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    runtime.add(keel.Agent("classifier", "classify", output=Ticket))
    runtime.add(Flow("intake", Ticket.model_json_schema()))
    status, evidence, _ = row(runtime, "output-contract")
    assert status == "pass", evidence


def test_output_contract_warns_with_no_runnables(tmp_path: Path) -> None:
    assert row(runtime_for(tmp_path), "output-contract")[0] == "warn"


# ------------------------------------------------------------------------------- actions, policy


@keel.action(risk="irreversible")
def refund(order: str) -> str:
    "Refund an order."
    return order


@keel.action(risk="write", timeout=None)
def write_forever(text: str) -> str:
    "Write without a time limit."
    return text


class Actions:
    def __init__(self, *specs: keel.ActionSpec):
        self.specs = specs

    @keel.hookimpl
    def keel_actions(self) -> list[keel.ActionSpec]:
        return list(self.specs)


class AllowAll:
    @keel.hookimpl
    def keel_check_action(self, call: keel.ActionCall, context: keel.ActionContext) -> keel.PolicyDecision:
        return keel.PolicyDecision(verdict="allow", reason="yolo", policy="allow-all")


def test_action_boundary_warns_on_an_unbounded_side_effect(tmp_path: Path) -> None:
    status, evidence, fix = row(runtime_for(tmp_path, "", Actions(write_forever)), "action-boundary")
    assert status == "warn"
    assert "write action 'write_forever' (p0) has no timeout" in evidence[0]
    assert "timeout" in fix


def test_action_boundary_fails_on_a_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_STRICT_PLUGINS", raising=False)  # strict (as in CI) makes it an error, not a warning
    with pytest.warns(RuntimeWarning, match="registered twice"):
        status, evidence, _ = row(runtime_for(tmp_path, "", Actions(refund), Actions(refund)), "action-boundary")
    assert status == "fail"
    assert "'p0'" in evidence[0] and "'p1'" in evidence[0]


def test_action_boundary_passes(tmp_path: Path) -> None:
    status, evidence, _ = row(runtime_for(tmp_path, "", Actions(refund)), "action-boundary")
    assert status == "pass"
    assert "p0: refund" in evidence


def test_permissions_fail_when_a_policy_lets_an_irreversible_action_through(tmp_path: Path) -> None:
    status, evidence, _ = row(runtime_for(tmp_path, "", Actions(refund), AllowAll()), "permissions")
    assert status == "fail"
    assert "'refund' (p0) is allowed without approval by policy 'allow-all'" in evidence[0]


def test_permissions_warn_when_approval_has_nobody_to_ask(tmp_path: Path) -> None:
    status, evidence, fix = row(runtime_for(tmp_path, "", Actions(refund)), "permissions")
    assert status == "warn"
    assert any("no approver is configured" in line for line in evidence)
    assert "approver" in fix


def test_permissions_pass_with_approval_and_an_approver(tmp_path: Path) -> None:
    approver = keel.CallbackApprover(lambda request: keel.ApprovalDecision(approved=False))
    status, evidence, _ = row(runtime_for(tmp_path, "", Actions(refund), approver=approver), "permissions")
    assert status == "pass", evidence
    assert "needs approval (policy 'keel.default')" in evidence[0]


# ---------------------------------------------------------------------------------- environments


class Folder:
    name = "folder"

    def __init__(self, options: dict[str, Any]):
        pass

    @property
    def status(self) -> keel.EnvironmentStatus:
        return "stopped"

    async def start(self) -> None:
        raise AssertionError("doctor must start nothing")

    async def stop(self) -> None: ...

    async def health(self) -> keel.Health:
        return keel.Health(ok=True)


class Envs:
    @keel.hookimpl
    def keel_environments(self) -> list[keel.EnvironmentSpec]:
        return [keel.EnvironmentSpec(name="folder", kind="folder", factory=Folder)]


def test_environments_fail_on_an_unknown_driver_and_no_health_checks(tmp_path: Path) -> None:
    toml = """
[environments.gone]
driver = "browser"
[environments.blind]
driver = "folder"
health_interval = 0
"""
    status, evidence, _ = row(runtime_for(tmp_path, toml, Envs()), "environment-boundary")
    assert status == "fail"
    assert any("[environments.gone]: driver 'browser' is not registered (available: folder)" in e for e in evidence)
    assert any("[environments.blind]: health_interval = 0" in e for e in evidence)


def test_environments_warn_without_restarts(tmp_path: Path) -> None:
    toml = '[environments.f]\ndriver = "folder"\nrestart = {mode = "never"}\n'
    assert row(runtime_for(tmp_path, toml, Envs()), "environment-boundary")[0] == "warn"


def test_environments_pass_when_owned_and_watched(tmp_path: Path) -> None:
    toml = '[environments.f]\ndriver = "folder"\nhealth_interval = 2\n'
    status, evidence, _ = row(runtime_for(tmp_path, toml, Envs()), "environment-boundary")
    assert status == "pass"
    assert evidence == ["[environments.f]: folder (folder), health every 2s, restarted on-failure"]


# ------------------------------------------------------------------------------ state, recovery


class Disk:
    """A durable store's spec (only its declaration is read: doctor builds no store)."""

    @keel.hookimpl
    def keel_stores(self) -> list[keel.StoreSpec]:
        return [keel.StoreSpec(name="disk", durable=True, factory=lambda options: keel.MemoryStore())]


class Adopter:
    @keel.hookimpl
    def keel_find_execution(self, runtime: keel.Runtime, execution_id: str, tenant: str) -> None:
        return None


def test_state_warns_on_the_memory_store_and_passes_on_a_durable_one(tmp_path: Path) -> None:
    status, evidence, fix = row(runtime_for(tmp_path), "state")
    assert status == "warn" and "'memory' is not durable" in evidence[0] and "sqlite" in fix
    assert row(runtime_for(tmp_path, 'store = "disk"', Disk()), "state")[0] == "pass"


def test_state_fails_when_the_store_does_not_resolve(tmp_path: Path) -> None:
    status, evidence, _ = row(runtime_for(tmp_path, 'store = "nowhere"'), "state")
    assert status == "fail" and "nowhere" in evidence[0]


def test_recovery_fails_for_a_flow_on_the_memory_store(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    runtime.add(Flow("refunds"))
    status, evidence, _ = row(runtime, "recovery")
    assert status == "fail"
    assert "flow 'refunds' runs on store 'memory', which is not durable" in evidence[0]


def test_recovery_warns_when_nobody_adopts_executions(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, 'store = "disk"', Disk())
    runtime.add(Flow("refunds"))
    assert row(runtime, "recovery")[0] == "warn"


def test_recovery_passes_on_a_durable_store_with_an_adopter(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, 'store = "disk"', Disk(), Adopter())
    runtime.add(Flow("refunds"))
    status, evidence, _ = row(runtime, "recovery")
    assert status == "pass"
    assert evidence == ["store 'disk' is durable", "executions adopted after a restart by: p1"]


# ------------------------------------------------------------ proactive, observability, regression


class Observer:
    @keel.hookimpl
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None: ...


class Evaluators:
    @keel.hookimpl
    def keel_evaluators(self) -> list[keel.EvaluatorSpec]:
        return [
            keel.EvaluatorSpec(
                name="exact", evaluate=lambda s: keel.EvalResult(evaluator="exact", passed=True, score=1)
            )
        ]


def test_observability_warns_without_an_observer_and_passes_with_one(tmp_path: Path) -> None:
    status, _, fix = row(runtime_for(tmp_path), "observability")
    assert status == "warn" and "keel-devtools" in fix
    status, evidence, _ = row(runtime_for(tmp_path, "", Observer()), "observability")
    assert status == "pass" and evidence == ["RuntimeEvents observed by: p0"]


def test_regression_warns_without_evaluators_and_passes_with_some(tmp_path: Path) -> None:
    assert row(runtime_for(tmp_path), "regression")[0] == "warn"
    status, evidence, _ = row(runtime_for(tmp_path, "", Evaluators()), "regression")
    assert status == "pass" and evidence[0] == "evaluators: exact"


def test_proactive_is_the_scheduler_s_to_check(tmp_path: Path) -> None:
    # the kernel does not recognise a scheduler by name: keel-scheduler contributes the row's checks
    status, evidence, _ = row(runtime_for(tmp_path), "proactive")
    assert status == "warn" and "no scheduler plugin is loaded" in evidence[0]
    (tmp_path / "keel.toml").write_text("")
    host = keel.PluginHost()
    host.register(Observer(), name="scheduler")  # a plugin with the scheduler's name checks nothing
    assert row(keel.Runtime(host, load_stack(tmp_path / "keel.toml")), "proactive")[0] == "warn"


# ------------------------------------------------------------------------------------ the runner


def test_every_row_is_reported_and_uncovered_rows_are_never_a_pass(tmp_path: Path) -> None:
    reports = run_doctor(DoctorContext.from_runtime(runtime_for(tmp_path)))
    assert [r.row for r in reports] == list(ROWS)
    for report in reports:
        if report.row in ("streaming-boundary", "multi-role", "long-workflow", "interaction-layer", "proactive"):
            assert report.status == "warn"
            assert report.checks[0].evidence[0].startswith("not checked yet: ")
    assert json.loads(json.dumps([r.as_dict() for r in reports]))[0]["standard"] == ROWS["output-contract"][1]


class Raising:
    @keel.hookimpl
    def keel_doctor_checks(self) -> list[keel.DoctorCheck]:
        def boom(context: DoctorContext) -> keel.DoctorResult:
            raise RuntimeError("cannot read the bucket")

        return [keel.DoctorCheck(name="acme.bucket", row="state", title="bucket", check=boom)]


class BrokenHook:
    @keel.hookimpl
    def keel_doctor_checks(self) -> list[str]:
        return ["not a check"]


class Custom:
    @keel.hookimpl
    def keel_doctor_checks(self) -> list[keel.DoctorCheck]:
        return [
            keel.DoctorCheck(
                name="acme.retention", row="acme-retention", title="log retention set",
                check=lambda context: keel.DoctorResult(status="pass", evidence=["retention = 30d"]),
            ),
            keel.DoctorCheck(
                name="acme.updates", row="updates", title="changelog",
                check=lambda context: keel.DoctorResult(status="pass", evidence=["CHANGELOG.md updated"]),
            ),
        ]  # fmt: skip


def test_a_raising_check_fails_its_row_naming_the_plugin(tmp_path: Path) -> None:
    (report,) = run_doctor(DoctorContext.from_runtime(runtime_for(tmp_path, "", Raising())), ["state"])
    assert report.status == "fail"
    failed = next(c for c in report.checks if c.status == "fail")
    assert failed.plugin == "p0" and "RuntimeError: cannot read the bucket" in failed.evidence[0]


def test_a_hook_returning_the_wrong_shape_fails_the_doctor_row(tmp_path: Path) -> None:
    reports = run_doctor(DoctorContext.from_runtime(runtime_for(tmp_path, "", BrokenHook())))
    assert reports[0].row == "doctor" and reports[0].status == "fail"
    assert "keel.DoctorCheck" in reports[0].checks[0].evidence[0]


def test_plugins_add_rows_and_cover_unchecked_ones(tmp_path: Path) -> None:
    reports = {r.row: r for r in run_doctor(DoctorContext.from_runtime(runtime_for(tmp_path, "", Custom())))}
    assert reports["acme-retention"].status == "pass" and reports["acme-retention"].title == "log retention set"
    assert reports["updates"].status == "pass"
    assert [c.name for c in reports["updates"].checks] == ["keel.updates", "acme.updates"]


def test_duplicate_check_names_fail_naming_both_plugins(tmp_path: Path) -> None:
    reports = run_doctor(DoctorContext.from_runtime(runtime_for(tmp_path, "", Custom(), Custom())))
    assert reports[0].row == "doctor"
    assert "plugins 'p0' and 'p1' both register check 'acme.retention'" in reports[0].checks[0].evidence[0]


def test_unknown_rows_and_bad_descriptors_are_errors() -> None:
    with pytest.raises(keel.KeelError, match="unknown checklist row 'stat'; the rows are: output-contract"):
        parse_rows("state,stat")
    with pytest.raises(ValidationError):
        keel.DoctorCheck(name="Bad Name", row="state", title="x", check=lambda c: keel.DoctorResult(status="pass"))


# ------------------------------------------------------------------------------------ the command

APP = """
import keel
chatty = keel.Agent("chatty", "talk to the customer")
"""


def doctor_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(KEEL_LOAD_PLUGINS="", PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")])))
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "doctor", *args], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=60,
    )  # fmt: skip


def test_the_command_reads_the_stacks_runnables_and_exits_1_on_a_fail(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "keel.toml").write_text('runnables = ["app:chatty"]\n')
    done = doctor_cli(tmp_path, "--json")
    assert done.returncode == 1, done.stderr
    rows = {r["row"]: r for r in json.loads(done.stdout)["rows"]}
    assert list(rows) == list(ROWS)
    assert rows["output-contract"]["status"] == "fail"
    assert rows["output-contract"]["checks"][0]["evidence"][0].startswith("agent 'chatty': returns free text")
    text = doctor_cli(tmp_path)
    assert text.returncode == 1
    assert "FAIL  output-contract" in text.stdout and "fix: give each runnable an output contract" in text.stdout
    assert text.stdout.rstrip().endswith("4 pass, 10 warn, 1 fail"), text.stdout


def test_only_selects_rows_and_a_passing_selection_exits_0(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text("")
    done = doctor_cli(tmp_path, "--json", "--only", "environment-boundary,action-boundary")
    assert done.returncode == 0, done.stderr
    assert [(r["row"], r["status"]) for r in json.loads(done.stdout)["rows"]] == [
        ("action-boundary", "pass"),
        ("environment-boundary", "pass"),
    ]
    bad = doctor_cli(tmp_path, "--only", "state,stat")
    assert bad.returncode == 1 and "unknown checklist row 'stat'; the rows are: output-contract" in bad.stderr


def test_explain_quotes_the_seeds_standard(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text("")
    done = doctor_cli(tmp_path, "--explain", "recovery")
    assert done.returncode == 0, done.stderr
    assert 'passing standard: "Checkpoint, save/load, runtime resource reinjection, and external resume' in done.stdout
    assert "check keel.recovery (plugin keel.builtins)" in done.stdout
    unchecked = doctor_cli(tmp_path, "--explain", "multi-role")
    assert "not checked yet: no flow plugin is loaded (keel-triggerflow checks role agents" in unchecked.stdout


def test_other_commands_do_not_import_doctor(tmp_path: Path) -> None:
    """The kernel's checks load when doctor runs: `keel plugins` and `keel --help` stay cheap."""
    code = (
        "import sys, keel.cli\n"
        "for args in (['plugins'], ['--help']):\n"
        "    try:\n"
        "        keel.cli.main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('keel.doctor' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"doctor +Check the stack against the pre-launch checklist\.", done.stdout), done.stdout
    assert done.stdout.rstrip().endswith("False")
