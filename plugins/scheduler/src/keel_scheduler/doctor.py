"""keel-scheduler's own rows of ``keel doctor`` (the ``proactive`` row): it reads the stack's
``[settings.scheduler]``; it opens no database and starts no worker."""

from __future__ import annotations

import keel
from keel_scheduler.settings import load_settings

__all__ = ["check_apart_from_gateway", "check_proactive", "check_webhooks"]


def check_proactive(context: keel.DoctorContext) -> keel.DoctorResult:
    """Scheduled, webhook and queued work runs as jobs, in workers apart from HTTP handlers."""
    settings = load_settings(context.stack.settings("scheduler"))
    return keel.DoctorResult(
        status="pass",
        evidence=[
            "plugin 'scheduler' is loaded: schedules, webhooks and queues run as its jobs, in workers apart from "
            "HTTP handlers (`keel worker`, `keel scheduler`, `keel intake`), each with an idempotency key",
            f"queues: {', '.join(settings.queues)}; database {settings.database}",
        ],
    )


def check_webhooks(context: keel.DoctorContext) -> keel.DoctorResult:
    """Each webhook source is signed (HMAC) and deduplicated by the sender's delivery id."""
    settings = load_settings(context.stack.settings("scheduler"))
    if not settings.sources:
        return keel.DoctorResult(status="pass", evidence=["no webhook sources ([settings.scheduler.sources.*])"])
    failed, warned, good = [], [], []
    for name, source in sorted(settings.sources.items()):
        where = f"[settings.scheduler.sources.{name}]"
        if not (source.secret_env or source.secret):
            failed.append(f"{where}: no secret: anyone who finds the URL can enqueue work")
        if not source.delivery_header:
            warned.append(
                f"{where}: delivery_header is empty: deliveries are deduplicated by a hash of the body only, so a "
                "resend whose body differs (a new timestamp) runs twice"
            )
        else:
            good.append(f"{where}: signed, deduplicated by {source.delivery_header} (else a hash of the body)")
    fix = "set secret_env and delivery_header (the sender's delivery id) in each source's table"
    if failed:
        return keel.DoctorResult(status="fail", evidence=failed + warned + good, fix=fix)
    if warned:
        return keel.DoctorResult(status="warn", evidence=warned + good, fix=fix)
    return keel.DoctorResult(status="pass", evidence=good)


def check_apart_from_gateway(context: keel.DoctorContext) -> keel.DoctorResult:
    """No worker runs in the gateway's process (read from the live runtime: ``runtime.serving``)."""
    serving = set(getattr(context.runtime, "serving", ()) or ())
    if {"gateway", "worker"} <= serving:
        return keel.DoctorResult(
            status="warn",
            evidence=[
                "a scheduler worker runs in the gateway's process: a deploy or a traffic spike of the web tier "
                "stops or starves its jobs (jobs still run apart from the request handlers, as tasks)"
            ],
            fix="run `keel worker` (and `keel scheduler`) as processes of their own in production",
        )
    if serving:
        return keel.DoctorResult(status="pass", evidence=[f"this process serves: {', '.join(sorted(serving))}"])
    return keel.DoctorResult(
        status="pass",
        evidence=[
            "this runtime serves nothing yet (doctor on a stack); run doctor in the service to check its process"
        ],
    )
