"""The pre-launch checklist on a small stack: what fails, why, and the fix (docs/production.md).

python examples/doctor.py
"""

from __future__ import annotations

from pydantic import BaseModel

import keel
from keel.doctor import DoctorContext, run_doctor
from keel.testing import make_host


class Reply(BaseModel):
    answer: str


@keel.action(risk="irreversible")
def close_account(customer: str) -> str:
    """Close a customer's account."""
    return customer


class Support:
    @keel.hookimpl
    def keel_actions(self) -> list[keel.ActionSpec]:
        return [close_account]


def main() -> int:
    host = make_host()
    host.register(Support(), name="support")
    runtime = keel.Runtime(host, keel.Stack())
    runtime.add(keel.Agent("helper", "help the customer"))  # free text: the output-contract row fails
    runtime.add(keel.Agent("triage", "triage the ticket", output=Reply))
    reports = run_doctor(DoctorContext.from_runtime(runtime))
    for report in reports:
        print(f"{report.status:<4}  {report.row:<20}  {report.title}")
        for check in report.checks:
            for line in check.evidence:
                print(f"{'':28}{line}")
            if check.fix and check.status != "pass":
                print(f"{'':28}fix: {check.fix}")
    statuses = {r.row: r.status for r in reports}
    assert statuses["output-contract"] == "fail" and statuses["permissions"] == "warn", statuses
    return 1 if "fail" in statuses.values() else 0


if __name__ == "__main__":
    code = main()
    print(f"\nexit status {code} (what `keel doctor` returns in CI)")
