"""The local web UI (``keel devtools``): executions list, execution page, compare, live follow.

A Starlette app over a recording file. Server-rendered HTML with a little inline script: no
external assets (nothing is fetched from anywhere but this server), no telemetry, no Node
toolchain. Binds 127.0.0.1 unless told otherwise.

The routes are module-level handlers that find the recording on ``app.state.db``: the HTML pages
in :mod:`keel_devtools.pages`, the JSON the live follow polls in :mod:`keel_devtools.api`, the
shared page frame and helpers in :mod:`keel_devtools.markup`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Route

import keel
from keel_devtools.api import api_event, api_events, api_execution, api_list
from keel_devtools.db import RecordingDB
from keel_devtools.pages import compare_page, execution_page, index

__all__ = ["build_app", "serve", "serve_forever"]

ROUTES = [
    Route("/", index),
    Route("/executions/{execution_id}", execution_page),
    Route("/compare", compare_page),
    Route("/api/executions", api_list),
    Route("/api/executions/{execution_id}", api_execution),
    Route("/api/executions/{execution_id}/events", api_events),
    Route("/api/executions/{execution_id}/events/{seq:int}", api_event),
]


def build_app(path: str | Path) -> Starlette:
    """The UI over the recording at ``path`` (read-only: it never writes)."""
    app = Starlette(routes=ROUTES)
    app.state.db = RecordingDB(path)
    return app


@contextmanager
def serve(path: str | Path, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run the UI in a thread on a free port (or ``port``) until the block ends; yields its URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(path), host=host, port=bound, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="keel-devtools-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise keel.KeelError(f"the DevTools UI did not start on {host}:{bound}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def serve_forever(path: str | Path, *, host: str = "127.0.0.1", port: int = 7788) -> None:
    """``keel devtools``: serve until Ctrl-C."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: the DevTools UI binds {host}: anyone who reaches it sees every recorded prompt and answer")
    uvicorn.run(build_app(path), host=host, port=port, log_level="warning")
