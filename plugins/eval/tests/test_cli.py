"""`keel eval ...` end to end, through the real `keel` command line (scripted model from the stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA

import keel
from keel.cli import build_cli
from keel.testing import make_host
from keel_eval import load_report, plugin

STACK = """
model = "scripted"
store = "memory"
runnables = ["eval_helpers:invoice", "eval_helpers:invoice_worse", "eval_helpers:vendor"]
[models.scripted]
provider = "scripted"
respond = "eval_helpers:{respond}"
"""


def keel_cli(tmp_path: Path, args: list[str], respond: str = "respond") -> tuple[int, str, str]:
    from click.testing import CliRunner

    stack_file = tmp_path / "keel.toml"
    stack_file.write_text(STACK.format(respond=respond))
    cli = build_cli(make_host(plugin), keel.load_stack(stack_file))
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_run_writes_json_and_html_and_prints_the_table(tmp_path: Path) -> None:
    code, out, err = keel_cli(
        tmp_path, ["eval", "run", str(DATA / "invoices.yaml"), "--json", "r.json", "--repeat", "2", "-c", "3"]
    )
    assert code == 0, out + err
    assert "3/3 cases passed" in out and "report: r.json" in out
    report = load_report(tmp_path / "r.json")
    assert report.repeat == 2 and all(len(c.runs) == 2 for c in report.cases)
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "nordlys" in page
    assert "http://" not in page and "https://" not in page  # no external assets
    assert "6/6" in err or "eval invoices" in err  # the progress bar went to stderr


def test_a_worse_prompt_makes_compare_exit_non_zero_naming_the_cases(tmp_path: Path) -> None:
    assert keel_cli(tmp_path, ["eval", "run", str(DATA / "invoices.yaml"), "--json", "base.json", "-q"])[0] == 0
    code, out, _ = keel_cli(
        tmp_path, ["eval", "run", str(DATA / "invoices.yaml"), "-r", "invoice_worse", "--json", "new.json", "-q"]
    )
    assert code == 1 and "0/3 cases passed" in out
    code, out, err = keel_cli(tmp_path, ["eval", "compare", "base.json", "new.json"])
    assert code == 1 and "regression: nordlys, acme, pi" in err
    assert "0 improved, 3 regressed" in out
    code, out, _ = keel_cli(tmp_path, ["eval", "compare", "base.json", "base.json", "--json"])
    assert code == 0 and json.loads(out)["counts"]["same"] == 3
    code, _, _ = keel_cli(
        tmp_path, ["eval", "compare", "base.json", "new.json", "--max-regressions", "3", "--tolerance", "1"]
    )
    assert code == 0


def test_rescore_and_schema_and_errors(tmp_path: Path) -> None:
    assert keel_cli(tmp_path, ["eval", "run", str(DATA / "invoices.yaml"), "--json", "r.json", "-q"])[0] == 0
    code, out, _ = keel_cli(tmp_path, ["eval", "rescore", "r.json", "--json", "again.json"], respond="respond_broken")
    assert code == 0 and "3/3 cases passed" in out
    assert load_report(tmp_path / "again.json").rescored_from == load_report(tmp_path / "r.json").id
    code, out, _ = keel_cli(tmp_path, ["eval", "schema"])
    assert code == 0 and json.loads(out)["title"] == "Keel eval case file"
    (tmp_path / "bad.yaml").write_text("name: x\ninput: 1\nevaluators: [nope]\n")
    with pytest.raises(keel.KeelError, match="no evaluator named 'nope'"):
        keel_cli(tmp_path, ["eval", "run", "bad.yaml", "-r", "invoice"])
    (tmp_path / "not-a-report.json").write_text("{}")
    with pytest.raises(keel.KeelError, match="not a keel eval report"):
        keel_cli(tmp_path, ["eval", "compare", "not-a-report.json", "r.json"])


def test_from_execution_prints_a_case_file(tmp_path: Path) -> None:
    from keel_eval.recorded import write_recording

    header = {"execution_id": "exe_abc12345", "kind": "agent", "runnable": "invoice", "tenant": "default",
              "status": "completed", "input": "Invoice 1 from A B", "output": {"number": "1"}, "started_at": 1.0, "ended_at": 2.0}  # fmt: skip
    write_recording(tmp_path / ".keel" / "executions" / "exported.jsonl", header, [])
    code, out, _ = keel_cli(tmp_path, ["eval", "from-execution", "exe_abc12345"])
    assert code == 0 and "name: invoice-abc12345" in out and "expected:\n  number: '1'" in out
    code, _, _ = keel_cli(
        tmp_path, ["eval", "from-execution", str(tmp_path / ".keel/executions/exported.jsonl"), "-o", "cases/one.yaml"]
    )
    assert code == 0 and (tmp_path / "cases" / "one.yaml").exists()
