"""Keys, tokens, scopes and rate limits, without a server."""

from __future__ import annotations

import hashlib
import time

import jwt
import pytest

from keel import KeelError
from keel_gateway.auth import Authenticator, AuthError, RateLimiter
from keel_gateway.settings import GatewaySettings

SECRET = "a-secret-that-is-long-enough-for-hs256!"


def settings(**extra: object) -> GatewaySettings:
    keys = [
        {"key": "plain-key", "tenant": "acme", "scopes": ["read"]},
        {"sha256": hashlib.sha256(b"hashed-key").hexdigest(), "tenant": "globex"},
    ]
    return GatewaySettings.model_validate({"api_keys": keys, "jwt_secret": SECRET, **extra})


def test_api_keys_map_to_tenant_and_scopes() -> None:
    auth = Authenticator(settings())
    acme = auth.authenticate("plain-key")
    assert acme.tenant == "acme" and acme.allows("read") and not acme.allows("run")
    with pytest.raises(AuthError) as denied:
        acme.require("cancel")
    assert denied.value.status == 403
    assert auth.authenticate("hashed-key").tenant == "globex"
    with pytest.raises(AuthError):
        auth.authenticate("nope")
    with pytest.raises(AuthError):
        auth.authenticate(None)


def test_tokens_are_checked() -> None:
    auth = Authenticator(settings(jwt_audience="keel"))
    claims = {"sub": "u1", "tenant": "acme", "scope": "run read", "exp": int(time.time()) + 60, "aud": "keel"}
    principal = auth.authenticate(jwt.encode(claims, SECRET, algorithm="HS256"))
    assert principal.tenant == "acme" and principal.scopes == {"run", "read"}
    for bad in (
        jwt.encode({**claims, "exp": int(time.time()) - 5}, SECRET, algorithm="HS256"),
        jwt.encode({**claims, "aud": "other"}, SECRET, algorithm="HS256"),
        jwt.encode(claims, "another-secret-that-is-long-enough!!", algorithm="HS256"),
        jwt.encode({k: v for k, v in claims.items() if k != "tenant"}, SECRET, algorithm="HS256"),
    ):
        with pytest.raises(AuthError):
            auth.authenticate(bad)


def test_misconfiguration_is_an_error_that_says_what_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(KeelError, match="NO_SUCH_KEY"):
        Authenticator(GatewaySettings.model_validate({"api_keys": [{"key_env": "NO_SUCH_KEY", "tenant": "t"}]}))
    with pytest.raises(KeelError, match="unknown scope"):
        Authenticator(GatewaySettings.model_validate({"api_keys": [{"key": "k", "tenant": "t", "scopes": ["root"]}]}))


def test_open_mode_is_the_anonymous_tenant() -> None:
    principal = Authenticator(GatewaySettings()).authenticate(None)
    assert principal.tenant == "default" and principal.allows("cancel")


def test_rate_limiter_is_a_token_bucket_per_key() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert [limiter.take("a"), limiter.take("a")] == [0.0, 0.0]
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0
