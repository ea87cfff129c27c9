"""keel-scheduler answers for doctor's proactive row itself: the scheduler runs the work, and each
webhook source is signed and deduplicated (a stack that fails each check, one that passes)."""

from __future__ import annotations

from pathlib import Path

import keel
from keel.doctor import DoctorContext, run_doctor
from keel.testing import make_host
from keel_scheduler import plugin


def proactive(tmp_path: Path, toml: str = "") -> dict[str, keel.DoctorResult]:
    (tmp_path / "keel.toml").write_text(toml)
    runtime = keel.Runtime(make_host(plugin), keel.load_stack(tmp_path / "keel.toml"))
    (report,) = run_doctor(DoctorContext.from_runtime(runtime), ["proactive"])
    return {c.name: c for c in report.checks}  # type: ignore[misc]


def test_the_loaded_scheduler_passes_the_proactive_row(tmp_path: Path) -> None:
    checks = proactive(tmp_path)
    assert checks["scheduler.proactive"].status == "pass"
    assert checks["scheduler.proactive"].evidence[0].startswith("plugin 'scheduler' is loaded")
    assert checks["scheduler.webhooks"].status == "pass"


def test_an_unsigned_webhook_source_fails(tmp_path: Path) -> None:
    checks = proactive(tmp_path, '[settings.scheduler.sources.shop]\ntask = "deliver"\n')
    webhooks = checks["scheduler.webhooks"]
    assert webhooks.status == "fail" and "[settings.scheduler.sources.shop]: no secret" in webhooks.evidence[0]


def test_a_source_deduplicated_by_body_only_warns(tmp_path: Path) -> None:
    toml = '[settings.scheduler.sources.shop]\ntask = "deliver"\nsecret_env = "SHOP_SECRET"\ndelivery_header = ""\n'
    webhooks = proactive(tmp_path, toml)["scheduler.webhooks"]
    assert webhooks.status == "warn" and "deduplicated by a hash of the body only" in webhooks.evidence[0]


def test_a_signed_source_with_a_delivery_id_passes(tmp_path: Path) -> None:
    toml = '[settings.scheduler.sources.shop]\ntask = "deliver"\nsecret_env = "SHOP_SECRET"\n'
    webhooks = proactive(tmp_path, toml)["scheduler.webhooks"]
    assert webhooks.status == "pass"
    assert webhooks.evidence == [
        "[settings.scheduler.sources.shop]: signed, deduplicated by X-Keel-Delivery (else a hash of the body)"
    ]
