"""The entry point ``scheduler`` (group ``keel``): the ``keel queue|worker|schedule|scheduler|intake``
commands, added by reference so that they load only when they run."""

from __future__ import annotations

from typing import Any

import keel


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    cli.add_lazy_command(
        "queue", "keel_scheduler.cli:queue_group", help="The durable queue: list, retry, cancel, purge jobs."
    )
    # one kind of `keel worker` (another plugin may add its own, e.g. `keel worker --runner temporal`);
    # the job worker is what `keel worker` runs without --runner
    cli.add_lazy_command(
        "worker",
        "keel_scheduler.cli:worker_cmd",
        help="Claim and run jobs with the stack's runnables.",
        kind="jobs",
        default=True,
    )
    cli.add_lazy_command(
        "schedule", "keel_scheduler.schedules_cli:schedule_group", help="Schedules: cron, intervals and calendars."
    )
    cli.add_lazy_command(
        "scheduler", "keel_scheduler.schedules_cli:scheduler_cmd", help="Turn schedules into due jobs (run several)."
    )
    cli.add_lazy_command("intake", "keel_scheduler.intake_cli:intake_cmd", help="Serve signed webhooks into the queue.")


@keel.hookimpl
def keel_addhooks(pluginmanager: Any) -> None:
    from keel_scheduler import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@keel.hookimpl
def keel_doctor_checks() -> list[keel.DoctorCheck]:
    # the scheduler answers for the proactive row itself, rather than the kernel knowing it by name
    from keel_scheduler.doctor import check_apart_from_gateway, check_proactive, check_webhooks

    return [
        keel.DoctorCheck(
            name="scheduler.proactive", row="proactive", title="a scheduler runs proactive work", check=check_proactive
        ),
        keel.DoctorCheck(
            name="scheduler.webhooks",
            row="proactive",
            title="webhooks are signed and deduplicated",
            check=check_webhooks,
        ),
        keel.DoctorCheck(
            name="scheduler.apart-from-gateway",
            row="proactive",
            title="no worker in the gateway's process",
            check=check_apart_from_gateway,
        ),
    ]
