"""Servers that fail closed: no open gateway on a public address, RS256/ES256 tokens from a JWKS
with audience and issuer checked, failed logins throttled per client, query tokens switchable."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import keel
from keel.credentials import check_bind, is_loopback
from keel.testing import make_host
from keel_gateway import create_app
from keel_gateway.auth import Authenticator, AuthError
from keel_gateway.settings import GatewaySettings

ISSUER = "https://id.example.com/"
AUDIENCE = "keel-gateway"


def _jwks(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    keys = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
    }
    entries = []
    for kid, key in keys.items():
        algorithm = jwt.algorithms.RSAAlgorithm if kid == "rsa" else jwt.algorithms.ECAlgorithm
        public = json.loads(algorithm.to_jwk(key.public_key()))
        entries.append({**public, "kid": kid, "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": entries}))
    return path, keys


def _token(key: Any, kid: str, algorithm: str, **claims: Any) -> str:
    body = {
        "sub": "u1",
        "tenant": "acme",
        "scope": "read",
        "exp": int(time.time()) + 60,
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    return jwt.encode({**body, **claims}, key, algorithm=algorithm, headers={"kid": kid})


def test_rs256_and_es256_tokens_from_a_jwks_file_with_audience_and_issuer(tmp_path: Path) -> None:
    path, keys = _jwks(tmp_path)
    auth = Authenticator(GatewaySettings(jwt_jwks_file=str(path), jwt_audience=AUDIENCE, jwt_issuer=ISSUER))
    assert auth.authenticate(_token(keys["rsa"], "rsa", "RS256")).tenant == "acme"
    assert auth.authenticate(_token(keys["ec"], "ec", "ES256")).scopes == {"read"}
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "another audience": _token(keys["rsa"], "rsa", "RS256", aud="another-service"),
        "another issuer": _token(keys["rsa"], "rsa", "RS256", iss="https://evil.example.com/"),
        "expired": _token(keys["rsa"], "rsa", "RS256", exp=int(time.time()) - 5),
        "a key not in the JWKS": _token(stranger, "rsa", "RS256"),
        "an unknown kid": _token(stranger, "nobody", "RS256"),
        "HS256 with the public key as secret": jwt.encode(
            {"sub": "u", "tenant": "acme", "exp": int(time.time()) + 60, "aud": AUDIENCE, "iss": ISSUER},
            "public-key-as-a-secret-of-enough-length", algorithm="HS256",
        ),
        "alg none": jwt.encode({"sub": "u", "tenant": "acme", "exp": int(time.time()) + 60}, None, algorithm="none"),
    }  # fmt: skip
    for why, token in refused.items():
        with pytest.raises(AuthError):
            auth.authenticate(token)
            pytest.fail(f"accepted a token with {why}")


def test_a_jwks_without_audience_and_issuer_is_refused(tmp_path: Path) -> None:
    path, _ = _jwks(tmp_path)
    with pytest.raises(keel.KeelError, match="jwt_audience and jwt_issuer"):
        Authenticator(GatewaySettings(jwt_jwks_file=str(path), jwt_audience=AUDIENCE))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_an_open_gateway_refuses_a_public_address(host: str) -> None:
    with pytest.raises(keel.KeelError, match="--insecure"):
        check_bind(GatewaySettings(), host, insecure=False, server="gateway")
    assert "OPEN" in (check_bind(GatewaySettings(), host, insecure=True, server="gateway") or "")
    keyed = GatewaySettings.model_validate({"api_keys": [{"key": "k", "tenant": "t"}]})
    assert check_bind(keyed, host, insecure=False, server="gateway") is None


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com", ""))


def test_keel_serve_refuses_a_public_address_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel_gateway.plugin

    served: list[str] = []
    monkeypatch.setattr(
        keel_gateway.plugin, "_run_server", lambda app, host, port, log_level, grace: served.append(host)
    )
    (tmp_path / "keel.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    from keel.cli import build_cli

    host = make_host(keel_gateway.plugin)
    cli = build_cli(host, keel.load_stack(tmp_path / "keel.toml"))
    host.add_commands(cli)
    refused = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert refused.exit_code != 0 and "refusing to listen on 0.0.0.0" in refused.output and served == []
    loud = CliRunner().invoke(cli, ["serve", "--host", "127.0.0.1"])
    assert loud.exit_code == 0 and "gateway is OPEN" in loud.output and served == ["127.0.0.1"]
    insecure = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--insecure"])
    assert insecure.exit_code == 0 and served == ["127.0.0.1", "0.0.0.0"]


def _runtime(**settings: Any) -> tuple[keel.Runtime, Any]:
    runtime = keel.Runtime(make_host())
    return runtime, create_app(runtime, {"api_keys": [{"key": "right-key", "tenant": "acme"}], **settings})


async def test_failed_logins_are_throttled_per_client() -> None:
    runtime, app = _runtime(failed_auth_burst=5, failed_auth_per_minute=1)
    async with runtime:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as guesser:
            codes = [
                (await guesser.get("/v1/runnables", headers={"X-API-Key": f"guess-{i}"})).status_code for i in range(8)
            ]
            assert codes == [401] * 5 + [429] * 3
            blocked = await guesser.get("/v1/runnables", headers={"X-API-Key": "right-key"})
            assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0, "even the right key waits"
        other = httpx.ASGITransport(app=app, client=("198.51.100.2", 5000))
        async with httpx.AsyncClient(transport=other, base_url="http://gw") as honest:
            assert (await honest.get("/v1/runnables", headers={"X-API-Key": "right-key"})).status_code == 200


async def test_query_tokens_can_be_turned_off() -> None:
    for allowed, expected in ((True, 200), (False, 401)):
        runtime, app = _runtime(allow_query_token=allowed)
        transport = httpx.ASGITransport(app=app)
        async with runtime, httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.get("/v1/runnables", params={"access_token": "right-key"})
            assert response.status_code == expected
            assert (await client.get("/v1/runnables", headers={"X-API-Key": "right-key"})).status_code == 200
