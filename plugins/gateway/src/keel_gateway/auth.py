"""Who is calling: API keys and HS256 bearer tokens mapped to a tenant and scopes; per-key rate limits.

Tokens are checked with PyJWT: a small, maintained library that does exactly HS256 signature,
expiry, audience and issuer checks, with no cryptography backend needed for HMAC (``joserfc``
covers all of JOSE, which the gateway does not need). PyJWT is imported on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass, field

from keel import KeelError
from keel_gateway.settings import SCOPES, GatewaySettings

__all__ = ["AuthError", "Authenticator", "Principal", "RateLimiter"]

log = logging.getLogger("keel_gateway.auth")


class AuthError(KeelError):
    """The caller could not be identified (401) or lacks a scope (403)."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    tenant: str
    scopes: frozenset[str]
    key_id: str = field(default="anonymous")

    def allows(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise AuthError(f"this key lacks the scope {scope!r} (it has: {', '.join(sorted(self.scopes))})", 403)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Authenticator:
    """Maps a credential (an API key, or a JWT) to a :class:`Principal`."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self._keys: list[tuple[bytes, Principal]] = []
        for entry in settings.api_keys:
            if entry.sha256:
                digest = bytes.fromhex(entry.sha256)
            elif entry.key_env:
                value = os.environ.get(entry.key_env)
                if not value:
                    raise KeelError(
                        f"gateway: API key for tenant {entry.tenant!r} reads ${entry.key_env}, which is not set; "
                        "set it or remove the key from [settings.gateway]"
                    )
                digest = _digest(value)
            elif entry.key:
                digest = _digest(entry.key)
            else:
                raise KeelError(f"gateway: an API key for tenant {entry.tenant!r} needs key_env, sha256 or key")
            unknown = set(entry.scopes) - {*SCOPES, "*"}
            if unknown:
                raise KeelError(f"gateway: unknown scope(s) {sorted(unknown)}; known: {', '.join(SCOPES)} or *")
            key_id = entry.id or f"key-{digest.hex()[:8]}"
            self._keys.append((digest, Principal(entry.tenant, frozenset(entry.scopes), key_id)))
        secret = settings.jwt_secret
        if settings.jwt_secret_env:
            secret = os.environ.get(settings.jwt_secret_env) or secret
            if not secret:
                raise KeelError(f"gateway: jwt_secret_env names ${settings.jwt_secret_env}, which is not set")
        self._secret = secret
        if settings.open:
            log.warning(
                "keel gateway: no API keys and no JWT secret configured; every caller is tenant %r "
                "with every scope (development only)",
                settings.anonymous_tenant,
            )

    def authenticate(self, credential: str | None) -> Principal:
        """The principal a credential stands for, or :class:`AuthError`."""
        if self.settings.open:
            return Principal(self.settings.anonymous_tenant, frozenset({"*"}))
        if not credential:
            raise AuthError("authentication required: send 'Authorization: Bearer <API key or token>'")
        if credential.count(".") == 2 and self._secret:
            return self._from_token(credential)
        digest = _digest(credential)
        for known, principal in self._keys:
            if hmac.compare_digest(known, digest):
                return principal
        raise AuthError("unknown API key")

    def _from_token(self, token: str) -> Principal:
        import jwt

        assert self._secret is not None
        options = {"require": ["exp", "sub"], "verify_aud": self.settings.jwt_audience is not None}
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.PyJWTError as err:
            raise AuthError(f"invalid token: {err}") from None
        tenant = claims.get(self.settings.jwt_tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise AuthError(f"invalid token: no {self.settings.jwt_tenant_claim!r} claim")
        raw = claims.get("scope", claims.get("scopes", ""))
        scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw] if isinstance(raw, list) else []
        return Principal(tenant, frozenset(scopes), f"jwt:{tenant}:{claims['sub']}")


class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``per_minute``."""

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 100_000):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max_keys = max_keys

    def take(self, key: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            if len(self._buckets) >= self._max_keys and key not in self._buckets:
                self._buckets.clear()  # bounded memory under a flood of distinct keys
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
