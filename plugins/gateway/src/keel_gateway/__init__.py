"""Keel gateway: HTTP, SSE and WebSocket over a runtime's runnables and executions.

    from keel_gateway import create_app
    app = create_app(runtime)          # FastAPI; `keel serve` runs it with uvicorn

Importing this package is cheap: FastAPI and uvicorn load when an app is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from fastapi import FastAPI

    from keel import Runtime
    from keel_gateway.channels import ConsoleChannel, DeliveryFailed, WebhookChannel, sign, verify
    from keel_gateway.product import ProductHub, ProductLog, Projection
    from keel_gateway.settings import ApiKey, GatewaySettings

__all__ = [
    "ApiKey",
    "ConsoleChannel",
    "DeliveryFailed",
    "GatewaySettings",
    "ProductHub",
    "ProductLog",
    "Projection",
    "WebhookChannel",
    "create_app",
    "sign",
    "verify",
]


def create_app(runtime: Runtime, settings: GatewaySettings | dict[str, Any] | None = None, **kwargs: Any) -> FastAPI:
    """Build the gateway's FastAPI app over ``runtime`` (see :func:`keel_gateway.app.create_app`)."""
    from keel_gateway.app import create_app as build

    return build(runtime, settings, **kwargs)


#: loaded on first use: the entry point (keel_gateway.plugin) imports this package, and discovery
#: (`keel plugins`, every `keel` start) needs neither the product log nor the settings model
_LAZY = {
    "ApiKey": "keel_gateway.settings",
    "GatewaySettings": "keel_gateway.settings",
    "ProductHub": "keel_gateway.product",
    "ProductLog": "keel_gateway.product",
    "Projection": "keel_gateway.product",
    "ConsoleChannel": "keel_gateway.channels",
    "DeliveryFailed": "keel_gateway.channels",
    "WebhookChannel": "keel_gateway.channels",
    "sign": "keel_gateway.channels",
    "verify": "keel_gateway.channels",
}


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), _LAZY)
