"""keel-devtools' check in ``keel doctor`` (row ``state``): recorded executions whose inputs,
outputs, action results or flow events carry a value past the artifact threshold, which belongs in
a blob or the Workspace's artifacts with a reference in state. It reads the recording read-only
(a missing one is not created) and looks at the newest executions only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import keel

__all__ = ["NEWEST", "check_recorded_state"]

#: how many of the newest recorded executions are read
NEWEST = 1000
#: the events whose values become execution state or go back into a prompt
_KINDS = ("execution.started", "execution.completed", "execution.waiting", "action.completed")


def check_recorded_state(context: keel.DoctorContext) -> keel.DoctorResult:
    """No recorded execution holds a value past ``[settings.devtools] artifact_threshold``."""
    from keel_devtools.record import DevToolsSettings, default_path

    settings = keel.parse_options(DevToolsSettings, context.stack.settings("devtools"), where="[settings.devtools]")
    path = Path(settings.path) if settings.path else default_path()
    limit = settings.artifact_threshold
    if not path.is_file():
        return keel.DoctorResult(status="pass", evidence=[f"no recording at {path} yet: nothing recorded to read"])
    kinds = ", ".join("?" for _ in _KINDS)
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            newest = f"SELECT id FROM executions ORDER BY started_at DESC LIMIT {NEWEST}"
            rows = db.execute(
                f"SELECT execution_id, kind, length(data) FROM events WHERE execution_id IN ({newest}) "
                f"AND (kind IN ({kinds}) OR kind LIKE 'flow.%') AND length(data) > ? "
                "ORDER BY length(data) DESC LIMIT 20",
                (*_KINDS, limit),
            ).fetchall()
            read = db.execute(f"SELECT COUNT(*) FROM ({newest})").fetchone()[0]
    except sqlite3.Error as err:
        return keel.DoctorResult(
            status="warn", evidence=[f"the recording {path} cannot be read: {err}"], fix="check the file, or delete it"
        )
    if rows:
        found = [f"execution {e}: {k} event of {n:,} bytes (threshold {limit:,})" for e, k, n in rows]
        return keel.DoctorResult(
            status="fail",
            evidence=[*found, f"read the newest {read} recorded execution(s) in {path}"],
            fix="keep large values in blobs or Workspace artifacts and put their reference in state",
        )
    return keel.DoctorResult(
        status="pass",
        evidence=[
            f"the newest {read} recorded execution(s) in {path}: no input, output or action result over {limit:,} bytes"
        ],
    )
