"""``http_fetch``: GET a URL on an allow-listed host, within a time and a size limit.

Redirects are followed by hand, each hop checked against the allow list again; the body is
streamed and reading stops at the size limit (the rest is never downloaded).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

import keel

if TYPE_CHECKING:
    import httpx

__all__ = ["HostNotAllowed", "host_allowed", "fetch"]

#: response headers worth handing to a model; the rest is noise or tracking
KEPT_HEADERS = ("content-type", "content-length", "content-language", "last-modified", "etag", "location", "date")


class HostNotAllowed(keel.ActionDenied):
    """A URL whose host is not on the allow list (``[settings.toolbox] allow_hosts``)."""

    code = "toolbox.host_not_allowed"


def _split(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise keel.ActionError(f"only http and https URLs can be fetched, not {parts.scheme or 'a relative URL'!r}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise keel.ActionError(f"the URL {url!r} has no host")
    if parts.username or parts.password:
        raise keel.ActionError("URLs with credentials (user:password@host) are refused")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise keel.ActionError(f"the URL {url!r} has a bad port: {err}") from None
    return parts.scheme, host, port


def host_allowed(url: str, allow: list[str]) -> bool:
    """Whether ``url``'s host matches an entry: ``host``, ``host:port`` or ``*.domain``."""
    _scheme, host, port = _split(url)
    for entry in allow:
        entry = entry.lower().strip()
        name, _, want_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if want_port and not want_port.isdigit():
            name, want_port = entry, ""
        if want_port and int(want_port) != port:
            continue
        if name.startswith("*."):
            if not _is_ip(host) and host.endswith(name[1:]) and host != name[2:]:
                return True
        elif host == name:
            return True
    return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True  # a wildcard names DNS subdomains, never addresses


def _check(url: str, allow: list[str]) -> None:
    if not host_allowed(url, allow):
        host = _split(url)[1]
        allowed = ", ".join(allow) or "none (set allow_hosts in [settings.toolbox])"
        raise HostNotAllowed(f"host {host!r} is not on the allow list of http_fetch; allowed hosts: {allowed}")


async def fetch(
    url: str,
    *,
    allow: list[str],
    timeout: float,
    max_bytes: int,
    max_redirects: int,
    client: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    import httpx

    _check(url, allow)
    redirects: list[str] = []
    own = client is None
    client = client or httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(timeout), trust_env=False)
    try:
        with anyio.fail_after(timeout):
            while True:
                async with client.stream("GET", url) as response:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        if len(redirects) >= max_redirects:
                            raise keel.ActionError(f"more than {max_redirects} redirects, last to {location!r}")
                        url = str(response.url.join(location))
                        _check(url, allow)  # a redirect may not lead off the allow list
                        redirects.append(url)
                        continue
                    body = bytearray()
                    truncated = False
                    async for chunk in response.aiter_bytes():  # decoded: a compressed bomb stops at the cap too
                        room = max_bytes - len(body)
                        if len(chunk) > room:
                            body += chunk[:room]
                            truncated = True
                            break
                        body += chunk
                    encoding = response.encoding or "utf-8"
                    try:
                        text = bytes(body).decode(encoding, errors="replace")
                    except LookupError:
                        text = bytes(body).decode("utf-8", errors="replace")
                    if truncated:
                        text += f"\n[... truncated by keel-toolbox at {max_bytes} bytes ...]"
                    return {
                        "url": url, "status": response.status_code, "reason": response.reason_phrase,
                        "headers": {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers},
                        "text": text, "truncated": truncated, "bytes": len(body), "redirects": redirects,
                    }  # fmt: skip
    except TimeoutError:
        raise keel.ActionError(f"fetching {url!r} took longer than {timeout}s") from None
    except httpx.HTTPError as err:
        raise keel.ActionError(f"fetching {url!r} failed: {type(err).__name__}: {err}") from None
    finally:
        if own:
            await client.aclose()
