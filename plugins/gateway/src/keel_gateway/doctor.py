"""The gateway's ``keel doctor`` checks (registered through ``keel_doctor_checks``).

- ``gateway.streaming`` (row ``streaming-boundary``): every runnable the gateway streams has an
  output contract (its final data is validated, so a durable write never uses a fragment) and a
  bound on what it streams (a token budget or ``max_tokens`` for an agent, a time limit for a flow);
- ``gateway.interaction`` (row ``interaction-layer``): the stack's channels are registered and
  configured (they carry product events, never RuntimeEvents), and waits answered over HTTP need a
  credential.

Both read the stack and the registries only: no channel is built, no socket opened.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

import keel

__all__ = ["check_interaction", "check_streaming", "doctor_checks"]


def _result(status: str, evidence: list[str], fix: str = "") -> keel.DoctorResult:
    return keel.DoctorResult(status=status, evidence=evidence, fix=fix)  # type: ignore[arg-type]


def _limits(context: Any, name: str) -> dict[str, Any]:
    budgets = getattr(context.runtime, "budgets", None)
    return dict(budgets.limits_for(name)) if budgets is not None else {}


def _timeout(context: Any, runnable: Any) -> float | None:
    calls = getattr(context.runtime, "calls", None)
    policy = calls.for_runnable(runnable.name) if calls is not None else None
    timeout = getattr(policy, "timeout", None)
    return timeout if timeout is not None else getattr(runnable, "timeout", None)


def _bound(context: Any, runnable: Any) -> str | None:
    """What bounds a runnable's stream, or ``None``."""
    limits = _limits(context, runnable.name)
    if runnable.kind == "agent":
        max_tokens = (getattr(runnable, "options", None) or {}).get("max_tokens")
        if max_tokens:
            return f"max_tokens {max_tokens}"
        if "tokens" in limits:
            return f"token budget {limits['tokens'][0]:g}"
        return None
    timeout = _timeout(context, runnable)
    if "wall_time" in limits:
        return f"wall_time {limits['wall_time'][0]:g}s"
    if "tokens" in limits:
        return f"token budget {limits['tokens'][0]:g}"
    return f"timeout {timeout:g}s" if timeout is not None else None


def check_streaming(context: Any) -> keel.DoctorResult:
    """The stream is temporary UI state; what is written durably is the validated final data."""
    if not context.runnables:
        return _result(
            "warn",
            ["no runnables registered: nothing the gateway streams is checked"],
            "list your agents and flows in runnables = [...] in keel.toml",
        )
    failed, warned, good = [], [], []
    for runnable in context.runnables:
        label = f"{runnable.kind} {runnable.name!r}"
        try:
            schema = runnable.output_schema()
        except Exception as err:
            failed.append(f"{label}: output_schema() raised {type(err).__name__}: {err}")
            continue
        if not schema or (schema.get("type") == "string" and len(schema) <= 2):
            failed.append(
                f"{label}: streamed with no structured output contract ({json.dumps(schema) if schema else 'none'}): "
                "the streamed text is all a durable write could use"
            )
            continue
        bound = _bound(context, runnable)
        if bound is None:
            warned.append(f"{label}: its stream has no bound (no max_tokens, token budget or time limit)")
            continue
        good.append(
            f"{label}: streams task.partial/progress, writes the validated {schema.get('title') or 'output'}; "
            f"bounded by {bound}"
        )
    if failed:
        return _result(
            "fail", failed + warned + good, "give each streamed runnable an output contract: Agent(output=Model)"
        )
    if warned:
        return _result(
            "warn", warned + good, "bound each stream: [budgets.runnables.<name>] tokens = N (flows: wall_time = S)"
        )
    return _result("pass", good)


def check_interaction(context: Any) -> keel.DoctorResult:
    """Channels carry product events and are configured; waits are answered with a credential."""
    from keel_gateway.channels import PULL, WebhookOptions
    from keel_gateway.settings import GatewaySettings

    try:
        settings = GatewaySettings.model_validate(context.stack.settings("gateway"))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _result(
            "fail", [f"[settings.gateway] {where}: {first['msg']}"], "fix [settings.gateway] (docs/gateway.md)"
        )
    try:
        specs = context.host.channels()
    except keel.KeelError as err:
        return _result("fail", [str(err)], "resolve the conflict between the two plugins")
    failed, warned, good = [], [], []
    declared = list(context.stack.config.channels or [])
    for name in declared:
        if name not in specs:
            failed.append(
                f"channel {name!r} in the stack's channels is not registered (available: {', '.join(sorted(specs))})"
            )
        elif name in PULL:
            good.append(f"channel {name!r}: pages pull product events (task.*) from /v1/executions/<id>/events")
        elif name == "webhook":
            options = settings.channels.get(name, {})
            try:
                parsed = WebhookOptions.model_validate(options)
            except ValidationError as err:
                failed.append(f"[settings.gateway.channels.webhook]: {err.errors()[0]['msg']}")
                continue
            if not parsed.url or not (parsed.secret or parsed.secret_env):
                failed.append(
                    "channel 'webhook' is declared but [settings.gateway.channels.webhook] lacks "
                    f"{'url' if not parsed.url else 'secret_env'}: the gateway refuses to start"
                )
            else:
                good.append(f"channel 'webhook': signed product events to {parsed.url}")
        else:
            good.append(f"channel {name!r}: product events ({specs[name].spec.description})")
    if not declared:
        good.append("no channels declared: pages pull product events over SSE/WebSocket; no IM is told")
    if settings.open:
        warned.append(
            "the gateway runs open ([settings.gateway] has no api_keys and no JWT source): anyone who reaches "
            "it may answer a wait as tenant " + repr(settings.anonymous_tenant)
        )
    else:
        good.append(
            f"waits are answered over HTTP with a credential (scope 'signal'): {len(settings.api_keys)} API key(s)"
            + (
                ", and JWT"
                if settings.jwt_secret or settings.jwt_secret_env or settings.jwt_jwks_file or settings.jwt_jwks_url
                else ""
            )
        )
    if failed:
        return _result("fail", failed + warned + good, "list registered channels and give push channels their options")
    if warned:
        return _result(
            "warn", warned + good, 'give the gateway a credential: [[settings.gateway.api_keys]] key_env = "..."'
        )
    return _result("pass", good)


def doctor_checks() -> list[keel.DoctorCheck]:
    return [
        keel.DoctorCheck(
            name="gateway.streaming",
            row="streaming-boundary",
            title="streamed runnables have an output contract and a bound",
            check=check_streaming,
        ),
        keel.DoctorCheck(
            name="gateway.interaction",
            row="interaction-layer",
            title="channels carry product events; waits are answered with a credential",
            check=check_interaction,
        ),
    ]
