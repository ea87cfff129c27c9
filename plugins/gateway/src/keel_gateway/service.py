"""The gateway's service: who calls, which execution, what a client sees of it, and the actions.

Routes (:mod:`keel_gateway.routers`) stay thin: they parse and call :class:`Gateway`, held on
``app.state.gateway``. Every lookup is scoped to the caller's tenant, so another tenant's execution
is a 404 like one that does not exist.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse

from keel import (
    ConflictError,
    Execution,
    ExecutionStatus,
    KeelError,
    NotFoundError,
    Runnable,
    Runtime,
    TraceParent,
    continuing_trace,
)
from keel_gateway.auth import Authenticator, AuthError, FailureThrottle, Principal, RateLimiter
from keel_gateway.channels import ChannelDispatcher
from keel_gateway.inputs import InputError, strict_json
from keel_gateway.product import FAILURE_TEXT, ProductHub, ProductLog, failure_code, jsonable
from keel_gateway.schemas import ApiError, ExecutionView, Links, SignalAccepted, SignalRequest, TaskError
from keel_gateway.settings import GatewaySettings
from keel_gateway.state import GatewayState

__all__ = ["Gateway", "client_of", "credential_of"]

log = logging.getLogger("keel_gateway")


class Gateway:
    """The state behind the routes (held on ``app.state.gateway``)."""

    def __init__(self, runtime: Runtime, settings: GatewaySettings):
        self.runtime = runtime
        self.settings = settings
        self.auth = Authenticator(settings)
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.failures = FailureThrottle(settings)
        self.state = GatewayState(runtime)
        self.hub = ProductHub(runtime, keep_finished=settings.keep_finished, state=self.state)
        self.dispatcher = ChannelDispatcher.from_stack(runtime, self.hub, settings.channels)
        # a cache of what the store keeps (gateway/run:<id>); idempotency keys live in the store only
        self._runnables: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._validators: dict[str, Any] = {}
        self.draining = False  # shutting down: followers get a "reconnect" event and end
        self.followers = 0
        self._no_followers: anyio.Event | None = None

    # ---------------------------------------------------------------------------------- shutdown

    @contextmanager
    def following(self) -> Iterator[None]:
        """Count an SSE or WebSocket follower for :meth:`drain`."""
        self.followers += 1
        try:
            yield
        finally:
            self.followers -= 1
            if self.followers == 0 and self._no_followers is not None:
                self._no_followers.set()

    def begin_drain(self) -> None:
        """Tell every follower to send its "reconnect" event and end (idempotent, synchronous)."""
        if not self.draining:
            self.draining = True
            self.hub.wake_all()

    async def drain(self, timeout: float = 2.0) -> None:
        """:meth:`begin_drain`, then wait up to ``timeout`` seconds for the followers to end."""
        self.begin_drain()
        with anyio.move_on_after(timeout):
            while self.followers:
                self._no_followers = anyio.Event()
                await self._no_followers.wait()

    # ---------------------------------------------------------------------------------- callers

    def principal(self, credential: str | None, client: str = "unknown") -> Principal:
        """The caller, or 401; a client address with too many recent failures gets 429 first,
        whatever it sends (keys cannot be guessed at speed)."""
        if not self.settings.open:
            self.failures.check(client)
        try:
            principal = self.auth.authenticate(credential)
        except AuthError as err:
            if err.status == 401:
                self.failures.failed(client)
            raise
        if self.settings.open:
            return principal  # development mode: one shared identity, so no per-key limit to apply
        wait = self.limiter.take(principal.key_id)
        if wait > 0:
            raise ApiError(429, "rate_limited", "too many requests for this key", {"Retry-After": str(int(wait) + 1)})
        return principal

    async def execution(self, execution_id: str, principal: Principal) -> Execution:
        """The caller's execution, or 404 (only when it does not exist or belongs to another
        tenant). One that no live object holds (after a restart, or started by another process) is
        adopted from the store by the plugin that owns its kind (``runtime.find_execution``); push
        channels get it only when a gateway started it (the process that starts one pushes it)."""
        try:
            execution = await self.runtime.find_execution(execution_id, principal.tenant)
        except NotFoundError:
            raise ApiError(404, "not_found", f"no execution {execution_id!r}") from None
        if execution not in self.hub:
            self.hub.log(execution)  # held from here on: a request meanwhile does not come here again
            if await self.runnable_of(execution) is not None:
                # a gateway started it (adopted after a restart): its push channels go on here. One
                # another process started (a worker's job) is pushed by that process; a gateway that
                # sent it too would deliver each event twice, under another X-Keel-Delivery
                self.dispatcher.follow(execution, resumed=True)
        return execution

    # --------------------------------------------------------------------------------- validation

    def validate(self, name: str, schema: dict[str, Any], value: Any) -> None:
        from jsonschema import Draft202012Validator

        validator = self._validators.get(name)
        if validator is None:
            validator = self._validators[name] = Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            shown = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(input)'}: {e.message}" for e in errors[:5])
            raise ApiError(422, "invalid_request", f"the input does not match {name!r}'s schema: {shown}")

    # --------------------------------------------------------------------------------------- views

    async def runnable_of(self, execution: Execution) -> str | None:
        """The runnable an execution was started from, when a gateway over this store started it."""
        key = (execution.tenant, execution.id)
        name = self._runnables.get(key)
        if name is None:
            name = await self.state.runnable_of(execution.tenant, execution.id)
            if name is not None:
                self._cache_runnable(key, name)
        return name

    def _cache_runnable(self, key: tuple[str, str], name: str) -> None:
        self._runnables[key] = name
        while len(self._runnables) > 100_000:
            self._runnables.popitem(last=False)

    async def product_log(self, execution: Execution) -> ProductLog:
        """The execution's product log, once the events a previous process kept are back (<= 5 s)."""
        product = self.hub.log(execution)
        with anyio.move_on_after(5.0):
            await product.ready.wait()
        return product

    async def view(self, execution: Execution) -> ExecutionView:
        status = execution.status
        product = await self.product_log(execution)
        if status is ExecutionStatus.WAITING and product.waiting_for is None:
            # just adopted (after a restart): its projector is replaying what it waits for
            with anyio.move_on_after(1.0):
                while product.waiting_for is None and execution.status is ExecutionStatus.WAITING:
                    await product.changed()
        output: Any = None
        error: TaskError | None = None
        if status is ExecutionStatus.COMPLETED:
            try:
                output = jsonable(await execution.result())
            except Exception as err:  # completed but unreadable: report, do not 500
                error = TaskError(code="error", message=FAILURE_TEXT["error"])
                log.warning("execution %s completed but its result failed: %s", execution.id, err)
        elif status.finished:
            code = "cancelled" if status is ExecutionStatus.CANCELLED else "error"
            try:
                await execution.result()
            except Exception as err:
                code = "cancelled" if status is ExecutionStatus.CANCELLED else failure_code(err)
            error = TaskError(code=code, message=FAILURE_TEXT[code])  # type: ignore[arg-type]
        base = f"/v1/executions/{execution.id}"
        return ExecutionView(
            id=execution.id,
            kind=execution.kind,
            runnable=await self.runnable_of(execution),
            status=status.value,
            output=output,
            error=error,
            waiting_for=product.waiting_for if status is ExecutionStatus.WAITING else None,
            last_seq=len(product),
            usage=await self.runtime.budgets.usage(execution.id, execution.tenant),
            links=Links(
                self=base, events=f"{base}/events", ws=f"{base}/ws", signals=f"{base}/signals", cancel=f"{base}/cancel"
            ),
        )

    # ------------------------------------------------------------------------------------ actions

    async def start(
        self, runnable: Runnable, request: Request, principal: Principal, wait: bool, timeout: float, key: str | None
    ) -> JSONResponse:
        principal.require("run")
        raw = await request.body()
        try:
            value = strict_json(raw, self.settings.max_json_depth) if raw.strip() else None
        except InputError as err:
            raise ApiError(422, "invalid_request", str(err)) from None
        self.validate(runnable.name, runnable.input_schema(), value)
        trace = TraceParent.parse(request.headers.get("traceparent"))  # W3C: an invalid one is ignored
        execution = await self._start_once(runnable, value, principal.tenant, key, trace)
        product = self.hub.log(execution)
        if wait:
            with anyio.move_on_after(timeout):
                await product.settled()
        view = await self.view(execution)
        finished = execution.status.finished
        headers = {"Location": view.links.self}
        return JSONResponse(
            view.model_dump(mode="json"), status_code=200 if wait and finished else 202, headers=headers
        )

    async def _start_once(
        self, runnable: Runnable, value: Any, tenant: str, key: str | None, trace: TraceParent | None = None
    ) -> Execution:
        """Start ``runnable``; with an ``Idempotency-Key``, the execution that key already started
        (kept in the store: across restarts and workers). A key whose execution no longer exists
        (a non-durable one, after a restart) starts a new one."""
        if key is not None:
            try:
                known = await self.state.claim(tenant, key)
            except ConflictError as err:
                raise ApiError(409, "conflict", str(err)) from None
            if known is not None:
                try:
                    return await self.runtime.find_execution(known, tenant)
                except NotFoundError:
                    pass
        try:
            # through the runtime: a task of this execution that raises fails this execution only;
            # its events continue the caller's trace (the kernel's TraceParent, read by every runnable)
            with continuing_trace(trace):
                execution = await self.runtime.start(runnable, value, tenant=tenant)
        except BaseException:
            if key is not None:
                with anyio.CancelScope(shield=True):
                    await self.state.settle(tenant, key, None)
            raise
        self._cache_runnable((execution.tenant, execution.id), runnable.name)
        self.hub.log(execution, new=True)
        self.dispatcher.follow(execution)
        await self.state.remember_runnable(execution.tenant, execution.id, runnable.name)
        if key is not None:
            await self.state.settle(tenant, key, execution.id)
        return execution

    async def signal(
        self, execution: Execution, name: str, body: SignalRequest, principal: Principal
    ) -> SignalAccepted:
        """Validate the answer against what the execution waits for, and deliver it. A request id
        sent again is the execution's to recognise (the ``Execution`` protocol promises it: a durable
        execution keeps them in its history and its inbox, across restarts): the same payload is a
        no-op, another one a 409 conflict."""
        principal.require("signal")
        product = await self.product_log(execution)
        if execution.status is ExecutionStatus.WAITING:
            for entry in (product.waiting_for or {}).get("signals", []):
                if entry.get("name") == name and isinstance(entry.get("schema"), dict):
                    self.validate(f"{execution.id}:{name}", entry["schema"], body.payload)
        try:
            await execution.signal(name, body.payload, request_id=body.request_id)
        except KeelError as err:
            conflict = isinstance(err, ConflictError | NotFoundError) or execution.status.finished
            raise ApiError(409, "conflict" if conflict else "rejected", str(err)) from None
        return SignalAccepted(
            execution_id=execution.id, signal=name, request_id=body.request_id, status=execution.status.value
        )

    async def cancel(self, execution: Execution, reason: str, principal: Principal) -> ExecutionView:
        principal.require("cancel")
        with anyio.move_on_after(10):
            await execution.cancel(reason)
        return await self.view(execution)


def client_of(request: Request | WebSocket) -> str:
    """The peer address (uvicorn puts the proxy's X-Forwarded-For there for trusted proxies)."""
    return request.client.host if request.client is not None else "unknown"


def credential_of(request: Request | WebSocket, allow_query_token: bool = True) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    key = request.headers.get("x-api-key")
    if key:
        return key
    # browsers cannot set headers on EventSource or WebSocket: accept the credential as a query
    # parameter, unless turned off (it ends up in access logs, proxies' logs and browser history)
    return request.query_params.get("access_token") if allow_query_token else None
