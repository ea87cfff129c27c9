"""Run Arize Phoenix with OTLP over HTTP only (run by tests/test_otel_phoenix.py in Phoenix's venv).

Phoenix always starts an OTLP/gRPC receiver on every interface (``[::]:PHOENIX_GRPC_PORT``); it
has no switch to turn it off. This launcher replaces the receiver's start with a no-op, so the
server listens only where PHOENIX_HOST and PHOENIX_PORT say. If Phoenix renames that class, the
import below fails and the test fails with it: never a silent bind to all interfaces.
"""

from __future__ import annotations

import sys

from phoenix.server import grpc_server


async def _no_grpc_receiver(self: object) -> None:
    return None


grpc_server.GrpcServer.__aenter__ = _no_grpc_receiver  # type: ignore[method-assign]

from phoenix.server.main import main  # noqa: E402

sys.argv = ["phoenix", "serve"]
main()
