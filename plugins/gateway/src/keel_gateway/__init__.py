"""Keel gateway: HTTP, SSE and WebSocket over a runtime's runnables and executions.

    from keel_gateway import create_app
    app = create_app(runtime)          # FastAPI; `keel serve` runs it with uvicorn

Importing this package is cheap: FastAPI and uvicorn load when an app is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel_gateway.channels import ConsoleChannel, DeliveryFailed, WebhookChannel, sign, verify
from keel_gateway.product import ProductHub, ProductLog, Projection
from keel_gateway.settings import ApiKey, GatewaySettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from keel import Runtime

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
