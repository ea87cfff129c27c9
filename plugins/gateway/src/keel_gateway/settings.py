"""``[settings.gateway]``: keys, tokens, limits and CORS, read from the stack.

    [settings.gateway]
    cors_origins = ["https://app.example.com"]
    max_body_bytes = 1048576
    rate_limit_per_minute = 600
    rate_limit_burst = 60
    jwt_secret_env = "KEEL_JWT_SECRET"

    [[settings.gateway.api_keys]]
    key_env = "ACME_API_KEY"      # or sha256 = "<hex of the key>", or key = "..." (development only)
    tenant = "acme"
    scopes = ["*"]

The credential keys (``api_keys``, ``jwt_*``, ``allow_query_token``, ``failed_auth_*``) are
:class:`keel.credentials.CredentialSettings`, shared with ``keel mcp serve --http``. With no API
key and no token source configured the gateway runs open, every caller being tenant
``anonymous_tenant`` with every scope and no rate limit: ``keel serve`` then refuses any address
but loopback unless given ``--insecure``, and says so loudly on loopback. For local development only.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from keel.credentials import ApiKey, CredentialSettings

__all__ = ["SCOPES", "ApiKey", "GatewaySettings"]

#: every scope the gateway checks; ``*`` grants them all.
SCOPES = ("run", "read", "signal", "cancel")


class GatewaySettings(CredentialSettings):
    """Everything the gateway reads from ``[settings.gateway]``."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=1_048_576, ge=1)
    max_json_depth: int = Field(default=64, ge=2, le=500, description="deepest nesting a JSON body may have")
    rate_limit_per_minute: float = Field(default=600.0, gt=0)
    rate_limit_burst: int = Field(default=60, ge=1)
    cors_origins: list[str] = Field(default_factory=list)
    static_dir: str | None = Field(default=None, description="a folder served at /ui/ (plain HTML + JS)")
    console: bool = Field(
        default=True,
        description="serve the built-in console page at /ui/ when no static_dir is set: start any runnable, "
        "follow its product events, answer its waits (it calls the same authenticated API)",
    )
    keep_finished: int = Field(
        default=1000, ge=0, description="finished executions whose product events stay in memory"
    )
    keepalive_seconds: float = Field(default=15.0, gt=0, description="SSE comment / WebSocket ping interval")
    channels: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options per channel name, e.g. [settings.gateway.channels.webhook]"
    )
