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


def test_a_worker_in_the_gateway_s_process_warns(tmp_path: Path) -> None:
    import anyio

    from keel_scheduler import Queue, Worker

    async def main() -> dict[str, keel.DoctorResult]:
        (tmp_path / "keel.toml").write_text("")
        runtime = keel.Runtime(make_host(plugin), keel.load_stack(tmp_path / "keel.toml"))
        checks = {}
        async with runtime, Queue(str(tmp_path / "q.db")) as queue:
            await Worker(queue, runtime, poll_interval=0.01).run(drain=True)
            (report,) = run_doctor(DoctorContext.from_runtime(runtime), ["proactive"])
            checks["worker only"] = {c.name: c for c in report.checks}["scheduler.apart-from-gateway"]
            runtime.serving.add("gateway")  # what keel_gateway.create_app(runtime) does
            (report,) = run_doctor(DoctorContext.from_runtime(runtime), ["proactive"])
            checks["beside the gateway"] = {c.name: c for c in report.checks}["scheduler.apart-from-gateway"]
        return checks  # type: ignore[return-value]

    checks = anyio.run(main)
    assert checks["worker only"].status == "pass" and checks["worker only"].evidence == ["this process serves: worker"]
    beside = checks["beside the gateway"]
    assert beside.status == "warn" and "runs in the gateway's process" in beside.evidence[0]
    assert "keel worker" in beside.fix
