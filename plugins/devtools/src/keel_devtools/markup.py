"""The DevTools UI's shared HTML pieces: the page frame, escaping, the list filters, event summaries.

Used by :mod:`keel_devtools.pages` (HTML) and :mod:`keel_devtools.api` (JSON); the app itself is
built in :mod:`keel_devtools.web`.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from keel_devtools.db import ExecutionFilter, RecordingDB
from keel_devtools.flowgraph import CSS as FLOW_CSS

__all__ = [
    "CSS",
    "FINISHED",
    "PAGE_SIZE",
    "db_of",
    "esc",
    "filters_of",
    "missing",
    "number",
    "page",
    "summary_text",
    "when",
]

PAGE_SIZE = 50
FINISHED = ("completed", "failed", "cancelled")

CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:8px 16px}header a{color:#fff;text-decoration:none;margin-right:16px}
main{padding:12px 16px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e3e6eb;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eef0f4;position:sticky;top:0}tr.clickable:hover{background:#eef4ff;cursor:pointer}
.completed{color:#1a7f37}.failed{color:#c62828}.cancelled{color:#8a6d00}.running,.waiting{color:#1565c0}
form.filters{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:8px}form.filters label{display:flex;flex-direction:column;font-size:11px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:8px 0}.card{background:#fff;border:1px solid #e3e6eb;padding:6px 10px}
.card b{display:block;font-size:16px}pre{background:#fff;border:1px solid #e3e6eb;padding:6px;white-space:pre-wrap;
word-break:break-word;max-height:420px;overflow:auto;margin:4px 0}
.wf{background:#fff;border:1px solid #e3e6eb}.wf-row{display:flex;align-items:center;height:18px}
.wf-label{width:300px;flex:none;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;padding:0 6px;font-size:12px}
.wf-track{position:relative;flex:1;height:12px}.bar{position:absolute;height:12px;min-width:2px;border-radius:2px}
.bar.execution{background:#9aa5b8}.bar.model{background:#6a8dff}.bar.action{background:#2fb37a}
.bar.step{background:#a37cf0}.bar.wait{background:#f0b43c}.bar.retry{background:#e5534b;width:3px}
.bar.failed,.bar.denied{outline:2px solid #c62828}
.diff{background:#fffbe6}tr.differs td{background:#fff4f4}tr#step-first td{background:#ffd7d7}
#first-divergence{border:2px solid #c62828;background:#fff;padding:6px 10px;margin:8px 0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}.muted{color:#6b7385}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def page(title: str, body: str, script: str = "") -> HTMLResponse:
    doc = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)} · keel devtools</title>"
        f"<style>{CSS}{FLOW_CSS}</style></head><body><header><a href='/'>keel devtools</a>"
        f"<span class=muted>local recording, nothing leaves this machine</span></header><main>{body}</main>"
        f"<script>{script}</script></body></html>"
    )
    return HTMLResponse(
        doc,
        headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            "Cache-Control": "no-store",
        },
    )


def number(value: str | None, cast: Any) -> Any:
    if value in (None, ""):
        return None
    try:
        return cast(value)
    except ValueError:
        return None


def filters_of(request: Request) -> ExecutionFilter:
    q = request.query_params
    since = q.get("since") or None
    since_ts = None
    if since:
        try:
            since_ts = datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp()
        except ValueError:
            since_ts = number(since, float)
    return ExecutionFilter(
        status=q.get("status") or None,
        runnable=q.get("runnable") or None,
        tenant=q.get("tenant") or None,
        since=since_ts,
        min_tokens=number(q.get("min_tokens"), int),
        min_cost=number(q.get("min_cost"), float),
        error=q.get("error") or None,
    )


def summary_text(kind: str, payload: dict[str, Any]) -> str:
    if kind == "model.delta":
        return str(payload.get("text", ""))
    if kind == "model.request":
        return f"{payload.get('model', '')}: {payload.get('messages', '')} messages"
    if kind == "model.response":
        usage = payload.get("usage") or {}
        return (
            f"{payload.get('finish_reason', '')}, {usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)} tokens"
        )
    if kind == "model.tool_call":
        return f"{payload.get('name')}({json.dumps(payload.get('arguments'), ensure_ascii=False)})"
    if kind.startswith("action."):
        extra = payload.get("result") or (payload.get("error") or {}).get("message") or payload.get("arguments") or ""
        return f"{payload.get('action', '')} {extra if isinstance(extra, str) else json.dumps(extra)}"
    if kind.startswith("execution."):
        return str(payload.get("error") or payload.get("reason") or payload.get("agent") or payload.get("flow") or "")
    return json.dumps(payload, ensure_ascii=False, default=str)[:160]


def missing(execution_id: str) -> HTMLResponse:
    body = f"<h2>No recorded execution {esc(execution_id)}</h2><p><a href='/'>back to the list</a></p>"
    response = page("not found", body)
    response.status_code = 404
    return response


def db_of(request: Request) -> RecordingDB:
    """The recording the app was built over."""
    return request.app.state.db  # type: ignore[no-any-return]
