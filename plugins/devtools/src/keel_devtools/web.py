"""The local web UI (``keel devtools``): executions list, execution page, compare, live follow.

A Starlette app over a recording file. Server-rendered HTML with a little inline script: no
external assets (nothing is fetched from anywhere but this server), no telemetry, no Node
toolchain. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import html
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

import keel
from keel_devtools.db import ExecutionFilter, RecordingDB
from keel_devtools.flowgraph import CSS as FLOW_CSS
from keel_devtools.flowgraph import flow_drawing, path_taken, render_svg
from keel_devtools.views import align, step_tree, waterfall

__all__ = ["build_app", "serve", "serve_forever"]

PAGE_SIZE = 50
FINISHED = ("completed", "failed", "cancelled")

_CSS = """
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


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _page(title: str, body: str, script: str = "") -> HTMLResponse:
    doc = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)} · keel devtools</title>"
        f"<style>{_CSS}{FLOW_CSS}</style></head><body><header><a href='/'>keel devtools</a>"
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


def _number(value: str | None, cast: Any) -> Any:
    if value in (None, ""):
        return None
    try:
        return cast(value)
    except ValueError:
        return None


def _filters(request: Request) -> ExecutionFilter:
    q = request.query_params
    since = q.get("since") or None
    since_ts = None
    if since:
        try:
            since_ts = datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp()
        except ValueError:
            since_ts = _number(since, float)
    return ExecutionFilter(
        status=q.get("status") or None,
        runnable=q.get("runnable") or None,
        tenant=q.get("tenant") or None,
        since=since_ts,
        min_tokens=_number(q.get("min_tokens"), int),
        min_cost=_number(q.get("min_cost"), float),
        error=q.get("error") or None,
    )


def _summary_text(kind: str, payload: dict[str, Any]) -> str:
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


def build_app(path: str | Path) -> Starlette:
    """The UI over the recording at ``path`` (read-only: it never writes)."""
    db = RecordingDB(path)

    def missing(execution_id: str) -> HTMLResponse:
        body = f"<h2>No recorded execution {_e(execution_id)}</h2><p><a href='/'>back to the list</a></p>"
        response = _page("not found", body)
        response.status_code = 404
        return response

    async def index(request: Request) -> Response:
        filters = _filters(request)
        before = request.query_params.get("before") or None
        rows, cursor = db.page(filters, limit=PAGE_SIZE, before=before)
        total = db.count(filters)
        q = request.query_params
        statuses = "".join(
            f"<option {'selected' if q.get('status') == s else ''}>{s}</option>"
            for s in ("", "running", "waiting", "completed", "failed", "cancelled")
        )
        runnables = "".join(
            f"<option {'selected' if q.get('runnable') == r else ''}>{_e(r)}</option>" for r in ["", *db.runnables()]
        )
        form = (
            "<form class=filters id=filters method=get>"
            f"<label>status<select name=status id=f-status>{statuses}</select></label>"
            f"<label>runnable<select name=runnable id=f-runnable>{runnables}</select></label>"
            f"<label>tenant<input name=tenant value='{_e(q.get('tenant'))}' size=8></label>"
            f"<label>since (UTC)<input name=since value='{_e(q.get('since'))}' placeholder=2026-12-01 size=10></label>"
            f"<label>min tokens<input name=min_tokens value='{_e(q.get('min_tokens'))}' size=6></label>"
            f"<label>min cost $<input name=min_cost value='{_e(q.get('min_cost'))}' size=6></label>"
            f"<label>error contains<input name=error value='{_e(q.get('error'))}' size=12 placeholder='* = any'></label>"
            "<label>&nbsp;<button id=apply>filter</button></label>"
            "<label>&nbsp;<button type=button id=compare disabled>compare 2 selected</button></label></form>"
        )
        body_rows = []
        for r in rows:
            tokens = r["input_tokens"] + r["output_tokens"]
            duration = f"{(r['ended_at'] - r['started_at']):.3f}s" if r["ended_at"] and r["started_at"] else ""
            lost = r["dropped"] + r["missing"]
            body_rows.append(
                f"<tr data-id='{_e(r['id'])}'><td><input type=checkbox class=pick value='{_e(r['id'])}'></td>"
                f"<td><a href='/executions/{_e(r['id'])}'>{_e(r['id'])}</a></td><td>{_e(r['runnable'])}</td>"
                f"<td>{_e(r['kind'])}</td><td class='{_e(r['status'])}'>{_e(r['status'])}</td>"
                f"<td>{_when(r['started_at'])}</td><td>{duration}</td><td>{r['events']}</td><td>{tokens}</td>"
                f"<td>${r['cost']:.6f}</td><td>{lost or ''}</td><td>{_e((r['error'] or '')[:80])}</td></tr>"
            )
        args = {k: v for k, v in q.items() if k != "before" and v}
        nav = ""
        if cursor:
            from urllib.parse import urlencode

            nav = f"<p><a id=next href='/?{_e(urlencode({**args, 'before': cursor}))}'>next page →</a></p>"
        table = (
            f"<p><b id=total>{total}</b> executions{' (filtered)' if args else ''}; newest first.</p>"
            "<table id=executions><thead><tr><th></th><th>execution</th><th>runnable</th><th>kind</th><th>status</th>"
            "<th>started (UTC)</th><th>duration</th><th>events</th><th>tokens</th><th>cost</th><th>lost</th>"
            f"<th>error</th></tr></thead><tbody>{''.join(body_rows)}</tbody></table>{nav}"
        )
        script = """
const picks=()=>[...document.querySelectorAll('.pick:checked')].map(x=>x.value);
document.querySelectorAll('.pick').forEach(b=>b.addEventListener('change',()=>{
  document.getElementById('compare').disabled=picks().length!==2;}));
document.getElementById('compare').addEventListener('click',()=>{const [a,b]=picks();
  location.href='/compare?a='+encodeURIComponent(a)+'&b='+encodeURIComponent(b);});
"""
        return _page("executions", f"<h2>Executions</h2>{form}{table}", script)

    async def execution_page(request: Request) -> Response:
        execution_id = request.path_params["execution_id"]
        summary = db.execution(execution_id)
        if summary is None:
            return missing(execution_id)
        rows = db.events(execution_id)
        first = rows[0]["time"] if rows else 0.0
        span = max((rows[-1]["time"] - first) if rows else 0.0, 1e-6)
        cards = "".join(
            f"<div class=card>{label}<b id='{key}'>{value}</b></div>"
            for key, label, value in [
                ("status", "status", f"<span class='{_e(summary['status'])}'>{_e(summary['status'])}</span>"),
                ("runnable", "runnable", _e(summary["runnable"])),
                ("event-count", "events", summary["events"]),
                ("tokens", "tokens", f"{summary['input_tokens']} in / {summary['output_tokens']} out"),
                ("cost", "cost", f"${summary['cost']:.6f}" + (" (some unpriced)" if summary["unpriced"] else "")),
                ("duration", "duration", f"{span * 1000:.1f} ms"),
                ("lost", "lost events", f"{summary['dropped']} dropped, {summary['missing']} missing"),
            ]
        )
        bars = []
        for bar in waterfall(rows):
            left = (bar.start - first) / span * 100
            width = max((bar.end - bar.start) / span * 100, 0.2)
            title = f"{bar.label} {bar.status} {(bar.end - bar.start) * 1000:.2f} ms {bar.detail}"
            bars.append(
                f"<div class=wf-row data-kind='{bar.kind}'><div class=wf-label title='{_e(title)}'>{_e(bar.label)}"
                f" <span class=muted>{(bar.end - bar.start) * 1000:.1f} ms</span></div><div class=wf-track>"
                f"<div class='bar {bar.kind} {bar.status}' style='left:{left:.3f}%;width:{width:.3f}%' "
                f"title='{_e(title)}'></div></div></div>"
            )
        tree = "".join(
            f"<tr><td style='padding-left:{8 + 16 * s.depth}px'>{_e(s.step.split('/')[-1])}</td><td>{s.events}</td>"
            f"<td>{s.input_tokens}/{s.output_tokens}</td><td>${s.cost:.6f}</td><td class=muted>"
            f"{_e(', '.join(s.kinds))}</td></tr>"
            for s in step_tree(rows)
        )
        tree += (
            f"<tr><th>total</th><th>{summary['events']}</th><th>{summary['input_tokens']}/"
            f"{summary['output_tokens']}</th><th>${summary['cost']:.6f}</th><th></th></tr>"
        )
        events = "".join(
            f"<tr class=clickable data-seq='{r['seq']}'><td>{r['seq']}</td><td>{(r['time'] - first) * 1000:.2f}</td>"
            f"<td>{_e(r['step'])}</td><td>{_e(r['kind'])}</td>"
            f"<td>{_e(_summary_text(r['kind'], r['event'].get('payload') or {})[:160])}</td></tr>"
            for r in rows
        )
        error_box = f"<pre class=failed id=error>{_e(summary['error'])}</pre>" if summary["error"] else ""
        related = db.same_trace(execution_id)
        links = "".join(
            f"<li data-related='{_e(r['id'])}'>{'inside this flow: ' if summary['kind'] == 'flow' else ''}"
            f"{'part of flow ' if r['kind'] == 'flow' else ''}<a href='/executions/{_e(r['id'])}'>{_e(r['runnable'])}"
            f" <code>{_e(r['id'])}</code></a> <span class='{_e(r['status'])}'>{_e(r['status'])}</span></li>"
            for r in related
        )
        related_box = f"<h3>in the same trace</h3><ul id=related>{links}</ul>" if links else ""
        drawing = flow_drawing(rows)
        flow_box = (
            f"<h3>flow: the path taken</h3><div class=flow-box>{render_svg(drawing, path_taken(drawing, rows))}</div>"
            if drawing is not None
            else ""
        )
        body = (
            f"<h2>{_e(summary['kind'])} <code>{_e(execution_id)}</code></h2><div class=cards>{cards}</div>"
            f"<div class=grid><div><h3>input</h3><pre id=input>{_e(json.dumps(summary['input'], indent=1, ensure_ascii=False))}</pre></div>"
            f"<div><h3>output</h3><pre id=output>{_e(json.dumps(summary['output'], indent=1, ensure_ascii=False))}</pre>"
            f"{error_box}</div></div>"
            f"{related_box}{flow_box}<h3>timeline</h3><div class=wf id=waterfall>{''.join(bars)}</div>"
            f"<div class=grid><div><h3>steps</h3><table id=steps><thead><tr><th>step</th><th>events</th>"
            f"<th>tokens in/out</th><th>cost</th><th>kinds</th></tr></thead><tbody>{tree}</tbody></table></div>"
            f"<div><h3>event inspector</h3><pre id=inspector class=muted>click an event</pre></div></div>"
            f"<h3>events</h3><table id=events><thead><tr><th>seq</th><th>ms</th><th>step</th><th>kind</th>"
            f"<th>summary</th></tr></thead><tbody>{events}</tbody></table>"
        )
        script = (
            f"const ID={json.dumps(execution_id)};const FIRST={first!r};let last={rows[-1]['seq'] or 0 if rows else 0};"
            f"let status={json.dumps(summary['status'])};const FINISHED={json.dumps(list(FINISHED))};"
            + """
const esc=s=>String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const body=document.querySelector('#events tbody');
body.addEventListener('click',async e=>{const tr=e.target.closest('tr');if(!tr)return;
  const r=await fetch('/api/executions/'+encodeURIComponent(ID)+'/events/'+tr.dataset.seq);
  const ev=await r.json();const box=document.getElementById('inspector');box.classList.remove('muted');
  box.textContent=JSON.stringify(ev,null,2);});
async function follow(){
  if(FINISHED.includes(status))return;
  try{const r=await fetch('/api/executions/'+encodeURIComponent(ID)+'/events?after='+last);const data=await r.json();
    for(const row of data.events){last=Math.max(last,row.seq||0);const tr=document.createElement('tr');
      tr.className='clickable';tr.dataset.seq=row.seq;
      tr.innerHTML='<td>'+row.seq+'</td><td>'+((row.time-FIRST)*1000).toFixed(2)+'</td><td>'+esc(row.step)+
        '</td><td>'+esc(row.kind)+'</td><td>'+esc(row.summary)+'</td>';body.appendChild(tr);}
    const s=data.execution;status=s.status;const st=document.getElementById('status');
    st.innerHTML='<span class="'+esc(s.status)+'">'+esc(s.status)+'</span>';
    document.getElementById('event-count').textContent=s.events;
    if(FINISHED.includes(status)){setTimeout(()=>location.reload(),300);return;}
  }catch(err){}
  setTimeout(follow,400);}
follow();
"""
        )
        return _page(execution_id, body, script)

    async def compare_page(request: Request) -> Response:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        sa, sb = db.execution(a), db.execution(b)
        if sa is None or sb is None:
            return missing(a if sa is None else b)
        result = align(db.events(a), db.events(b))
        first = result["first_divergence"]
        if first is None:
            verdict = "<div id=first-divergence class=completed>no divergence: the two executions did the same, step by step</div>"
        else:
            verdict = (
                f"<div id=first-divergence><b>first divergence at <code id=divergence-step>{_e(first['step'])}</code></b>"
                f" {_e(first['where'])}<div class=grid><pre>{_e(json.dumps(first['expected'], indent=1, ensure_ascii=False, default=str))}</pre>"
                f"<pre>{_e(json.dumps(first['got'], indent=1, ensure_ascii=False, default=str))}</pre></div></div>"
            )
        rows = []
        for step in result["steps"]:
            is_first = first is not None and step["step"] == first["step"]
            attrs = " id=step-first" if is_first else ""
            cls = "" if step["same"] else "differs"
            diff = f"<pre class=diff>{_e(step['diff'])}</pre>" if step["diff"] else ""
            rows.append(
                f"<tr class='{cls}'{attrs} data-step='{_e(step['step'])}'><td>{_e(step['step'])}</td>"
                f"<td><pre>{_e(step['a'])}</pre></td><td><pre>{_e(step['b'])}</pre>{diff}</td></tr>"
            )
        head = "".join(
            f"<div class=card>{label}<b><a href='/executions/{_e(s['id'])}'>{_e(s['id'])}</a></b>"
            f"{_e(s['runnable'])} · <span class='{_e(s['status'])}'>{_e(s['status'])}</span> · "
            f"{s['input_tokens'] + s['output_tokens']} tokens · ${s['cost']:.6f}</div>"
            for label, s in (("A", sa), ("B", sb))
        )
        body = (
            f"<h2>Compare</h2><div class=cards>{head}</div>{verdict}<table id=aligned><thead><tr><th>step</th>"
            f"<th>A</th><th>B</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
        script = "const f=document.getElementById('step-first');if(f)f.scrollIntoView({block:'center'});"
        return _page("compare", body, script)

    async def api_list(request: Request) -> Response:
        rows, cursor = db.page(
            _filters(request),
            limit=min(int(request.query_params.get("limit", PAGE_SIZE)), 500),
            before=request.query_params.get("before") or None,
        )
        return JSONResponse({"executions": rows, "next": cursor})

    async def api_execution(request: Request) -> Response:
        summary = db.execution(request.path_params["execution_id"])
        return JSONResponse(summary) if summary else JSONResponse({"error": "not found"}, status_code=404)

    async def api_events(request: Request) -> Response:
        execution_id = request.path_params["execution_id"]
        summary = db.execution(execution_id)
        if summary is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        after = _number(request.query_params.get("after"), int) or 0
        rows = db.events(execution_id, after=after, limit=2000)
        events = [
            {"seq": r["seq"], "time": r["time"], "step": r["step"], "kind": r["kind"],
             "summary": _summary_text(r["kind"], r["event"].get("payload") or {})[:160]}
            for r in rows
        ]  # fmt: skip
        return JSONResponse({"execution": summary, "events": events})

    async def api_event(request: Request) -> Response:
        execution_id = request.path_params["execution_id"]
        seq = int(request.path_params["seq"])
        rows = db.events(execution_id, after=seq - 1, limit=1)
        if not rows or rows[0]["seq"] != seq:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"step": rows[0]["step"], "cost": rows[0]["cost"], **rows[0]["event"]})

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/executions/{execution_id}", execution_page),
            Route("/compare", compare_page),
            Route("/api/executions", api_list),
            Route("/api/executions/{execution_id}", api_execution),
            Route("/api/executions/{execution_id}/events", api_events),
            Route("/api/executions/{execution_id}/events/{seq:int}", api_event),
        ]
    )
    app.state.db = db
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
