"""Serve an app on 127.0.0.1 in a background thread, for tests, benchmarks and demos.

    with serve(create_app(runtime)) as base_url:      # e.g. http://127.0.0.1:41234
        httpx.get(f"{base_url}/healthz")

The runtime is started by the app's lifespan, in the server's own event loop, and closed on exit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from keel import KeelError

__all__ = ["serve"]


@contextmanager
def serve(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0, **config: Any
) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port (or ``port``) until the block ends; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    settings: dict[str, Any] = {"log_level": "warning", "lifespan": "on", "ws_ping_interval": None, **config}
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=bound, **settings))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as err:  # surfaced to the caller below
            failure.append(err)

    thread = threading.Thread(target=run, name=f"keel-gateway-{bound}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if failure or not thread.is_alive():
            sock.close()
            raise KeelError(f"the gateway did not start on {host}:{bound}: {failure[0] if failure else 'it exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise KeelError(f"the gateway did not start on {host}:{bound} within {startup_timeout}s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
