"""Who is calling a Keel server: API keys and bearer tokens mapped to a tenant and scopes.

The gateway (``keel serve``) and ``keel mcp serve --http`` identify callers the same way, from
the same kind of settings table, so they meet here rather than importing each other:

- **API keys**, each for one tenant and a list of scopes, kept as ``key_env`` (an environment
  variable), ``sha256`` (the key's hex digest) or ``key`` (development only);
- **HS256 tokens** signed with a shared secret (``jwt_secret_env``);
- **RS256/ES256 tokens** from an identity provider, checked against its JWKS (``jwt_jwks_file`` or
  ``jwt_jwks_url``), which requires ``jwt_audience`` and ``jwt_issuer``: a token for another
  service or from another issuer is refused.

Tokens are checked with PyJWT (imported on first use; ``pyjwt[crypto]`` for RS256/ES256). With no
key and no token source configured a server is *open*: every caller is one tenant with every
scope. :func:`check_bind` refuses that on any address but loopback unless asked explicitly.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel.errors import KeelError

__all__ = [
    "ApiKey",
    "AuthError",
    "Authenticator",
    "CredentialSettings",
    "FailureThrottle",
    "Principal",
    "RateLimiter",
    "check_bind",
    "is_loopback",
]

log = logging.getLogger("keel.credentials")

#: asymmetric algorithms accepted from a JWKS (never ``none``, never HMAC with a public key)
ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA")


class AuthError(KeelError):
    """The caller could not be identified (401), lacks a scope (403) or failed too often (429)."""

    code = "auth.failed"

    def __init__(self, message: str, status: int = 401, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ApiKey(BaseModel):
    """One API key: how to recognise it, and the tenant and scopes it stands for."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str | None = Field(default=None, description="a name for logs and rate limits (default: a hash prefix)")
    key: str | None = Field(
        default=None, description="the key itself (development only: secrets do not belong in files)"
    )
    key_env: str | None = Field(default=None, description="environment variable holding the key")
    sha256: str | None = Field(default=None, description="hex SHA-256 of the key")
    tenant: str
    scopes: list[str] = Field(default_factory=lambda: ["*"])


class CredentialSettings(BaseModel):
    """The credential part of a server's settings table (``[settings.gateway]``, ``[settings.mcp]``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    api_keys: list[ApiKey] = Field(default_factory=list)
    jwt_secret: str | None = Field(default=None, description="HS256 secret (development only; prefer jwt_secret_env)")
    jwt_secret_env: str | None = None
    jwt_jwks_file: str | None = Field(default=None, description="a JWKS file: RS256/ES256 public keys")
    jwt_jwks_url: str | None = Field(default=None, description="the identity provider's JWKS URL (fetched with httpx)")
    jwt_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256"], description="asymmetric algorithms accepted from the JWKS"
    )
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_tenant_claim: str = "tenant"
    anonymous_tenant: str = "default"
    allow_query_token: bool = Field(
        default=True,
        description="accept ?access_token= (browsers' EventSource and WebSocket cannot send headers); "
        "it ends up in access logs and browser history, so turn it off when no browser needs it",
    )
    failed_auth_per_minute: float = Field(
        default=10.0, gt=0, description="failed logins allowed per client address, refilled per minute"
    )
    failed_auth_burst: int = Field(default=10, ge=1, description="failed logins a client may make at once")

    @property
    def open(self) -> bool:
        """No key and no token source configured: every caller is the anonymous tenant."""
        return not self.api_keys and not (
            self.jwt_secret or self.jwt_secret_env or self.jwt_jwks_file or self.jwt_jwks_url
        )


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
    """Maps a credential (an API key, or a JWT) to a :class:`Principal`.

    :param scopes: the scopes the server checks (an API key naming another is a config error).
    :param server: the server's name, for error messages (``gateway``, ``mcp``).
    """

    def __init__(self, settings: CredentialSettings, scopes: Iterable[str], *, server: str = "gateway"):
        self.settings = settings
        self.server = server
        known = tuple(scopes)
        self._keys: list[tuple[bytes, Principal]] = []
        for entry in settings.api_keys:
            if entry.sha256:
                digest = bytes.fromhex(entry.sha256)
            elif entry.key_env:
                value = os.environ.get(entry.key_env)
                if not value:
                    raise KeelError(
                        f"{server}: API key for tenant {entry.tenant!r} reads ${entry.key_env}, which is not set; "
                        f"set it or remove the key from [settings.{server}]"
                    )
                digest = _digest(value)
            elif entry.key:
                digest = _digest(entry.key)
            else:
                raise KeelError(f"{server}: an API key for tenant {entry.tenant!r} needs key_env, sha256 or key")
            unknown = set(entry.scopes) - {*known, "*"}
            if unknown:
                raise KeelError(f"{server}: unknown scope(s) {sorted(unknown)}; known: {', '.join(known)} or *")
            key_id = entry.id or f"key-{digest.hex()[:8]}"
            self._keys.append((digest, Principal(entry.tenant, frozenset(entry.scopes), key_id)))
        secret = settings.jwt_secret
        if settings.jwt_secret_env:
            secret = os.environ.get(settings.jwt_secret_env) or secret
            if not secret:
                raise KeelError(f"{server}: jwt_secret_env names ${settings.jwt_secret_env}, which is not set")
        self._secret = secret
        self._jwks: Any = None
        self._jwks_fetched = 0.0
        if settings.jwt_jwks_file or settings.jwt_jwks_url:
            if not (settings.jwt_audience and settings.jwt_issuer):
                raise KeelError(
                    f"{server}: tokens checked against a JWKS need jwt_audience and jwt_issuer in "
                    f"[settings.{server}], so that a token issued for another service or by another issuer is refused"
                )
            bad = set(settings.jwt_algorithms) - set(ASYMMETRIC)
            if bad or not settings.jwt_algorithms:
                raise KeelError(f"{server}: jwt_algorithms must be some of {', '.join(ASYMMETRIC)}; got {sorted(bad)}")
            self._jwks = self._load_jwks()
        if settings.open:
            log.warning(
                "keel %s: no API keys and no token source configured; every caller is tenant %r "
                "with every scope (development only)",
                server,
                settings.anonymous_tenant,
            )

    # ------------------------------------------------------------------------------------- JWKS

    def _load_jwks(self) -> Any:
        import jwt

        settings = self.settings
        try:
            if settings.jwt_jwks_file:
                data = json.loads(Path(settings.jwt_jwks_file).read_text())
            else:
                import httpx

                assert settings.jwt_jwks_url is not None
                data = httpx.get(settings.jwt_jwks_url, timeout=5.0, follow_redirects=False).raise_for_status().json()
            keys = jwt.PyJWKSet.from_dict(data)
        except (OSError, ValueError, jwt.PyJWTError) as err:
            where = settings.jwt_jwks_file or settings.jwt_jwks_url
            raise KeelError(f"{self.server}: could not load the JWKS from {where}: {err}") from err
        except Exception as err:  # httpx's errors: the identity provider did not answer
            raise KeelError(f"{self.server}: could not fetch the JWKS from {settings.jwt_jwks_url}: {err}") from err
        self._jwks_fetched = time.monotonic()
        return keys

    def _jwk(self, kid: str | None) -> Any:
        for key in self._jwks.keys:
            if kid is None or key.key_id == kid:
                return key
        # a key the provider rotated in: fetch its JWKS again, at most once a minute
        if self.settings.jwt_jwks_url and time.monotonic() - self._jwks_fetched > 60:
            try:
                self._jwks = self._load_jwks()
            except KeelError as err:
                log.warning("%s", err)
            return next((key for key in self._jwks.keys if key.key_id == kid), None)
        return None

    # ---------------------------------------------------------------------------- authenticate

    def authenticate(self, credential: str | None) -> Principal:
        """The principal a credential stands for, or :class:`AuthError`."""
        if self.settings.open:
            return Principal(self.settings.anonymous_tenant, frozenset({"*"}))
        if not credential:
            raise AuthError("authentication required: send 'Authorization: Bearer <API key or token>'")
        if credential.count(".") == 2 and (self._secret or self._jwks is not None):
            return self._from_token(credential)
        digest = _digest(credential)
        for known, principal in self._keys:
            if hmac.compare_digest(known, digest):
                return principal
        raise AuthError("unknown API key")

    def _from_token(self, token: str) -> Principal:
        import jwt

        settings = self.settings
        options = {"require": ["exp", "sub"], "verify_aud": settings.jwt_audience is not None}
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if self._jwks is not None and algorithm in settings.jwt_algorithms:
                jwk = self._jwk(header.get("kid"))
                if jwk is None:
                    raise AuthError("invalid token: signed with a key the JWKS does not hold")
                key: Any = jwk.key
                algorithms = [algorithm]
                options["require"] = ["exp", "sub", "aud", "iss"]
            elif self._secret is not None and algorithm == "HS256":
                key, algorithms = self._secret, ["HS256"]
            else:
                raise AuthError(f"invalid token: algorithm {algorithm!r} is not accepted here")
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=settings.jwt_audience, issuer=settings.jwt_issuer,
                options=options,  # type: ignore[arg-type]
            )  # fmt: skip
        except jwt.PyJWTError as err:
            raise AuthError(f"invalid token: {err}") from None
        tenant = claims.get(settings.jwt_tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise AuthError(f"invalid token: no {settings.jwt_tenant_claim!r} claim")
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

    def _level(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def take(self, key: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        tokens = self._level(key, now)
        if tokens >= 1.0:
            if len(self._buckets) >= self._max_keys and key not in self._buckets:
                self._buckets.clear()  # bounded memory under a flood of distinct keys
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may spend a token again (0.0: now), without spending one."""
        tokens = self._level(key, time.monotonic())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


class FailureThrottle:
    """Failed logins per client address: past the burst, the client is refused (429) until its
    bucket refills, whatever credential it sends, so that keys cannot be guessed at speed."""

    def __init__(self, settings: CredentialSettings):
        self._limiter = RateLimiter(settings.failed_auth_per_minute, settings.failed_auth_burst)

    def check(self, client: str) -> None:
        wait = self._limiter.wait(client)
        if wait > 0:
            raise AuthError(
                f"too many failed logins from this address; try again in {int(wait) + 1}s", 429, retry_after=wait
            )

    def failed(self, client: str) -> None:
        self._limiter.take(client)


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(
    settings: CredentialSettings, host: str, *, insecure: bool, server: str, flag: str = "--insecure"
) -> str | None:
    """Refuse to serve an open server (no credentials) on an address other machines reach.

    :returns: a warning to print loudly when the server is open (on loopback, or with ``insecure``),
        ``None`` when credentials are configured.
    :raises KeelError: open, on a non-loopback address, without ``insecure``.
    """
    if not settings.open:
        return None
    if not is_loopback(host) and not insecure:
        raise KeelError(
            f"{server}: refusing to listen on {host} with no credentials configured: anyone who reaches it "
            f"would act as tenant {settings.anonymous_tenant!r} with every scope. Configure api_keys or a "
            f"token source in [settings.{server}], bind 127.0.0.1, or pass {flag} if something in front "
            "of it authenticates every request"
        )
    return (
        f"WARNING: {server} is OPEN on {host}: no API keys or tokens are configured, so every caller is "
        f"tenant {settings.anonymous_tenant!r} with every scope. Development only."
    )
