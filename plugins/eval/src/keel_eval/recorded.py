"""A recorded execution as a case: its input, its output as the expected output to edit, and its action
results as fixtures, so the case runs again with no side effects.

The file format is DevTools' export (read here without importing DevTools): JSON Lines, UTF-8; line 1
a header ``{"format": "keel-execution", "version": 1, "execution_id", "kind", "runnable", "tenant",
"status", "input", "output", "started_at", "ended_at"}``; each following line one RuntimeEvent as
``event.model_dump(mode="json")``, in sequence order.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel_eval.errors import EvalError
from keel_eval.trace import read_trace

__all__ = ["FORMAT", "Recorded", "case_from_recording", "find_recording", "read_recording", "write_recording"]

FORMAT = "keel-execution"
VERSION = 1


@dataclass
class Recorded:
    header: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""


def read_recording(path: str | Path) -> Recorded:
    """Read one exported execution; every problem names the file and the line."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise EvalError(f"{file}: cannot read the recorded execution: {err}") from err
    except UnicodeDecodeError as err:
        raise EvalError(f"{file}: not UTF-8 text ({err}); a recorded execution is JSON Lines") from err
    rows = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise EvalError(f"{file}: empty; a recorded execution starts with a keel-execution header line")
    parsed = []
    for number, line in rows:
        try:
            parsed.append((number, json.loads(line)))
        except ValueError as err:
            raise EvalError(f"{file}: line {number} is not JSON: {err}") from err
    (_, header), events = parsed[0], parsed[1:]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise EvalError(
            f"{file}: line 1 is not a keel-execution header (format={got!r}); "
            "export an execution with DevTools ('keel devtools export ID') to get one"
        )
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise EvalError(
            f"{file}: format version {version!r} is newer than this keel-eval reads ({VERSION}); upgrade keel-eval"
        )
    if not header.get("execution_id"):
        raise EvalError(f"{file}: line 1 has no execution_id")
    out = []
    for number, event in events:
        if not isinstance(event, dict) or "kind" not in event:
            raise EvalError(f"{file}: line {number} is not a RuntimeEvent (an object with a kind)")
        if event.get("execution_id") not in (None, header["execution_id"]):
            raise EvalError(
                f"{file}: line {number} belongs to execution {event.get('execution_id')!r}, "
                f"not {header['execution_id']!r}; one file holds one execution"
            )
        out.append(event)
    return Recorded(header=header, events=out, source=str(file))


def find_recording(ref: str, folder: str | Path) -> Path:
    """A file path as given, or the exported file of execution ``ref`` in ``folder``."""
    path = Path(ref)
    if path.is_file():
        return path
    directory = Path(folder)
    for direct in (directory / f"{ref}.jsonl", Path(f"{ref}.jsonl")):  # `keel devtools export ID` writes the latter
        if direct.is_file():
            return direct
    if directory.is_dir():
        for candidate in sorted(directory.glob("*.jsonl")):
            with candidate.open(encoding="utf-8") as handle:
                first = handle.readline()
            try:
                header = json.loads(first)
            except ValueError:
                continue
            if isinstance(header, dict) and header.get("execution_id") == ref:
                return candidate
    raise EvalError(
        f"no recorded execution {ref!r}: not a file, and not in {directory}/. Export it first "
        f"('keel devtools export {ref} -o {directory}/{ref}.jsonl') or pass the file's path"
    )


def _fixture_result(call: Any) -> dict[str, Any]:
    fixture: dict[str, Any] = {"action": call.action, "arguments": call.arguments}
    if call.ok is False:
        fixture["error"] = {k: str(v) for k, v in (call.error or {"type": "error", "message": ""}).items()}
    else:
        fixture["result"] = call.result
    return fixture


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "case"


def case_from_recording(recorded: Recorded, *, name: str | None = None) -> dict[str, Any]:
    """The case (as YAML-ready data) for a recorded execution."""
    header = recorded.header
    trace = read_trace(recorded.events)
    runnable = str(header.get("runnable") or header.get("kind") or "")
    execution_id = str(header["execution_id"])
    evaluators: list[Any] = ["equals"]
    if trace.calls:
        evaluators.append({"trajectory": {"calls": [c.action for c in trace.calls], "mode": "in_order"}})
    case: dict[str, Any] = {
        "name": name or _slug(f"{runnable}-{execution_id[-8:]}"),
        "description": f"recorded execution {execution_id} of {runnable or 'a runnable'} ({header.get('status')})",
        "input": header.get("input"),
        "expected": header.get("output"),
        "metadata": {
            "from_execution": execution_id,
            "runnable": runnable,
            "status": header.get("status"),
            "recorded_at": header.get("started_at"),
        },
        "evaluators": evaluators,
    }
    if trace.calls:
        case["fixtures"] = {"actions": [_fixture_result(c) for c in trace.calls]}
    return case


def write_recording(path: str | Path, header: dict[str, Any], events: list[dict[str, Any]]) -> Path:
    """Write an execution file in the export format (tests, and tools without DevTools)."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"format": FORMAT, "version": VERSION, **header}, ensure_ascii=False, default=str)]
    lines += [json.dumps(event, ensure_ascii=False, default=str) for event in events]
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file
