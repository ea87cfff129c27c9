from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would have: no KEEL_* switches from the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(extra)
    return env


def wait_for_status(http: Any, path: str, status: str, seconds: float = 30.0) -> dict[str, Any]:
    """GET ``path`` (an execution view) until its status is ``status`` or ``seconds`` pass; the last
    view either way, so the caller's assertion shows what it was instead."""
    deadline = time.monotonic() + seconds
    while True:
        view: dict[str, Any] = http.get(path).json()
        if view.get("status") == status or time.monotonic() > deadline:
            return view
        time.sleep(0.05)
