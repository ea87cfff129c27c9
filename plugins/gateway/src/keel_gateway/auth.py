"""Who is calling the gateway: :mod:`keel.credentials` with the gateway's scopes.

API keys, HS256 tokens and RS256/ES256 tokens from a JWKS map a caller to a tenant and scopes; the
same code serves ``keel mcp serve --http``, so both servers identify callers alike.
"""

from __future__ import annotations

from keel.credentials import Authenticator as _Authenticator
from keel.credentials import AuthError, FailureThrottle, Principal, RateLimiter
from keel_gateway.settings import SCOPES, GatewaySettings

__all__ = ["AuthError", "Authenticator", "FailureThrottle", "Principal", "RateLimiter"]


class Authenticator(_Authenticator):
    """The gateway's authenticator: its scopes (``run``, ``read``, ``signal``, ``cancel``)."""

    def __init__(self, settings: GatewaySettings):
        super().__init__(settings, SCOPES, server="gateway")
